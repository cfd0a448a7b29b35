# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The prepared dataset: a `datasets.DatasetDict` {train, validation} saved with its card, and the contract its
readers rely on.

The contract, kept here and nowhere else: the `image` column (`IMAGE_COLUMN`) holds images, and the `captions` column
(`CAPTION_COLUMN`) holds each row's reference captions as a list of strings (`list[str]`, never a bare string).
`prepare_dataset.py` writes datasets so (`validate_split`, `make_card`, `save_atomically`); `load_prepared_dataset`
checks it on every read (`check_caption_column`) and renames a dataset's own image and caption columns (a script's
`--image_column` / `--caption_column`) to these two names, once, so that the trainer, the collator, the teacher and
the metrics read `image` and `captions` without asking. `drop_unusable_rows` removes and counts the rows that no
reader can use.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from clipcap.files import missing_local_path
from clipcap.images import validate_image, validate_image_bytes
from clipcap.teacher import TeacherIdentity
from processing_clipcap import gpt2_tokenizer

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
CAPTION_COLUMN = "captions"
CARD_METADATA_KEY = "clipcap"
DROP_REASONS = (
    "missing",
    "empty_file",
    "unreadable",
    "not_an_image",
    "truncated",
    "too_small",
    "too_large",
    "no_caption",
)
# Why a sample of the source is in neither split (`clipcap.fiftyone_data.split_samples`): each is counted.
LEFT_OUT_REASONS = {
    "untagged": "tagged neither train nor validation",
    "tagged_both": "tagged both train and validation",
    "over_cap": "beyond --num_train / --num_validation / --max_samples",
}


class PrepareError(Exception):
    """A problem with the input data that the user can fix; reported as one line."""


# ---------------------------------------------------------------------------------------------------------------------
# Reading: load, check, drop what no reader can use
# ---------------------------------------------------------------------------------------------------------------------


def load_dataset_metadata(path: str | os.PathLike) -> dict:
    """The `clipcap` block of a prepared dataset's card: source, caption strategy, drops, teacher (or {})."""
    readme = Path(path) / "README.md"
    if not readme.is_file():
        return {}
    return dict(DatasetCard.load(readme).data.to_dict().get(CARD_METADATA_KEY) or {})


def load_prepared_dataset(
    dataset_dir: str,
    required: dict[str, list[str]],
    image_column: str = IMAGE_COLUMN,
    caption_column: str = CAPTION_COLUMN,
) -> tuple[datasets.DatasetDict, dict]:
    """A DatasetDict saved by `prepare_dataset.py` (a directory) or a Hub dataset id, and its card metadata ({} from
    the Hub), with its `image_column` and `caption_column` renamed to `IMAGE_COLUMN` and `CAPTION_COLUMN`.

    Each split in `required` must exist with the columns listed for it (`IMAGE_COLUMN` and `CAPTION_COLUMN` stand for
    the dataset's own names), and its caption column must hold lists of strings (`check_caption_column`); otherwise
    one clear error that names the dataset's columns."""
    path = Path(dataset_dir)
    if missing_local_path(dataset_dir):
        raise FileNotFoundError(f"no dataset directory {dataset_dir}; make one with prepare_dataset.py")
    if path.exists():
        if not (path / "dataset_dict.json").exists():
            raise FileNotFoundError(f"{dataset_dir} is not a saved DatasetDict; make one with prepare_dataset.py")
        dataset, metadata = datasets.load_from_disk(str(path)), load_dataset_metadata(path)
    else:
        dataset, metadata = datasets.load_dataset(dataset_dir), {}
    own_names = {IMAGE_COLUMN: image_column, CAPTION_COLUMN: caption_column}
    for split, columns in required.items():
        if split not in dataset:
            raise ValueError(f"{dataset_dir} has no {split!r} split (it has {sorted(dataset)})")
        wanted = [own_names.get(column, column) for column in columns]
        if missing := set(wanted) - set(dataset[split].column_names):
            raise ValueError(f"the {split!r} split of {dataset_dir} lacks the columns {sorted(missing)}")
        if caption_column in wanted:
            check_caption_column(dataset[split], caption_column, f"the {split!r} split of {dataset_dir}")
    renames = {own: canonical for canonical, own in own_names.items() if own != canonical}
    if renames:
        renamed = {split: _rename(data, renames, split, dataset_dir) for split, data in dataset.items()}
        dataset = datasets.DatasetDict(renamed)
    return dataset, metadata


