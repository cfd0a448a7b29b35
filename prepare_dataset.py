#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Prepare a captioning dataset: a FiftyOne dataset -> a validated `datasets.DatasetDict` {train, validation}.

    python prepare_dataset.py                                   # the embedded synthetic dataset (offline default)
    python prepare_dataset.py configs/prepare_open_images_home_appliance.yaml   # Open Images V7 from the zoo
    python prepare_dataset.py --dataset_name my_fiftyone_dataset --output_dir data/mine
    python prepare_dataset.py --export_dir export/ --dataset_type FiftyOneImageDetectionDataset

Every source goes through FiftyOne (`clipcap.fiftyone_data`), so one code path serves them all:
1. load the source: the FiftyOne zoo (`--zoo_dataset open-images-v7`, filtered on `--classes`), a FiftyOne dataset by
   name, an export directory in any FiftyOne format, or, when none is given, the embedded synthetic scenes;
2. split: the zoo's splits, else the samples' `train` / `validation` tags, else a seeded random split;
3. captions: from `--caption_field` (a string or a list of strings) when the dataset has it, else made from the
   Detections / Classifications labels with several templates; always stored as a list of strings per image;
4. images: every file is decoded in full; missing, empty, truncated, non-image, too small and too large
   (decompression bomb) files are dropped and counted by reason; the rest become RGB (grayscale, CMYK, transparency,
   16-bit, EXIF orientation), optionally shrunk to `--max_image_side`;
5. optional teacher cache: unit-norm CLIP embeddings of every image and every reference caption;
6. `save_to_disk(--output_dir)` with a dataset card, and optionally `push_to_hub`.

The output is written next to `--output_dir` and moved into place only when complete, so a failed run never leaves a
half-written dataset behind, and an existing one is replaced only with `--overwrite_output_dir`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard
from transformers import HfArgumentParser

from clipcap.cli import ConfigError, parse_config_and_flags
from clipcap.data import (
    CAPTION_COLUMN,
    CARD_METADATA_KEY,
    IMAGE_COLUMN,
    PrepareError,
    describe_left_out,
    drop_table,
    make_card,
    save_atomically,
    teacher_text,
    validate_split,
)
from clipcap.fiftyone_data import SourceArguments, extract_records, load_source
from clipcap.files import directory_size
from clipcap.memory import keep_freed_memory
from clipcap.mongod import QUIET_ENVIRONMENT
from clipcap.teacher import CLIPTeacher, TeacherArguments
from clipcap.teacher_cache import embed_dataset


