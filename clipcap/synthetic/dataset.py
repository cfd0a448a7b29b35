# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The synthetic dataset on disk: every example of the train and validation splits rendered to a PNG file."""

from __future__ import annotations

from pathlib import Path

from .rendering import render_scene
from .sampling import make_example
from .scene import Scene


def _render_to_file(job: tuple) -> tuple[Scene, list[str]]:
    seed, split, index, size, path = job
    scene, captions = make_example(seed, split, index)
    render_scene(scene, size).save(path)
    return scene, captions


def render_examples(
    image_dir: str | Path,
    num_train: int,
    num_validation: int,
    seed: int = 0,
    image_size: int = 128,
    num_proc: int = 1,
    progress: bool = True,
) -> list[tuple[str, Path, Scene, list[str]]]:
    """Render every scene to `image_dir/{split}/{index:06d}.png`; returns (split, path, scene, captions) in order.

    With `num_proc` > 1 the rendering and PNG encoding run in forked worker processes (the output is the same).
    """
    from tqdm.auto import tqdm

    image_dir = Path(image_dir).resolve()
    jobs = []
    for split, count in (("train", num_train), ("validation", num_validation)):
        (image_dir / split).mkdir(parents=True, exist_ok=True)
        jobs += [(seed, split, i, image_size, image_dir / split / f"{i:06d}.png") for i in range(count)]
    bar = {"total": len(jobs), "desc": "Rendering synthetic scenes", "disable": not progress}
    if num_proc > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(tqdm(pool.map(_render_to_file, jobs, chunksize=32), **bar))
    else:
        results = [_render_to_file(job) for job in tqdm(jobs, **bar)]
    return [(job[1], job[4], scene, captions) for job, (scene, captions) in zip(jobs, results)]