def _rename(dataset: datasets.Dataset, renames: dict[str, str], split: str, dataset_dir: str) -> datasets.Dataset:
    present = {own: canonical for own, canonical in renames.items() if own in dataset.column_names}
    if clashes := sorted(canonical for canonical in present.values() if canonical in dataset.column_names):
        raise ValueError(
            f"the {split!r} split of {dataset_dir} already has a column {clashes[0]!r} besides the one given as its "
            f"{'image' if clashes[0] == IMAGE_COLUMN else 'caption'} column: drop or rename it"
        )
    return dataset.rename_columns(present) if present else dataset


def check_caption_column(dataset: datasets.Dataset, caption_column: str, name: str) -> None:
    """The data contract: a caption column holds a list of reference strings per row (`list[str]`), never a bare
    string. `prepare_dataset.py` writes it so; every reader relies on it."""
    feature = dataset.features[caption_column]
    inner = getattr(feature, "feature", None)
    is_list = isinstance(feature, (datasets.List, datasets.LargeList))
    if not (is_list and isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string")):
        raise ValueError(
            f"the column {caption_column!r} of {name} holds {feature}, not lists of captions (list[str]); "
            "prepare_dataset.py writes each row's references as a list"
        )


def image_feature(dataset: datasets.Dataset) -> datasets.Image:
    """The image column's `datasets.Image` feature, or a one-line ValueError when the column holds something else."""
    feature = dataset.features[IMAGE_COLUMN]
    if not isinstance(feature, datasets.Image):
        raise ValueError(f"the column {IMAGE_COLUMN!r} holds {feature}, not images")  # noqa: TRY004 - a data error
    return feature


def drop_unusable_rows(dataset: datasets.Dataset, metadata: dict, name: str) -> tuple[datasets.Dataset, Counter]:
    """The rows one can train on or score, and the others counted by reason: `no_caption` (none, or only empty
    strings), `no_image`, and every image decoded in full (`validate_image_bytes`: `truncated`, `not_an_image`,
    `too_large`, ...) unless this script made the dataset (its card's `metadata` records the drops made then). Only
    the image and caption columns are read; the result is a selection (nothing copied). `name` ("the 'train' split
    of DIR") names the data in the error raised when no row is left."""
    check_images = "dropped" not in metadata
    if check_images:
        image_feature(dataset)
    columns = dataset.select_columns([CAPTION_COLUMN, IMAGE_COLUMN] if check_images else [CAPTION_COLUMN])
    if check_images:
        columns = columns.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))
    drops, keep, index = Counter(), [], 0
    for batch in columns.iter(batch_size=256):
        for i, references in enumerate(batch[CAPTION_COLUMN]):
            reason = "" if any(r and r.strip() for r in references or []) else "no_caption"
            if not reason and check_images:
                image = batch[IMAGE_COLUMN][i]
                data = image and (image.get("bytes") or _read_bytes(image.get("path")))
                reason = validate_image_bytes(data, min_side=1)[1] if data else "no_image"
            if reason:
                drops[reason] += 1
            else:
                keep.append(index + i)
        index += len(batch[CAPTION_COLUMN])
    if not keep:
        raise ValueError(f"{name} has no usable row ({describe_counts(drops) or 'empty'})")
    return (dataset if len(keep) == len(dataset) else dataset.select(keep)), drops


def describe_counts(counts: Counter) -> str:
    """`{"truncated": 1, "no_caption": 2}` -> "no_caption: 2, truncated: 1"."""
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items()))


def _read_bytes(path: str | None) -> bytes | None:
    try:
        return Path(path).read_bytes() if path else None
    except OSError:
        return None


def load_splits(
    dataset_dir: str,
    limits: dict[str, int | None],
    image_column: str = IMAGE_COLUMN,
    caption_column: str = CAPTION_COLUMN,
) -> tuple[datasets.DatasetDict, dict]:
    """The splits named in `limits` of a prepared dataset (each cut to its first N rows when N is given), its image and
    caption columns named `IMAGE_COLUMN` and `CAPTION_COLUMN` (`load_prepared_dataset`), with the unusable rows
    dropped (`drop_unusable_rows`) and the drops logged, and the card's metadata."""
    required = {split: [IMAGE_COLUMN, CAPTION_COLUMN] for split in limits}
    dataset, metadata = load_prepared_dataset(dataset_dir, required, image_column, caption_column)
    splits = {}
    for split, limit in limits.items():
        data = dataset[split]
        if limit is not None:
            data = data.select(range(min(limit, len(data))))
        name = f"the {split!r} split of {dataset_dir}"
        splits[split], drops = drop_unusable_rows(data, metadata, name)
        if drops:
            kept = len(splits[split])
            logger.warning("Dropped %d of %d %s rows (%s)", len(data) - kept, len(data), split, describe_counts(drops))
    return datasets.DatasetDict(splits), metadata


