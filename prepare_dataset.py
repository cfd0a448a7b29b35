"""Prepare a captioning dataset: a FiftyOne dataset -> a validated `datasets.DatasetDict` {train, validation}.

    python prepare_dataset.py                                   # the embedded synthetic dataset (offline default)
    python prepare_dataset.py configs/prepare_open_images_home_appliance.yaml   # Open Images V7 from the zoo
    python prepare_dataset.py --dataset_name my_fiftyone_dataset --output_dir data/mine
    python prepare_dataset.py --dataset_dir export/ --dataset_type FiftyOneImageDetectionDataset

Every source goes through FiftyOne, so one code path serves them all:
1. load the source: the FiftyOne zoo (`--zoo_dataset open-images-v7`, filtered on `--classes`), a FiftyOne dataset by
   name, an export directory in any FiftyOne format, or, when none is given, the embedded synthetic scenes;
2. split: the zoo's splits, else the samples' `train` / `validation` tags, else a seeded random split;
3. captions: from `--caption_field` (a string or a list of strings) when the dataset has it, else made from the
   Detections / Classifications labels with several templates;
4. images: every file is decoded in full; missing, empty, truncated, non-image, too small and too large
   (decompression bomb) files are dropped and counted by reason; the rest become RGB (grayscale, CMYK, transparency,
   16-bit, EXIF orientation), optionally shrunk to `--max_image_side`;
5. optional teacher cache: unit-norm CLIP embeddings of every image and every reference caption;
6. `save_to_disk(--output_dir)` with a dataset card, and optionally `push_to_hub`.

The output is written next to `--output_dir` and moved into place only when complete, so a failed run never leaves a
half-written dataset behind, and an existing one is replaced only with `--overwrite_output_dir`.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from transformers import HfArgumentParser

from fiftyone_mongod import QUIET_ENVIRONMENT

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
VALIDATION_TAGS = ("validation", "val", "valid")
CARD_METADATA_KEY = "clipcap"


class PrepareError(Exception):
    """A problem with the input that the user can fix; reported as one line."""


@dataclass
class DataArguments:
    output_dir: str = field(default="data/synthetic", metadata={"help": "Where the DatasetDict is saved."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing dataset there."})
    zoo_dataset: str | None = field(default=None, metadata={"help": "A FiftyOne zoo dataset, e.g. open-images-v7."})
    classes: list[str] = field(
        default_factory=lambda: list(HOME_APPLIANCE_CLASSES),
        metadata={"help": "Zoo filter: samples with at least one of these classes."},
    )
    label_types: list[str] = field(default_factory=lambda: ["detections", "classifications"])
    dataset_name: str | None = field(default=None, metadata={"help": "An existing FiftyOne dataset."})
    dataset_dir: str | None = field(default=None, metadata={"help": "A directory in a FiftyOne-supported format."})
    dataset_type: str | None = field(
        default=None,
        metadata={"help": "Its fiftyone.types name, e.g. FiftyOneImageDetectionDataset, COCODetectionDataset."},
    )
    num_train: int | None = field(default=None, metadata={"help": "Default: 10000 (zoo), 2000 (synthetic), all."})
    num_validation: int | None = field(
        default=None, metadata={"help": "Default: 100 (zoo), 200 (synthetic); for an untagged dataset, a tenth."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Keep at most this many samples per split."})
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
        default=None, metadata={"help": "Where synthetic PNGs are written (default: ~/.cache/clipcap/synthetic/...)."}
    )
    max_image_side: int | None = field(default=None, metadata={"help": "Shrink larger images to this longest side."})
    min_image_side: int = field(default=32, metadata={"help": "Drop images with a shorter side than this."})
    max_image_pixels: int = field(default=89_478_485, metadata={"help": "Refuse larger images (decompression bombs)."})
    clip_model: str | None = field(default=None, metadata={"help": "open_clip architecture of the teacher cache."})
    clip_pretrained: str | None = field(default=None, metadata={"help": "Its open_clip tag or checkpoint path."})
    allow_pickle: bool = field(
        default=False, metadata={"help": "Also load a pickled teacher checkpoint (.pt/.bin), which can run code."}
    )
    teacher_batch_size: int = field(default=64)
    num_proc: int = field(default=1, metadata={"help": "Processes for synthetic rendering and image validation."})
    seed: int = field(default=0)
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push to this Hub dataset repo."})
    progress: bool = field(default=True)

    @property
    def source(self) -> str:
        return (
            "zoo" if self.zoo_dataset else "name" if self.dataset_name else "dir" if self.dataset_dir else "synthetic"
        )

    def __post_init__(self):
        given = [n for n in ("zoo_dataset", "dataset_name", "dataset_dir") if getattr(self, n)]
        if len(given) > 1:
            raise PrepareError(f"give one source, not {' and '.join('--' + n for n in given)}")
        if bool(self.clip_model) != bool(self.clip_pretrained):
            raise PrepareError("the teacher cache needs both --clip_model and --clip_pretrained")
        for name in ("num_train", "num_validation", "max_samples", "max_image_side"):
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
# Image validation
# ---------------------------------------------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """RGB version of a decoded image, and the conversions it needed."""
    conversions = []
    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation: turn the pixels as a viewer would show them
        image = ImageOps.exif_transpose(image)
        conversions.append("exif_orientation")
    mode = image.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit grayscale: scale the full 16-bit range into 8 bits
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
        conversions.append("16-bit")
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
        conversions.append("transparency")
    elif mode == "CMYK":
        image, _ = image.convert("RGB"), conversions.append("cmyk")
    elif mode in ("L", "1"):
        image, _ = image.convert("RGB"), conversions.append("grayscale")
    elif mode != "RGB":
        image, _ = image.convert("RGB"), conversions.append(mode.lower())
    return image, conversions


def validate_image(
    path: str, min_side: int = 32, max_pixels: int = 89_478_485, max_side: int | None = None
) -> tuple[bytes | None, str, list[str]]:
    """Decode one image file in full. Returns (encoded RGB image bytes or None, drop reason or "", conversions).

    The original bytes are kept when nothing had to change; otherwise the image is re-encoded (JPEG quality 95 for
    lossy sources, PNG otherwise).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None, "missing", []
    except OSError:
        return None, "unreadable", []
    if size == 0:
        return None, "empty_file", []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None, "unreadable", []
    return validate_image_bytes(data, min_side, max_pixels, max_side)


