# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Whole checkpoints: a manifest for every checkpoint, and the choice of the checkpoint a run resumes from.

The Trainer writes a checkpoint's files one after another, trainer_state.json last. A run killed in between leaves a
directory that `get_last_checkpoint` would pick and `train(resume_from_checkpoint=...)` would fail on, or worse, load
half. So every checkpoint `CLIPGuidedTrainer` writes gets a manifest (each file's size and SHA-256, written after the
files are on disk and renamed into place), and a run resumes only from a checkpoint that passes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from clipcap.files import atomic_write_text, file_sha256
from modeling_clipcap import pickle_only_weights

logger = logging.getLogger(__name__)

CHECKPOINT_MANIFEST = "checkpoint_manifest.json"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def write_checkpoint_manifest(checkpoint: str | os.PathLike) -> None:
    """Flush every file of `checkpoint` to disk, then record its size and SHA-256 in the manifest."""
    checkpoint = Path(checkpoint)
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != CHECKPOINT_MANIFEST):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(checkpoint).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    atomic_write_text(checkpoint / CHECKPOINT_MANIFEST, json.dumps({"files": files}, indent=1))


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it is whole.

    With a manifest every listed file must be there with its size and hash. Without one (a checkpoint written by the
    plain `Trainer`, or a run killed after its last file and before the manifest) trainer_state.json, the file the
    Trainer writes last, must be there and parse.
    """
    checkpoint = Path(checkpoint)
    manifest = checkpoint / CHECKPOINT_MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError):
            return f"its {CHECKPOINT_MANIFEST} is unreadable"
        for name, expected in files.items():
            path = checkpoint / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
                return f"{name} differs from its manifest (truncated or changed)"
        return None
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "it has no trainer_state.json (the run stopped while writing it)"
    except ValueError:
        return "its trainer_state.json is truncated"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike, move_aside: bool = True) -> str | None:
    """The latest checkpoint in `output_dir` that is whole (`checkpoint_problem`), or None.

    Later checkpoints that are not whole are logged and, with `move_aside`, renamed `incomplete-checkpoint-N` (kept
    for inspection; no resume or rotation looks at them), so the resumed run can write checkpoint-N afresh.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = sorted(
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if path.is_dir() and (match := _CHECKPOINT_NAME.match(path.name))
    )
    for _, path in reversed(candidates):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        message = f"Not resuming from {path}: {problem}"
        if move_aside:
            aside = path.with_name(f"incomplete-{path.name}")
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
            message += f"; moved to {aside}"
        logger.warning(message)
    return None


def checkpoint_to_resume(training_args, allow_pickle: bool = False) -> str | None:
    """The checkpoint a run resumes from: `training_args.resume_from_checkpoint` (which must be whole), else the last
    whole checkpoint in `output_dir` unless `overwrite_output_dir`. An `output_dir` with a trained model and no
    checkpoint is an error (nothing to resume, and training would overwrite the model). The checkpoint's model weights
    must be safetensors unless `allow_pickle`."""
    checkpoint = None
    if training_args.resume_from_checkpoint:
        checkpoint = training_args.resume_from_checkpoint
        if not os.path.isdir(checkpoint):
            raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint directory {checkpoint}")
        if problem := checkpoint_problem(checkpoint):
            raise ValueError(f"cannot resume from {checkpoint}: {problem}")
    elif not training_args.overwrite_output_dir and os.path.isdir(training_args.output_dir):
        with training_args.main_process_first(desc="finding the last whole checkpoint"):
            checkpoint = last_complete_checkpoint(training_args.output_dir, move_aside=training_args.should_save)
        if checkpoint is None and Path(training_args.output_dir, "model.safetensors").exists():
            raise FileExistsError(
                f"{training_args.output_dir} holds a trained model and no checkpoint to resume; "
                "pass --overwrite_output_dir to train again"
            )
    if checkpoint is not None:
        if not allow_pickle and (pickles := pickle_only_weights(checkpoint)):
            raise OSError(
                f"the checkpoint {checkpoint} has its model weights only as a pickle ({', '.join(pickles)}), which "
                "can run code when loaded; pass --allow_pickle if you trust it"
            )
        logger.info("Resuming from %s", checkpoint)
    return checkpoint
