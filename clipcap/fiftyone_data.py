# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""FiftyOne <-> datasets: where the captioning data comes from, and where evaluated captions go back to.

Every source goes through FiftyOne, so one code path serves them all: the FiftyOne zoo (`zoo_dataset`, e.g.
open-images-v7 filtered on `classes`), a FiftyOne dataset by name, an export directory in any FiftyOne format, or,
when none is given, the embedded synthetic scenes (`clipcap.synthetic`). `load_source` gives the train and
validation views (the zoo's splits, else the samples' `train` / `validation` tags, else a seeded random split);
`extract_records` turns a view into columns: file paths, ids, labels, boxes, and reference captions from
`caption_field` or made from the Detections / Classifications labels with several templates. `write_captions` puts a
model's captions and scores back into a FiftyOne dataset. `fiftyone` is imported inside the functions that use it:
it reads `FIFTYONE_DATABASE_URI` when imported, which `clipcap.mongod` may set first.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from clipcap import synthetic
from clipcap.data import CAPTION_COLUMN, PrepareError
from clipcap.files import cache_dir

# Classes of the Open Images V7 "Home appliance" subtree used by default (the zoo keeps images with any of them).
HOME_APPLIANCE_CLASSES = [
    "Home appliance",
    "Coffeemaker",
    "Dishwasher",
    "Humidifier",
    "Kettle",
    "Mechanical fan",
    "Microwave oven",
    "Oven",
    "Refrigerator",
    "Toaster",
    "Washing machine",
]
LABEL_CAPTION_TEMPLATES = ("{}", "a photo of {}", "a picture of {}", "an image showing {}")
VALIDATION_TAGS = ("validation", "val", "valid")


@dataclass
class SourceArguments:
    """Which FiftyOne data to read, how to split it, and where its captions come from."""

    zoo_dataset: str | None = field(default=None, metadata={"help": "A FiftyOne zoo dataset, e.g. open-images-v7."})
    classes: list[str] = field(
        default_factory=lambda: list(HOME_APPLIANCE_CLASSES),
        metadata={"help": "Zoo filter: samples with at least one of these classes."},
    )
    label_types: list[str] = field(default_factory=lambda: ["detections", "classifications"])
    dataset_name: str | None = field(default=None, metadata={"help": "An existing FiftyOne dataset."})
    export_dir: str | None = field(
        default=None, metadata={"help": "A FiftyOne export: a directory in a FiftyOne-supported format."}
    )
    dataset_type: str | None = field(
        default=None,
        metadata={"help": "Its fiftyone.types name, e.g. FiftyOneImageDetectionDataset, COCODetectionDataset."},
    )
    num_train: int | None = field(default=None, metadata={"help": "Default: 10000 (zoo), 2000 (synthetic), all."})
    num_validation: int | None = field(
        default=None, metadata={"help": "Default: 100 (zoo), 200 (synthetic); for an untagged dataset, a tenth."}
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "At most this many samples per split, taken before any image is rendered or downloaded."},
    )
    caption_field: str = field(default="captions", metadata={"help": "Sample field with reference caption(s)."})
    label_field: str | None = field(
        default=None, metadata={"help": "Labels to caption from when there is no caption field (default: detected)."}
    )
    generic_labels: list[str] = field(
        default_factory=lambda: ["Home appliance"],
        metadata={"help": "Labels left out of made captions when a more specific label is present."},
    )
    synthetic_image_size: int = field(default=128, metadata={"help": "Side of the rendered synthetic images."})
    synthetic_image_dir: str | None = field(
        default=None,
        metadata={"help": "Where synthetic PNGs go (default: synthetic/ in $CLIPCAP_CACHE, else ~/.cache/clipcap)."},
    )
    num_proc: int = field(default=1, metadata={"help": "Processes for synthetic rendering and image validation."})
    seed: int = field(default=0)
    progress: bool = field(default=True)

    @property
    def source(self) -> str:
        return (
            "zoo" if self.zoo_dataset else "name" if self.dataset_name else "dir" if self.export_dir else "synthetic"
        )

    def __post_init__(self):
        given = [n for n in ("zoo_dataset", "dataset_name", "export_dir") if getattr(self, n)]
        if len(given) > 1:
            raise PrepareError(f"give one source, not {' and '.join('--' + n for n in given)}")
        for name in ("num_train", "num_validation", "max_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise PrepareError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.num_proc < 1:
            raise PrepareError(f"--num_proc must be >= 1, got {self.num_proc}")


# ---------------------------------------------------------------------------------------------------------------------
# Captions from labels
# ---------------------------------------------------------------------------------------------------------------------

_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice", "knife": "knives",
    "shelf": "shelves", "leaf": "leaves", "foot": "feet", "tooth": "teeth", "goose": "geese",
    "fish": "fish", "sheep": "sheep", "deer": "deer", "glasses": "glasses", "scissors": "scissors",
}  # fmt: skip