def validate_image_bytes(
    data: bytes, min_side: int = 32, max_pixels: int = 89_478_485, max_side: int | None = None
) -> tuple[bytes | None, str, list[str]]:
    """`validate_image` for an image already in memory."""
    saved_bomb_limit, saved_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False  # our own limit below; never pad truncation
    try:
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            return None, "not_an_image", []
        except (OSError, SyntaxError, ValueError, EOFError):  # recognised, but the header itself is cut short
            return None, "truncated", []
        width, height = image.size
        if width * height > max_pixels:  # checked from the header, before any pixel is decoded
            return None, "too_large", []
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError):
            return None, "truncated", []
        if min(width, height) < min_side:
            return None, "too_small", []
        source_format = image.format
        rgb, conversions = _to_rgb(image)
        if max_side and max(rgb.size) > max_side:
            rgb = rgb.copy()
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            conversions.append("resized")
        if not conversions and source_format in ("JPEG", "PNG", "WEBP"):
            return data, "", []
        out = io.BytesIO()
        if source_format in ("JPEG", "WEBP", "MPO"):
            rgb.save(out, format="JPEG", quality=95)
        else:
            rgb.save(out, format="PNG")
        return out.getvalue(), "", conversions
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved_bomb_limit, saved_truncated


def _validate_example(example: dict, min_side: int, max_pixels: int, max_side: int | None) -> dict:
    if not example["captions"]:
        return {"image": None, "drop_reason": "no_caption", "conversions": []}
    data, reason, conversions = validate_image(example["filepath"], min_side, max_pixels, max_side)
    return {
        "image": {"bytes": data, "path": None} if data else None,
        "drop_reason": reason,
        "conversions": conversions,
    }