def count_long_captions(dataset: datasets.Dataset, processor) -> int:
    """How many reference captions are longer than the processor's `max_caption_length` (EOS included); they are
    truncated when tokenised, so the model learns their beginning only."""
    captions = [caption for references in dataset[CAPTION_COLUMN][:] for caption in references if caption]
    lengths = map(len, processor.tokenizer(captions, add_special_tokens=False)["input_ids"]) if captions else []
    return sum(length + 1 > processor.max_caption_length for length in lengths)


def add_caption_lengths(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """A `column` with each row's mean reference length in GPT-2 tokens, for `group_by_length` batching (batches of
    similar lengths waste little compute on padding)."""
    if column in dataset.column_names:
        return dataset
    tokenizer = gpt2_tokenizer()
    lengths = []
    for references in dataset[CAPTION_COLUMN][:]:
        ids = tokenizer(references, add_special_tokens=False)["input_ids"]
        lengths.append(round(sum(map(len, ids)) / max(len(ids), 1)) + 1)
    return dataset.add_column(column, lengths)


class _WithImages(Mapping):
    """A `Dataset.map` batch with its image column replaced by `images`; the other columns are read (and formatted)
    only when the function asks for them, as from the batch itself."""

    def __init__(self, batch, images: list):
        self.batch, self.images = batch, images

    def __getitem__(self, key):
        return self.images if key == IMAGE_COLUMN else self.batch[key]

    def __iter__(self):
        return iter(self.batch)

    def __len__(self):
        return len(self.batch)


def map_images(dataset: datasets.Dataset, function, features: datasets.Features | None = None, **map_kwargs):
    """`dataset.map(function, batched=True, ...)` for a `function` that reads each batch's images decoded (PIL) and
    returns new columns, with the images kept as they are stored.

    `Dataset.map` writes a batch's input columns back into its result, so an image column read decoded is encoded
    again: the demo's teacher embedded its 10,000 training images and their captions in 1 min 28 s that way, in
    1 min 03 s without the PNG encoder. Here the map reads the stored bytes and `function` gets them decoded (the
    column's own `datasets.Image` decoding, mode included); the result's image column is the input's."""
    feature = image_feature(dataset)
    stored = datasets.Image(decode=False)

    def with_decoded_images(batch):
        images = [None if image is None else feature.decode_example(image) for image in batch[IMAGE_COLUMN]]
        return function(_WithImages(batch, images))

    if features is not None:
        features = datasets.Features({**features, IMAGE_COLUMN: stored})
    undecoded = dataset.cast_column(IMAGE_COLUMN, stored)
    result = undecoded.map(with_decoded_images, batched=True, features=features, **map_kwargs)
    return result.cast_column(IMAGE_COLUMN, feature)


# ---------------------------------------------------------------------------------------------------------------------
# Writing: validated images, the card, an atomic save
# ---------------------------------------------------------------------------------------------------------------------


def _validate_example(example: dict, min_side: int, max_pixels: int, max_side: int | None) -> dict:
    if not example[CAPTION_COLUMN]:
        return {IMAGE_COLUMN: None, "drop_reason": "no_caption", "conversions": []}
    data, reason, conversions = validate_image(example["filepath"], min_side, max_pixels, max_side)
    return {
        IMAGE_COLUMN: {"bytes": data, "path": None} if data else None,
        "drop_reason": reason,
        "conversions": conversions,
    }


def validate_split(
    dataset: datasets.Dataset,
    split: str,
    min_side: int = 32,
    max_pixels: int = 89_478_485,
    max_side: int | None = None,
    num_proc: int = 1,
) -> tuple[datasets.Dataset, Counter, Counter]:
    """Decode every image of a split (rows of `filepath` and `captions`, as `extract_records` makes them) with
    `validate_image`; returns the kept rows, now with an `image` column, and the drop and conversion counts."""
    checked = dataset.map(
        _validate_example,
        fn_kwargs={"min_side": min_side, "max_pixels": max_pixels, "max_side": max_side},
        num_proc=num_proc if num_proc > 1 and len(dataset) > 1 else None,
        features=datasets.Features(
            {
                **dataset.features,
                IMAGE_COLUMN: datasets.Image(),
                "drop_reason": datasets.Value("string"),
                "conversions": datasets.List(datasets.Value("string")),
            }
        ),
        desc=f"Validating {split} images",
    )
    dropped = Counter(r for r in checked["drop_reason"] if r)
    converted = Counter(c for cs in checked["conversions"] for c in cs)
    kept = checked.filter(lambda reason: not reason, input_columns="drop_reason", desc=f"Dropping bad {split} images")
    return kept.remove_columns(["drop_reason", "conversions"]), dropped, converted


def describe_left_out(left_out: Counter) -> str:
    """'none', or e.g. '6 (tagged neither train nor validation: 6)'."""
    if not sum(left_out.values()):
        return "none"
    reasons = ", ".join(f"{LEFT_OUT_REASONS[reason]}: {count}" for reason, count in left_out.items() if count)
    return f"{sum(left_out.values())} ({reasons})"


def drop_table(dropped: dict[str, Counter], converted: dict[str, Counter]) -> str:
    """A plain-text table of dropped samples (and conversions) by reason and split."""
    splits = list(dropped)
    rows = [("reason", *splits, "total")]
    for reason in DROP_REASONS:
        counts = [dropped[s].get(reason, 0) for s in splits]
        rows.append((reason, *map(str, counts), str(sum(counts))))
    totals = [sum(dropped[s].values()) for s in splits]
    rows.append(("dropped", *map(str, totals), str(sum(totals))))
    for name in sorted({c for s in splits for c in converted[s]}):
        counts = [converted[s].get(name, 0) for s in splits]
        rows.append((f"converted: {name}", *map(str, counts), str(sum(counts))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    )


def make_card(metadata: dict, dataset_dict: datasets.DatasetDict, table: str) -> DatasetCard:
    """The dataset card: `metadata` (source, caption strategy, drops, teacher, command) under the `clipcap` key of
    its YAML header, and a body that says the same for a reader, with the drop `table`."""
    sizes = {split: len(ds) for split, ds in dataset_dict.items()}
    total = sum(sizes.values())
    size_category = "n<1K" if total < 1000 else "1K<n<10K" if total < 10000 else "10K<n<100K"
    data = DatasetCardData(
        task_categories=["image-to-text"],
        size_categories=[size_category],
        tags=["image-captioning", "fiftyone", "clipcap"],
        pretty_name="ClipCap captioning data",
        **{CARD_METADATA_KEY: metadata},
    )
    teacher = metadata.get("teacher")
    left_out = describe_left_out(Counter(metadata.get("left_out") or {}))
    columns = ", ".join(f"`{c}`" for c in dataset_dict["train"].column_names)
    body = f"""
# ClipCap captioning data

Prepared by `prepare_dataset.py` from {metadata["source"]}.

- Splits: {", ".join(f"{split} {n:,}" for split, n in sizes.items())}
- Samples of the source in neither split: {left_out}
- Captions: {metadata["caption_strategy"]}
- Columns: {columns}
- Teacher cache: {teacher_text(teacher)}
- Reproduce: `{metadata["command"]}`

## Dropped images

Every image was decoded in full; these were left out (and these converted to RGB):

```
{table}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def teacher_text(teacher: dict | None) -> str:
    """How a card names the teacher cache of a dataset (`metadata["teacher"]`)."""
    if not teacher:
        return "none"
    return f"unit-norm CLIP embeddings by {TeacherIdentity.from_dict(teacher).describe()}"


def save_atomically(dataset_dict: datasets.DatasetDict, card, output_dir: Path) -> None:
    """Write into a sibling directory, then swap it in, so no half-written dataset is ever left at `output_dir`."""
    partial = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    dataset_dict.save_to_disk(str(partial))
    card.save(partial / "README.md")
    if output_dir.exists():
        old = output_dir.with_name(output_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        output_dir.rename(old)
        partial.rename(output_dir)
        shutil.rmtree(old)
    else:
        partial.rename(output_dir)