def label_noun(label: str) -> str:
    """An Open Images style class name as a noun: "Microwave oven" -> "microwave oven" (acronyms such as TV stay)."""
    return " ".join(w if (w.isupper() and len(w) > 1) else w.lower() for w in label.replace("_", " ").split())


def pluralize(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def counted(noun: str, count: int) -> str:
    """ "a toaster", "an oven", "two microwave ovens", "12 chairs"."""
    if count == 1:
        article = "an" if noun[0] in "aeiou" and not noun.startswith(("uni", "use", "eu", "one")) else "a"
        return f"{article} {noun}"
    number = _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else str(count)
    return f"{number} {pluralize(noun)}"


def captions_from_labels(labels: list[str], counts: bool = True, generic_labels=("Home appliance",)) -> list[str]:
    """Reference captions made from a sample's labels, one per template, deterministic.

    Labels are listed in order of first appearance; with `counts` (detections) each is counted, with plural.
    A generic label (e.g. "Home appliance") is left out when a more specific label is present.
    """
    specific = [label for label in labels if label not in generic_labels]
    labels = specific or labels
    tally = Counter(labels)
    nouns = [counted(label_noun(label), tally[label] if counts else 1) for label in dict.fromkeys(labels)]
    if not nouns:
        return []
    listed = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
    return [template.format(listed) for template in LABEL_CAPTION_TEMPLATES]


# ---------------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------------


def _default_synthetic_dir(args: SourceArguments) -> Path:
    return cache_dir() / "synthetic" / f"seed{args.seed}-{args.synthetic_image_size}px"


def split_size(args: SourceArguments, split: str, default: int | None) -> int | None:
    """How many samples `split` may have: `num_<split>` (else `default`), capped by `max_samples`; None: all."""
    count = getattr(args, f"num_{split}")
    count = default if count is None else count
    if args.max_samples is not None:
        count = args.max_samples if count is None else min(count, args.max_samples)
    return count


def load_source(args: SourceArguments) -> tuple[dict, str, Counter]:
    """The source as {split: FiftyOne view}, a one-line description of it, and how many of its samples are in
    neither split, by reason (`LEFT_OUT_REASONS`). Split sizes are capped before any image is made or fetched."""
    _check_database()
    if args.source == "synthetic":
        return _synthetic_source(args)
    if args.source == "zoo":
        return _zoo_source(args)
    dataset, description = _named_dataset(args) if args.source == "name" else _exported_dataset(args)
    views, left_out = split_samples(dataset, args)
    return views, description, left_out


def _check_database() -> None:
    try:
        import fiftyone as fo

        fo.list_datasets()  # the first database access: starts FiftyOne's own mongod unless a URI is set
    except Exception as error:  # noqa: BLE001 - no database is one line, not a traceback
        raise PrepareError(
            f"FiftyOne cannot reach its database ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            "install the local-db extra, or run `python -m clipcap.mongod` and export the FIFTYONE_DATABASE_URI it "
            "prints"
        ) from None


def _synthetic_source(args: SourceArguments) -> tuple[dict, str, Counter]:
    num_train, num_validation = split_size(args, "train", 2000), split_size(args, "validation", 200)
    image_dir = Path(args.synthetic_image_dir) if args.synthetic_image_dir else _default_synthetic_dir(args)
    start = time.perf_counter()
    dataset = build_fiftyone_dataset(
        f"clipcap-synthetic-seed{args.seed}",
        image_dir,
        num_train=num_train,
        num_validation=num_validation,
        seed=args.seed,
        image_size=args.synthetic_image_size,
        progress=args.progress,
        num_proc=args.num_proc,
    )
    seconds = time.perf_counter() - start
    print(f"Built the synthetic FiftyOne dataset ({len(dataset)} scenes) in {seconds:.1f} s")
    description = (
        f"the embedded synthetic home-appliance scenes (clipcap/synthetic; seed {args.seed}, "
        f"{args.synthetic_image_size} px, {num_train} train / {num_validation} validation)"
    )
    views = {"train": dataset.match_tags("train"), "validation": dataset.match_tags("validation")}
    return views, description, Counter()


def _zoo_source(args: SourceArguments) -> tuple[dict, str, Counter]:
    import fiftyone.zoo as foz

    splits = {}
    for split, default in (("train", 10000), ("validation", 100)):
        count = split_size(args, split, default)
        try:
            splits[split] = foz.load_zoo_dataset(
                args.zoo_dataset,
                split=split,
                label_types=args.label_types,
                classes=args.classes,
                max_samples=count,
                shuffle=True,
                seed=args.seed,
                dataset_name=f"{args.zoo_dataset}-{split}-{count}-seed{args.seed}",
            ).view()
        except Exception as error:  # noqa: BLE001 - any download failure becomes one line
            reason = (str(error).splitlines() or [""])[0]
            reason = reason if len(reason) <= 100 else reason[:100] + "..."
            raise PrepareError(
                f"could not load '{args.zoo_dataset}' ({split}) from the FiftyOne zoo ({type(error).__name__}: "
                f"{reason}). Offline? Use a local FiftyOne dataset (--dataset_name NAME), an export directory "
                "(--export_dir DIR --dataset_type TYPE), or no source for the embedded synthetic dataset"
            ) from None
    classes = ", ".join(args.classes)
    return splits, f"FiftyOne zoo '{args.zoo_dataset}', classes: {classes}", Counter()


def _named_dataset(args: SourceArguments):
    import fiftyone as fo

    if not fo.dataset_exists(args.dataset_name):
        known = ", ".join(fo.list_datasets()[:10]) or "none"
        raise PrepareError(f"no FiftyOne dataset named '{args.dataset_name}' (known: {known})")
    return fo.load_dataset(args.dataset_name), f"FiftyOne dataset '{args.dataset_name}'"


def _exported_dataset(args: SourceArguments):
    import fiftyone as fo

    path = Path(args.export_dir)
    if not path.is_dir():
        raise PrepareError(f"--export_dir {args.export_dir} is not a directory")
    type_name = args.dataset_type or "ImageDirectory"
    dataset_type = getattr(fo.types, type_name, None)
    if dataset_type is None or not isinstance(dataset_type, type) or not issubclass(dataset_type, fo.types.Dataset):
        raise PrepareError(f"--dataset_type {type_name} is not a fiftyone.types dataset type")
    try:
        dataset = fo.Dataset.from_dir(dataset_dir=str(path), dataset_type=dataset_type)
    except Exception as error:  # noqa: BLE001 - a malformed export becomes one line
        raise PrepareError(f"could not read {path} as {type_name}: {type(error).__name__}: {error}") from None
    return dataset, f"the {type_name} export in {path}"


def split_samples(dataset, args: SourceArguments) -> tuple[dict, Counter]:
    """Train / validation views, and the samples in neither, counted by reason (`LEFT_OUT_REASONS`).

    By sample tags when the dataset has both a `train` and a validation tag: a sample with neither tag, or with both
    (it would be trained and validated on), is left out. Else a seeded random split of all samples. `num_train` /
    `num_validation` / `max_samples` cap each split (`split_size`); in a random split the validation size defaults
    to a tenth.
    """
    left_out = Counter()
    tags = set(dataset.distinct("tags"))
    validation_tags = [t for t in VALIDATION_TAGS if t in tags]
    if "train" in tags and validation_tags:
        train = dataset.match_tags("train").match_tags(validation_tags, bool=False)
        validation = dataset.match_tags(validation_tags).match_tags("train", bool=False)
        left_out["tagged_both"] = len(dataset.match_tags("train").match_tags(validation_tags))
        left_out["untagged"] = len(dataset.match_tags(["train", *validation_tags], bool=False))
        views = {"train": train, "validation": validation}
        for split, view in views.items():
            count = split_size(args, split, None)
            if count is not None and count < len(view):
                left_out["over_cap"] += len(view) - count
                views[split] = view.limit(count)
        return views, +left_out
    ids = dataset.values("id")
    random.Random(args.seed).shuffle(ids)
    num_validation = split_size(args, "validation", max(1, len(ids) // 10))
    if num_validation >= len(ids):
        raise PrepareError(f"the dataset has {len(ids)} samples, too few for {num_validation} validation samples")
    validation, train = ids[:num_validation], ids[num_validation:]
    num_train = split_size(args, "train", None)
    if num_train is not None and num_train < len(train):
        left_out["over_cap"] = len(train) - num_train
        train = train[:num_train]
    return {"train": dataset.select(train), "validation": dataset.select(validation)}, left_out


def _label_fields(view, args: SourceArguments) -> list[tuple[str, str]]:
    """(field, kind) of the labels to caption from, in order of preference: `--label_field`; else the first
    Detections field, then the first Classifications / Classification field (Open Images' `negative_labels`
    skipped)."""
    import fiftyone as fo

    schema = view.get_field_schema()
    kinds = {fo.Detections: "detections", fo.Classifications: "classifications", fo.Classification: "classification"}

    def kind_of(name):
        document_type = getattr(schema.get(name), "document_type", None)
        return next((k for t, k in kinds.items() if document_type is t), None)

    if args.label_field:
        if args.label_field not in schema or kind_of(args.label_field) is None:
            raise PrepareError(f"--label_field {args.label_field} is not a Detections/Classification(s) field")
        return [(args.label_field, kind_of(args.label_field))]
    candidates = [(name, kind_of(name)) for name in schema if kind_of(name) and not name.startswith("negative")]
    detections = [c for c in candidates if c[1] == "detections"][:1]
    classifications = [c for c in candidates if c[1] != "detections"][:1]
    return detections + classifications


def _field_labels(view, name: str, kind: str) -> tuple[list[list[str]], list[list[list[float]]]]:
    """Per-sample label names (one per detection or classification) and detection boxes of one label field."""
    if kind == "detections":
        labels = [list(x or []) for x in view.values(f"{name}.detections.label")]
        boxes = [[list(b) for b in (x or [])] for x in view.values(f"{name}.detections.bounding_box")]
        return labels, boxes
    if kind == "classifications":
        labels = [list(x or []) for x in view.values(f"{name}.classifications.label")]
    else:
        labels = [[x] if x else [] for x in view.values(f"{name}.label")]
    return labels, [[] for _ in labels]


def _no_captions_message(schema: dict, caption_field: str) -> str:
    """What to do about a dataset with no caption field and no labels: name its text fields that --caption_field
    could read, else say how to give it captions or labels (an ImageDirectory export has neither)."""
    import fiftyone as fo

    def is_text(value) -> bool:
        return isinstance(value, fo.StringField) or (
            isinstance(value, fo.ListField) and isinstance(value.field, fo.StringField)
        )

    text_fields = [name for name, value in schema.items() if is_text(value) and name not in ("filepath", "tags")]
    message = f"the dataset has no '{caption_field}' caption field and no Detections/Classifications labels"
    if text_fields:
        return f"{message}; if one of its text fields holds captions, pass it: --caption_field {text_fields[0]}"
    return (
        f"{message}: its samples have images only, and no flag can make captions from that. Give them captions or "
        "labels in FiftyOne (e.g. from a caption file: dataset.set_values('captions', [...]), or Detections / "
        "Classifications) and pass --dataset_name NAME, or export them in a labelled format "
        "(FiftyOneImageDetectionDataset, FiftyOneImageClassificationDataset, COCODetectionDataset, ...)"
    )


def extract_records(view, args: SourceArguments) -> tuple[dict, str]:
    """Column-wise records of a FiftyOne view (filepath, sample id, captions, labels, boxes, and every dict field as
    JSON, such as a synthetic scene's description) and the caption strategy used. Each sample's labels come from the
    first preferred label field that has any for it."""
    import fiftyone as fo

    schema = view.get_field_schema()
    columns = {"filepath": view.values("filepath"), "sample_id": [str(i) for i in view.values("id")]}
    fields = _label_fields(view, args)
    size = len(columns["filepath"])
    labels, boxes, counted_labels = [[] for _ in range(size)], [[] for _ in range(size)], [False] * size
    for name, kind in reversed(fields):  # the preferred field is applied last, wherever it has labels
        field_labels, field_boxes = _field_labels(view, name, kind)
        for i in range(size):
            if field_labels[i]:
                labels[i], boxes[i], counted_labels[i] = field_labels[i], field_boxes[i], kind == "detections"
    columns["labels"], columns["boxes"] = labels, boxes

    if args.caption_field in schema:
        captions = []
        for value in view.values(args.caption_field):
            values = value if isinstance(value, (list, tuple)) else [value]
            captions.append([c.strip() for c in values if isinstance(c, str) and c.strip()])
        strategy = f"reference captions from the '{args.caption_field}' field"
    elif fields:
        captions = [
            captions_from_labels(x, counts=c, generic_labels=args.generic_labels)
            for x, c in zip(labels, counted_labels)
        ]
        sources = ", else ".join(
            f"'{name}' ({kind}{', counted' if kind == 'detections' else ''})" for name, kind in fields
        )
        templates = " | ".join(LABEL_CAPTION_TEMPLATES)
        strategy = f"made from the labels of {sources}, one caption per template: {templates}"
    else:
        raise PrepareError(_no_captions_message(schema, args.caption_field))
    columns[CAPTION_COLUMN] = captions
    for name, value in schema.items():  # dict fields (a synthetic scene's description) as JSON text
        if isinstance(value, fo.DictField) and name not in columns:
            columns[name] = [json.dumps(v, sort_keys=True) for v in view.values(name)]
    return columns, strategy


# ---------------------------------------------------------------------------------------------------------------------
# Write-back
# ---------------------------------------------------------------------------------------------------------------------


def write_captions(
    name: str, prefix: str, split_data: datasets.Dataset, captions: list[str], references: list, per_image: dict
) -> str:
    """Write each image's caption and scores into the FiftyOne dataset `name` (by `sample_id` when the split has
    FiftyOne ids that the dataset holds, else by file path); make a persistent dataset of the images if there is none.
    Returns what was done, in one line."""
    import fiftyone as fo  # imported when used: it reads FIFTYONE_DATABASE_URI at import time

    fields = {f"{prefix}_caption": captions, **{f"{prefix}_{key}": values for key, values in per_image.items()}}
    columns = split_data.column_names
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        ids = split_data["sample_id"][:] if "sample_id" in columns else None
        if ids is not None and set(ids) <= set(dataset.values("id")):
            key_field, keys = "id", ids
        elif "filepath" in columns:
            key_field, keys = "filepath", [os.path.abspath(path) for path in split_data["filepath"][:]]
            if missing := set(keys) - set(dataset.values("filepath")):
                raise ValueError(f"{len(missing)} evaluated images are not in the FiftyOne dataset '{name}'")
        else:
            raise ValueError(f"the split has neither sample_id nor filepath to find its images in '{name}'")
        for field_name, values in fields.items():
            dataset.set_values(field_name, dict(zip(keys, values, strict=True)), key_field=key_field)
        return f"wrote {len(fields)} fields of {len(keys)} samples into the FiftyOne dataset '{name}'"
    if "filepath" not in columns:
        raise ValueError(f"no FiftyOne dataset '{name}', and the split has no filepath column to make one from")
    paths = [os.path.abspath(path) for path in split_data["filepath"][:]]
    if missing := [path for path in paths if not os.path.isfile(path)]:
        raise FileNotFoundError(f"{len(missing)} image files of the split are gone (e.g. {missing[0]})")
    dataset = fo.Dataset(name, persistent=True)
    samples = [fo.Sample(filepath=path, references=refs) for path, refs in zip(paths, references, strict=True)]
    dataset.add_samples(samples, progress=False)
    for field_name, values in fields.items():
        dataset.set_values(field_name, values)
    return f"made the persistent FiftyOne dataset '{name}' ({len(paths)} samples) with {len(fields)} fields"


# ---------------------------------------------------------------------------------------------------------------------
# The synthetic scenes as a FiftyOne dataset
# ---------------------------------------------------------------------------------------------------------------------


def build_fiftyone_dataset(
    name: str,
    image_dir: str | Path,
    num_train: int = 2000,
    num_validation: int = 200,
    seed: int = 0,
    image_size: int = 128,
    overwrite: bool = True,
    progress: bool = True,
    num_proc: int = 1,
):
    """Render the synthetic scenes into `image_dir` and return a FiftyOne dataset of them.

    Each sample is tagged with its split and has `ground_truth` (`Detections` with the Open Images class names and a
    `colour` attribute), `captions` (the reference captions) and the scene's description (`Scene.sample_fields`).
    FiftyOne must be importable, with a database (see `clipcap.mongod.fiftyone_database`).
    """
    import fiftyone as fo

    if fo.dataset_exists(name):
        if not overwrite:
            return fo.load_dataset(name)
        fo.delete_dataset(name)
    rendered = synthetic.render_examples(image_dir, num_train, num_validation, seed, image_size, num_proc, progress)
    samples = [
        fo.Sample(
            filepath=str(path),
            tags=[split],
            ground_truth=fo.Detections(
                detections=[
                    fo.Detection(label=o.kind, bounding_box=o.bounding_box, colour=o.colour) for o in scene.objects
                ]
            ),
            captions=captions,
            **scene.sample_fields(),
        )
        for split, path, scene, captions in rendered
    ]
    dataset = fo.Dataset(name)
    dataset.add_samples(samples, progress=False)
    dataset.info = {"source": "clipcap synthetic", "seed": seed, "image_size": image_size}
    dataset.save()
    return dataset