def validate_split(
    dataset: datasets.Dataset, args: DataArguments, split: str
) -> tuple[datasets.Dataset, Counter, Counter]:
    """Decode every image of a split; returns the kept examples and the drop and conversion counts."""
    checked = dataset.map(
        _validate_example,
        fn_kwargs={
            "min_side": args.min_image_side,
            "max_pixels": args.max_image_pixels,
            "max_side": args.max_image_side,
        },
        num_proc=args.num_proc if args.num_proc > 1 and len(dataset) > 1 else None,
        features=datasets.Features(
            {
                **dataset.features,
                "image": datasets.Image(),
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


# ---------------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------------


def _default_synthetic_dir(args: DataArguments) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "clipcap" / "synthetic" / f"seed{args.seed}-{args.synthetic_image_size}px"


def load_source(args: DataArguments) -> tuple[dict, str]:
    """The source as {split: FiftyOne view}, and a one-line description of it."""
    try:
        import fiftyone as fo

        fo.list_datasets()  # the first database access: starts FiftyOne's own mongod unless a URI is set
    except Exception as error:  # noqa: BLE001 - no database is one line, not a traceback
        raise PrepareError(
            f"FiftyOne cannot reach its database ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            "install the local-db extra, or run `python fiftyone_mongod.py` and export the FIFTYONE_DATABASE_URI it prints"
        ) from None

    if args.source == "synthetic":
        import synthetic

        num_train = 2000 if args.num_train is None else args.num_train
        num_validation = 200 if args.num_validation is None else args.num_validation
        image_dir = Path(args.synthetic_image_dir) if args.synthetic_image_dir else _default_synthetic_dir(args)
        start = time.perf_counter()
        dataset = synthetic.build_fiftyone_dataset(
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
            f"the embedded synthetic home-appliance scenes (synthetic.py; seed {args.seed}, "
            f"{args.synthetic_image_size} px, {num_train} train / {num_validation} validation)"
        )
        return {"train": dataset.match_tags("train"), "validation": dataset.match_tags("validation")}, description

    if args.source == "zoo":
        import fiftyone.zoo as foz

        splits = {}
        for split, default in (("train", 10000), ("validation", 100)):
            count = getattr(args, f"num_{split}")
            count = default if count is None else count
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
                    "(--dataset_dir DIR --dataset_type TYPE), or no source for the embedded synthetic dataset"
                ) from None
        classes = ", ".join(args.classes)
        return splits, f"FiftyOne zoo '{args.zoo_dataset}', classes: {classes}"

    if args.source == "name":
        if not fo.dataset_exists(args.dataset_name):
            known = ", ".join(fo.list_datasets()[:10]) or "none"
            raise PrepareError(f"no FiftyOne dataset named '{args.dataset_name}' (known: {known})")
        dataset = fo.load_dataset(args.dataset_name)
        description = f"FiftyOne dataset '{args.dataset_name}'"
    else:
        path = Path(args.dataset_dir)
        if not path.is_dir():
            raise PrepareError(f"--dataset_dir {args.dataset_dir} is not a directory")
        type_name = args.dataset_type or "ImageDirectory"
        dataset_type = getattr(fo.types, type_name, None)
        if (
            dataset_type is None
            or not isinstance(dataset_type, type)
            or not issubclass(dataset_type, fo.types.Dataset)
        ):
            raise PrepareError(f"--dataset_type {type_name} is not a fiftyone.types dataset type")
        try:
            dataset = fo.Dataset.from_dir(dataset_dir=str(path), dataset_type=dataset_type)
        except Exception as error:  # noqa: BLE001 - a malformed export becomes one line
            raise PrepareError(f"could not read {path} as {type_name}: {type(error).__name__}: {error}") from None
        description = f"the {type_name} export in {path}"
    return split_samples(dataset, args), description


def split_samples(dataset, args: DataArguments) -> dict:
    """Train / validation views: by sample tags when the dataset has them, else a seeded random split.

    `num_train` / `num_validation` cap the tagged splits; in a random split `num_validation` (default 10%) is the
    validation size and `num_train` caps the rest.
    """
    tags = set(dataset.distinct("tags"))
    validation_tags = [t for t in VALIDATION_TAGS if t in tags]
    if "train" in tags and validation_tags:
        train, validation = dataset.match_tags("train"), dataset.match_tags(validation_tags)
        if args.num_train is not None:
            train = train.limit(args.num_train)
        if args.num_validation is not None:
            validation = validation.limit(args.num_validation)
        return {"train": train, "validation": validation}
    ids = dataset.values("id")
    random.Random(args.seed).shuffle(ids)
    num_validation = args.num_validation if args.num_validation is not None else max(1, len(ids) // 10)
    if num_validation >= len(ids):
        raise PrepareError(f"the dataset has {len(ids)} samples, too few for {num_validation} validation samples")
    validation, train = ids[:num_validation], ids[num_validation:]
    if args.num_train is not None:
        train = train[: args.num_train]
    return {"train": dataset.select(train), "validation": dataset.select(validation)}


def _label_fields(view, args: DataArguments) -> list[tuple[str, str]]:
    """(field, kind) of the labels to caption from, in order of preference: `--label_field`; else the first
    Detections field, then the first Classifications / Classification field (Open Images' `negative_labels` skipped)."""
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


def extract_records(view, args: DataArguments) -> tuple[dict, str]:
    """Column-wise records of a FiftyOne view (filepath, sample id, captions, labels, boxes, scene) and the caption
    strategy used. Each sample's labels come from the first preferred label field that has any for it."""
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
        raise PrepareError(
            f"the dataset has no '{args.caption_field}' caption field and no Detections/Classifications labels to make "
            "captions from; give --caption_field or --label_field"
        )
    columns["captions"] = captions
    if "scene" in schema:  # the synthetic dataset's scene description, for semantic accuracy
        columns["scene"] = [json.dumps(s, sort_keys=True) for s in view.values("scene")]
    return columns, strategy


# ---------------------------------------------------------------------------------------------------------------------
# Teacher cache
# ---------------------------------------------------------------------------------------------------------------------


def add_teacher_cache(dataset_dict: datasets.DatasetDict, args: DataArguments):
    """Add `teacher_image_embeds` (D) and `teacher_text_embeds` (one D-vector per caption), unit norm, to each split."""
    import torch

    from clip_guidance import CLIPTeacher, embed_dataset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        teacher = CLIPTeacher.from_pretrained(
            args.clip_model, args.clip_pretrained, device=device, allow_pickle=args.allow_pickle
        )
    except (OSError, ValueError) as error:
        raise PrepareError(str(error)) from None

    for split in dataset_dict:
        dataset_dict[split] = embed_dataset(dataset_dict[split], teacher, batch_size=args.teacher_batch_size)
    return dataset_dict, teacher.identity


# ---------------------------------------------------------------------------------------------------------------------
# Card, metadata, saving
# ---------------------------------------------------------------------------------------------------------------------


def load_dataset_metadata(path: str | os.PathLike) -> dict:
    """The `clipcap` block of a prepared dataset's card: source, caption strategy, drops, teacher (or {})."""
    from huggingface_hub import DatasetCard

    readme = Path(path) / "README.md"
    if not readme.is_file():
        return {}
    return dict(DatasetCard.load(readme).data.to_dict().get(CARD_METADATA_KEY) or {})


def load_prepared_dataset(dataset_dir: str, required: dict[str, list[str]]) -> tuple[datasets.DatasetDict, dict]:
    """A DatasetDict saved by this script (a directory) or a Hub dataset id, and its card metadata ({} from the Hub).
    Each split in `required` must exist with the columns listed for it; otherwise one clear error."""
    from cli_utils import missing_local_path

    path = Path(dataset_dir)
    if missing_local_path(dataset_dir):
        raise FileNotFoundError(f"no dataset directory {dataset_dir}; make one with prepare_dataset.py")
    if path.exists():
        if not (path / "dataset_dict.json").exists():
            raise FileNotFoundError(f"{dataset_dir} is not a saved DatasetDict; make one with prepare_dataset.py")
        dataset, metadata = datasets.load_from_disk(str(path)), load_dataset_metadata(path)
    else:
        dataset, metadata = datasets.load_dataset(dataset_dir), {}
    for split, columns in required.items():
        if split not in dataset:
            raise ValueError(f"{dataset_dir} has no {split!r} split (it has {sorted(dataset)})")
        if missing := set(columns) - set(dataset[split].column_names):
            raise ValueError(f"the {split!r} split of {dataset_dir} lacks the columns {sorted(missing)}")
    return dataset, metadata


def drop_unusable_rows(
    dataset: datasets.Dataset, image_column: str, caption_column: str, metadata: dict, name: str
) -> tuple[datasets.Dataset, Counter]:
    """The rows one can train on or score, and the others counted by reason: `no_caption` (none, or only empty
    strings), `no_image`, and every image decoded in full (`validate_image_bytes`: `truncated`, `not_an_image`,
    `too_large`, ...) unless this script made the dataset (its card's `metadata` records the drops made then). Only
    these two columns are read; the result is a selection (nothing copied). `name` ("the 'train' split of DIR")
    names the data in the error raised when no row is left."""
    check_images = "dropped" not in metadata
    if check_images and not isinstance(dataset.features[image_column], datasets.Image):
        raise ValueError(f"the column {image_column!r} holds {dataset.features[image_column]}, not images")
    columns = dataset.select_columns([caption_column, image_column] if check_images else [caption_column])
    if check_images:
        columns = columns.cast_column(image_column, datasets.Image(decode=False))
    drops, keep, index = Counter(), [], 0
    for batch in columns.iter(batch_size=256):
        for i, references in enumerate(batch[caption_column]):
            references = [references] if isinstance(references, str) else references or []
            reason = "" if any(isinstance(r, str) and r.strip() for r in references) else "no_caption"
            if not reason and check_images:
                image = batch[image_column][i]
                data = image and (image.get("bytes") or _read_bytes(image.get("path")))
                reason = validate_image_bytes(data, min_side=1)[1] if data else "no_image"
            if reason:
                drops[reason] += 1
            else:
                keep.append(index + i)
        index += len(batch[caption_column])
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


def make_card(metadata: dict, dataset_dict: datasets.DatasetDict, table: str):
    from huggingface_hub import DatasetCard, DatasetCardData

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
    columns = ", ".join(f"`{c}`" for c in dataset_dict["train"].column_names)
    body = f"""
# ClipCap captioning data

Prepared by `prepare_dataset.py` from {metadata["source"]}.

- Splits: {", ".join(f"{split} {n:,}" for split, n in sizes.items())}
- Captions: {metadata["caption_strategy"]}
- Columns: {columns}
- Teacher cache: {_teacher_text(teacher)}
- Reproduce: `{metadata["command"]}`

## Dropped images

Every image was decoded in full; these were left out (and these converted to RGB):

```
{table}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _teacher_text(teacher: dict | None) -> str:
    if not teacher:
        return "none"
    from clip_guidance import TeacherIdentity

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


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def prepare(args: DataArguments) -> tuple[datasets.DatasetDict, dict]:
    """Run every step; returns the DatasetDict saved at `args.output_dir` and its card metadata."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not args.overwrite_output_dir:
        raise PrepareError(f"{output_dir} already exists and is not empty; pass --overwrite_output_dir to replace it")
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    datasets.utils.logging.set_verbosity_warning()
    if not args.progress:
        datasets.disable_progress_bars()

    # 1-2. Source and splits.
    views, source = load_source(args)
    # 3. Captions and labels.
    columns, strategy = {}, None
    for split, view in views.items():
        columns[split], strategy = extract_records(view, args)
    # 4. Images.
    dataset_dict, dropped, converted = datasets.DatasetDict(), {}, {}
    for split, data in columns.items():
        dataset = datasets.Dataset.from_dict(data)
        if args.max_samples is not None:
            dataset = dataset.select(range(min(args.max_samples, len(dataset))))
        start = time.perf_counter()
        kept, dropped[split], converted[split] = validate_split(dataset, args, split)
        seconds = time.perf_counter() - start
        print(f"{split}: {len(kept)} of {len(dataset)} images kept ({len(dataset) / seconds:.0f} images/s checked)")
        dataset_dict[split] = kept.select_columns(
            ["image", "captions"] + [c for c in kept.column_names if c not in ("image", "captions")]
        )
    table = drop_table(dropped, converted)
    if len(dataset_dict["train"]) == 0:
        raise PrepareError("no training image survived validation:\n" + table)
    print(table)
    # 5. Teacher cache.
    teacher = None
    if args.clip_model:
        dataset_dict, identity = add_teacher_cache(dataset_dict, args)
        teacher = identity.to_dict()
    # 6. Save, card, push.
    metadata = {
        "source": source,
        "caption_strategy": strategy,
        "dropped": {split: dict(counts) for split, counts in dropped.items()},
        "converted": {split: dict(counts) for split, counts in converted.items()},
        "teacher": teacher,
        "seed": args.seed,
        "command": "python prepare_dataset.py " + " ".join(sys.argv[1:]),
    }
    description = (
        f"Prepared by prepare_dataset.py from {source}. Captions: {strategy}. "
        f"Teacher cache: {_teacher_text(teacher)}.\n{table}"
    )
    for split in dataset_dict:
        dataset_dict[split].info.description = description
    card = make_card(metadata, dataset_dict, table)
    save_atomically(dataset_dict, card, output_dir)
    print(f"Saved to {output_dir} ({directory_size(output_dir) / 2**20:.1f} MiB)")
    if args.push_to_hub:
        dataset_dict.push_to_hub(args.push_to_hub)
        from huggingface_hub import DatasetCard

        hub_card = DatasetCard.load(args.push_to_hub, repo_type="dataset")
        hub_card.data[CARD_METADATA_KEY] = metadata
        hub_card.text = card.text
        hub_card.push_to_hub(args.push_to_hub, repo_type="dataset")
    return datasets.load_from_disk(str(output_dir)), metadata


def parse_args(argv: list[str] | None = None) -> DataArguments:
    """Flags, or a .yaml/.json file of the same names, optionally followed by flags that override it."""
    from cli_utils import ConfigError, parse_config_and_flags

    try:
        (args,) = parse_config_and_flags(HfArgumentParser(DataArguments, description=__doc__.splitlines()[0]), argv)
    except ConfigError as error:
        raise PrepareError(str(error)) from None
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        prepare(args)
    except PrepareError as error:
        print(f"prepare_dataset.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from cli_utils import keep_freed_memory

    keep_freed_memory()
    sys.exit(main())