@dataclass
class PrepareArguments(SourceArguments):
    """The source (`SourceArguments`), then where the prepared dataset goes and how its images are checked."""

    output_dir: str = field(default="data/synthetic", metadata={"help": "Where the DatasetDict is saved."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing dataset there."})
    max_image_side: int | None = field(default=None, metadata={"help": "Shrink larger images to this longest side."})
    min_image_side: int = field(default=32, metadata={"help": "Drop images with a shorter side than this."})
    max_image_pixels: int = field(default=89_478_485, metadata={"help": "Refuse larger images (decompression bombs)."})
    allow_pickle: bool = field(
        default=False, metadata={"help": "Also load a pickled teacher checkpoint (.pt/.bin), which can run code."}
    )
    teacher_batch_size: int = field(default=64, metadata={"help": "Images per teacher forward pass (the cache)."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push to this Hub dataset repo."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_image_side is not None and self.max_image_side < 0:
            raise PrepareError(f"--max_image_side must be >= 0, got {self.max_image_side}")


def parse_args(argv: list[str] | None = None) -> tuple[PrepareArguments, TeacherArguments]:
    """Flags, or a .yaml/.json file of the same names, optionally followed by flags that override it."""
    parser = HfArgumentParser((PrepareArguments, TeacherArguments), description=__doc__.splitlines()[0])
    try:
        return tuple(parse_config_and_flags(parser, argv))
    except ConfigError as error:
        raise PrepareError(str(error)) from None


def prepare(args: PrepareArguments, teacher_args: TeacherArguments | None = None) -> tuple[datasets.DatasetDict, dict]:
    """Run every step; returns the DatasetDict saved at `args.output_dir` and its card metadata."""
    teacher_args = teacher_args or TeacherArguments()
    if bool(teacher_args.clip_model) != bool(teacher_args.clip_pretrained):
        raise PrepareError("the teacher cache needs both --clip_model and --clip_pretrained")
    output_dir = Path(args.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not args.overwrite_output_dir:
        raise PrepareError(f"{output_dir} already exists and is not empty; pass --overwrite_output_dir to replace it")
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    datasets.utils.logging.set_verbosity_warning()
    if not args.progress:
        datasets.disable_progress_bars()

    # 1-2. Source and splits; every sample of the source in neither split is counted with its reason.
    views, source, left_out = load_source(args)
    sizes = ", ".join(f"{split} {len(view)}" for split, view in views.items())
    print(f"Splits: {sizes}; samples of the source in neither split: {describe_left_out(left_out)}")

    # 3. Captions and labels.
    columns, strategy = {}, None
    for split, view in views.items():
        columns[split], strategy = extract_records(view, args)

    # 4. Images: every file decoded in full, bad ones dropped and counted.
    dataset_dict, dropped, converted = datasets.DatasetDict(), {}, {}
    for split, data in columns.items():
        dataset = datasets.Dataset.from_dict(data)
        start = time.perf_counter()
        kept, dropped[split], converted[split] = validate_split(
            dataset, split, args.min_image_side, args.max_image_pixels, args.max_image_side, args.num_proc
        )
        seconds = time.perf_counter() - start
        print(f"{split}: {len(kept)} of {len(dataset)} images kept ({len(dataset) / seconds:.0f} images/s checked)")
        first = [IMAGE_COLUMN, CAPTION_COLUMN]
        dataset_dict[split] = kept.select_columns(first + [c for c in kept.column_names if c not in first])
    table = drop_table(dropped, converted)
    if len(dataset_dict["train"]) == 0:
        raise PrepareError("no training image survived validation:\n" + table)
    print(table)

    # 5. Teacher cache.
    teacher = None
    if teacher_args.clip_model:
        try:
            clip = CLIPTeacher.from_arguments(teacher_args, allow_pickle=args.allow_pickle)
        except (OSError, ValueError) as error:
            raise PrepareError(str(error)) from None
        for split in dataset_dict:
            dataset_dict[split] = embed_dataset(dataset_dict[split], clip, batch_size=args.teacher_batch_size)
        teacher = clip.identity.to_dict()

    # 6. Save, card, push.
    metadata = {
        "source": source,
        "left_out": dict(left_out),
        "caption_strategy": strategy,
        "dropped": {split: dict(counts) for split, counts in dropped.items()},
        "converted": {split: dict(counts) for split, counts in converted.items()},
        "teacher": teacher,
        "seed": args.seed,
        "command": "python prepare_dataset.py " + " ".join(sys.argv[1:]),
    }
    description = (
        f"Prepared by prepare_dataset.py from {source}. Samples of the source in neither split: "
        f"{describe_left_out(left_out)}. Captions: {strategy}. "
        f"Teacher cache: {teacher_text(teacher)}.\n{table}"
    )
    for split in dataset_dict:
        dataset_dict[split].info.description = description
    card = make_card(metadata, dataset_dict, table)
    save_atomically(dataset_dict, card, output_dir)
    print(f"Saved to {output_dir} ({directory_size(output_dir) / 2**20:.1f} MiB)")
    if args.push_to_hub:
        dataset_dict.push_to_hub(args.push_to_hub)
        hub_card = DatasetCard.load(args.push_to_hub, repo_type="dataset")
        hub_card.data[CARD_METADATA_KEY] = metadata
        hub_card.text = card.text
        hub_card.push_to_hub(args.push_to_hub, repo_type="dataset")
    return datasets.load_from_disk(str(output_dir)), metadata


def main(argv: list[str] | None = None) -> int:
    try:
        prepare(*parse_args(argv))
    except PrepareError as error:
        print(f"prepare_dataset.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
