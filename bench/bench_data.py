"""Speed of the data step: synthetic generation, image validation with 1 and 2 processes, the default dataset's size.

    python bench/bench_data.py [--repeats 3] [--num_train 2000] [--num_validation 200]

Measures, on a private MongoDB (nothing touches your FiftyOne database):
  * synthetic generation: scene sampling + rendering at 128 px, in memory and with the PNG written (images/s);
  * with `num_proc` 1 and 2, side by side: generating the default 2,000 + 200 scenes as PNG files; validating them
    (full decode, checks, bytes); the whole default `python prepare_dataset.py` run (FiftyOne dataset included);
  * validating 1024 x 768 JPEG photos (scikit-image's sample photos, resized), with `num_proc` 1 and 2;
  * the size on disk of the default dataset.
Rates are medians over `--repeats` runs; the 1- and 2-process runs alternate, after a warm-up run of each. Prints a
table and writes bench/results/data.json.
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import median_seconds  # noqa: E402 - bench/ is the script directory

from clipcap.mongod import fiftyone_database  # noqa: E402 - after the sys.path line


def side_by_side(function, count: int, repeats: int) -> dict[int, tuple[float, list[float]]]:
    """Median items/s of `function(num_proc)` for num_proc 1 and 2, alternated after one warm-up run of each, so that
    drift on a noisy machine hits both alike."""
    for num_proc in (1, 2):
        function(num_proc)
    rates = {1: [], 2: []}
    for _ in range(repeats):
        for num_proc in (1, 2):
            start = time.perf_counter()
            function(num_proc)
            rates[num_proc].append(count / (time.perf_counter() - start))
    return {k: (statistics.median(v), v) for k, v in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_train", type=int, default=2000)
    parser.add_argument("--num_validation", type=int, default=200)
    parser.add_argument("--render_count", type=int, default=300)
    parser.add_argument("--photo_count", type=int, default=1200)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "data.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, fiftyone_database(Path(tmp) / "db"):
        import datasets

        import prepare_dataset
        from clipcap import synthetic
        from clipcap.data import validate_split
        from clipcap.files import directory_size

        datasets.disable_progress_bars()
        tmp = Path(tmp)
        n = args.render_count

        def render_only():
            for i in range(n):
                synthetic.render_scene(synthetic.make_example(0, "train", i)[0], 128)

        render_seconds, render_times = median_seconds(render_only, args.repeats)
        render_rate, render_rates = n / render_seconds, [n / t for t in render_times]
        total = args.num_train + args.num_validation
        full = {}
        generation = side_by_side(
            lambda num_proc: synthetic.render_examples(
                tmp / "images", args.num_train, args.num_validation, num_proc=num_proc, progress=False
            ),
            total,
            args.repeats,
        )
        rendered = synthetic.render_examples(tmp / "images", args.num_train, args.num_validation, progress=False)
        table = datasets.Dataset.from_dict(
            {"filepath": [str(r[1]) for r in rendered], "captions": [r[3] for r in rendered]}
        )
        validation = side_by_side(
            lambda num_proc: validate_split(table, "bench", num_proc=num_proc),
            total,
            args.repeats,
        )
        photos = _photo_corpus(tmp / "photos", args.photo_count)
        photo_table = datasets.Dataset.from_dict({"filepath": photos, "captions": [["a photo"]] * len(photos)})
        photo_validation = side_by_side(
            lambda num_proc: validate_split(photo_table, "photos", num_proc=num_proc),
            len(photos),
            args.repeats,
        )
        walls = {1: [], 2: []}
        for _ in range(args.repeats):
            for num_proc in (1, 2):  # alternated, so drift on a noisy machine hits both alike
                output_dir = tmp / f"default-{num_proc}"
                start = time.perf_counter()
                prepare_dataset.prepare(
                    prepare_dataset.PrepareArguments(
                        output_dir=str(output_dir),
                        overwrite_output_dir=True,
                        num_train=args.num_train,
                        num_validation=args.num_validation,
                        synthetic_image_dir=str(tmp / "default_images"),
                        num_proc=num_proc,
                        progress=False,
                    )
                )
                walls[num_proc].append(time.perf_counter() - start)
        for num_proc in (1, 2):
            full[num_proc] = (total / statistics.median(walls[num_proc]), [total / w for w in walls[num_proc]])
        size = directory_size(tmp / "default-1")
        source_size = sum(p.stat().st_size for p in (tmp / "default_images").rglob("*.png"))

    results = {
        "images": total,
        "synthetic_render_in_memory_images_per_s": render_rate,
        **{f"synthetic_generation_png_images_per_s_num_proc_{k}": v[0] for k, v in generation.items()},
        **{f"validation_images_per_s_num_proc_{k}": v[0] for k, v in validation.items()},
        **{f"photo_validation_images_per_s_num_proc_{k}": v[0] for k, v in photo_validation.items()},
        **{f"prepare_dataset_images_per_s_num_proc_{k}": v[0] for k, v in full.items()},
        "prepare_dataset_wall_s": {k: statistics.median(v) for k, v in walls.items()},
        "default_dataset_bytes_on_disk": size,
        "default_source_png_bytes": source_size,
        "raw_rates": {
            "render": render_rates,
            "generation": {k: v[1] for k, v in generation.items()},
            "validation": {k: v[1] for k, v in validation.items()},
            "photo_validation": {k: v[1] for k, v in photo_validation.items()},
            "prepare": {k: v[1] for k, v in full.items()},
        },
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "cpus": _cpus()},
        "settings": vars(args),
    }
    rows = [
        ("synthetic render, 128 px, in memory", render_rate, None),
        ("synthetic generation (render + PNG file)", generation[1][0], generation[2][0]),
        ("image validation (decode, checks, bytes)", validation[1][0], validation[2][0]),
        ("image validation, 1024 x 768 JPEG photos", photo_validation[1][0], photo_validation[2][0]),
        ("python prepare_dataset.py (default, whole run)", full[1][0], full[2][0]),
    ]
    print(f"{'images/s, median of ' + str(args.repeats):50s} {'num_proc 1':>10s} {'num_proc 2':>10s} {'ratio':>6s}")
    for name, one, two in rows:
        print(f"{name:50s} {one:10.0f} " + (f"{two:10.0f} {two / one:6.2f}" if two else ""))
    print(
        f"prepare_dataset.py wall, s: {statistics.median(walls[1]):.1f} (1 proc), "
        f"{statistics.median(walls[2]):.1f} (2)"
    )
    print(f"default dataset on disk: {size / 2**20:.1f} MiB (the rendered PNGs: {source_size / 2**20:.1f} MiB)")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))


def _photo_corpus(root: Path, count: int) -> list[str]:
    """`count` JPEG files at 1024 x 768 made from the real photos that ship with scikit-image."""
    import skimage
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "horse.png"]
    sources = [Image.open(data / name).convert("RGB").resize((1024, 768)) for name in names]
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(str(root / f"{i:05d}.jpg"))
        sources[i % len(sources)].save(paths[-1], quality=80 + i % 16)
    return paths


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
