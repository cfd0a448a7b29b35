#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Evaluate a ClipCap captioner: caption a split, score it, and compare it with a generic caption and the references.

    python run_eval.py outputs/demo                                   # the demo's model, data and teacher
    python run_eval.py outputs/demo --num_beams 1 --output_dir outputs/demo/eval-greedy
    python run_eval.py USER/clipcap-home-appliance --dataset_dir data/open_images --clip_model ViT-B-32 \
        --clip_pretrained openai --fiftyone_dataset home-appliance-eval

Three captioners are scored alike on every image of the split:

* `model`: the captions the model generates (beam size and the other decoding options as flags);
* `baseline`: one generic caption for every image ("a photo of a home appliance", `--baseline_caption`);
* `references`: each image's first reference caption, scored against its other references. A caption written
  like the references is the ceiling the model can reach; images with a single reference are left out of its
  reference-based scores.

Scores (`clipcap.metrics`, through the project's `evaluate` modules): CLIP-S and RefCLIP-S with the CLIP teacher
(named in every report), BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap; SPICE is reported unavailable
offline), diversity (distinct-1/2, vocabulary, % unique, % novel against the training split's captions, mean length),
and, on the synthetic data, semantic accuracy.

Written to `--output_dir` (default `MODEL_DIR/eval`): `eval_results.json`, `eval_summary.md`, `predictions.jsonl`
(every caption with its scores), `report.html` (a gallery sorted worst CLIP-S first, sortable by any score, and the
training curves of `trainer_state.json`), `training_curves.png`, and on synthetic scenes `captions_grid.png` (the first
16 with their captions, marked right or wrong by the checker). With `--fiftyone_dataset NAME` the captions and
per-image scores are also written into that FiftyOne dataset (made from the split's image files if it does not
exist), so that `fo.launch_app(fo.load_dataset(NAME))` shows them.

Defaults for the dataset, its columns and the teacher come from the model directory's `run_args.json`
(written by `run_train.py`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN, describe_counts, drop_unusable_rows, load_prepared_dataset
from clipcap.fiftyone_data import write_captions
from clipcap.files import atomic_write_text
from clipcap.inference import GenerationArguments, caption_images, load_captioner, training_run_args
from clipcap.memory import keep_freed_memory
from clipcap.metrics import SPICE_UNAVAILABLE, load_metric, normalize_caption, scenes_of, score_captions
from clipcap.report import plot_training_curves, summary_table, write_caption_grid, write_html_report
from clipcap.teacher import CLIPTeacher, TeacherArguments

logger = logging.getLogger("run_eval")

SYSTEMS = ("model", "baseline", "references")


@dataclass
class EvalArguments:
    model_name_or_path: str = field(metadata={"help": "A ClipCap model directory (run_train.py output) or Hub id."})
    dataset_dir: str | None = field(
        default=None, metadata={"help": "A prepared DatasetDict (default: the one the model was trained on)."}
    )
    split: str = field(default="validation", metadata={"help": "Split to caption and score."})
    training_split: str | None = field(
        default="train", metadata={"help": "Split whose captions define a novel caption; empty: no novelty."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Column of images (default: the training's)."})
    caption_column: str | None = field(default=None, metadata={"help": "Column of reference captions (a list)."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N images."})
    baseline_caption: str = field(
        default="a photo of a home appliance", metadata={"help": "The generic caption every image is compared with."}
    )
    batch_size: int = field(default=32, metadata={"help": "Images per generate() call."})
    output_dir: str | None = field(default=None, metadata={"help": "Where the reports go (default MODEL_DIR/eval)."})
    fiftyone_dataset: str | None = field(
        default=None, metadata={"help": "Write the captions and scores into this FiftyOne dataset."}
    )
    fiftyone_field_prefix: str = field(default="clipcap", metadata={"help": "FiftyOne fields: <prefix>_caption, ..."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda if any)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Also load pickled weight files (.bin/.pt), which can run code; only for files you trust."},
    )


def parse_args(argv: list[str] | None = None) -> tuple[EvalArguments, TeacherArguments, GenerationArguments]:
    """`run_eval.py MODEL [--flags]`: the model may come first without its flag. The CLIP scorer is
    `--clip_model` / `--clip_pretrained` (default: the model's training teacher, else ViT-B-32 `openai`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--model_name_or_path", *argv]
    parser = HfArgumentParser((EvalArguments, TeacherArguments, GenerationArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def resolve_defaults(args: EvalArguments, teacher: TeacherArguments, run_args: dict) -> None:
    """Fill what was not given from the training run: dataset, columns, teacher; the real run's teacher otherwise."""
    data = run_args.get("data", {})
    # Models trained before the teacher had its own argument group kept it among the guidance arguments.
    trained_with = run_args.get("teacher_args") or run_args.get("guidance", {})
    args.dataset_dir = args.dataset_dir or data.get("dataset_dir")
    if not args.dataset_dir:
        raise ValueError(f"{args.model_name_or_path} has no run_args.json naming its data: pass --dataset_dir")
    args.image_column = args.image_column or data.get("image_column", IMAGE_COLUMN)
    args.caption_column = args.caption_column or data.get("caption_column", CAPTION_COLUMN)
    teacher.clip_model = teacher.clip_model or trained_with.get("clip_model") or "ViT-B-32"
    teacher.clip_pretrained = teacher.clip_pretrained or trained_with.get("clip_pretrained") or "openai"
    args.output_dir = args.output_dir or str(Path(args.model_name_or_path, "eval"))


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 1 with one line on stderr for a missing model, data or teacher, or unusable input."""
    args, teacher_args, generation = parse_args(argv)
    try:
        return evaluate(args, teacher_args, generation)
    except (OSError, ValueError) as error:
        print(
            f"run_eval.py: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
            file=sys.stderr,
        )
        return 1


def load_split(args: EvalArguments):
    """The split to evaluate (rows with no reference or, unless prepare_dataset.py made it, a broken image skipped and
    counted), its references, the training captions that define novelty, and the skipped-row counts."""
    required = {args.split: [IMAGE_COLUMN, CAPTION_COLUMN]}
    if args.training_split:
        required.setdefault(args.training_split, []).append(CAPTION_COLUMN)
    dataset, metadata = load_prepared_dataset(args.dataset_dir, required, args.image_column, args.caption_column)
    split_data = dataset[args.split]
    if args.max_samples is not None:
        split_data = split_data.select(range(min(args.max_samples, len(split_data))))
    total = len(split_data)
    split_data, drops = drop_unusable_rows(split_data, metadata, f"the {args.split!r} split of {args.dataset_dir}")
    if drops:
        kept = len(split_data)
        logger.warning("Skipped %d of %d %s rows (%s)", total - kept, total, args.split, describe_counts(drops))
    references = [[r for r in refs if r and r.strip()] for refs in split_data[CAPTION_COLUMN][:]]
    training_captions = None
    if args.training_split:
        training_captions = {
            normalize_caption(caption)
            for refs in dataset[args.training_split][CAPTION_COLUMN][:]
            for caption in refs
            if caption
        }
    logger.info("%d %s images from %s", len(split_data), args.split, args.dataset_dir)
    return split_data, references, training_captions, drops


def write_reports(args: EvalArguments, report: dict, split_data, images, captions, references, per_image) -> None:
    """eval_results.json, predictions.jsonl, eval_summary.md, the training curves, the caption grid (synthetic
    scenes) and report.html, each written whole or not at all: a run stopped here leaves the previous one intact."""
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "eval_results.json", json.dumps(report, indent=2) + "\n")
    ids = {key: split_data[key][:] for key in ("sample_id", "filepath") if key in split_data.column_names}
    lines = []
    for i, caption in enumerate(captions):
        row = {"index": i, **{key: values[i] for key, values in ids.items()}}
        row.update({"caption": caption, "references": references[i]})
        row.update({key: values[i] for key, values in per_image.items()})
        lines.append(json.dumps(row) + "\n")
    atomic_write_text(output_dir / "predictions.jsonl", "".join(lines))
    table = summary_table(report)
    atomic_write_text(output_dir / "eval_summary.md", table)
    curves = plot_training_curves(args.model_name_or_path, output_dir / "training_curves.png")
    if "errors" in per_image:  # synthetic scenes: the first 16 with their captions, marked by the checker
        write_caption_grid(output_dir / "captions_grid.png", images, captions, per_image["errors"])
    names = ids.get("filepath") or ids.get("sample_id")
    write_html_report(output_dir / "report.html", report, images, captions, references, per_image, curves, names)
    print(table)
    print(f"Reports in {output_dir}: eval_results.json, eval_summary.md, predictions.jsonl, report.html")


def evaluate(args: EvalArguments, teacher_args: TeacherArguments, generation: GenerationArguments) -> int:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)

    # 1. The model, and the defaults its training run left.
    resolve_defaults(args, teacher_args, training_run_args(args.model_name_or_path))
    model, processor = load_captioner(args.model_name_or_path, args.device, args.allow_pickle)
    if generation.seed is not None:
        torch.manual_seed(generation.seed)
    generate_kwargs = generation.generate_kwargs()
    settings = {**model.generation_config.to_diff_dict(), **generate_kwargs}

    # 2. The split to evaluate, and the training captions that define novelty.
    split_data, references, training_captions, drops = load_split(args)
    images = split_data[IMAGE_COLUMN][:]

    # 3. The CLIP scorer: the `clip_score` evaluate module with the teacher.
    teacher = CLIPTeacher.from_arguments(teacher_args, model.device, args.allow_pickle)
    clip_metric = load_metric("clip_score", teacher=teacher)
    image_embeds = teacher.embed_pil_images(images).cpu()

    # 4. Caption.
    start = time.perf_counter()
    captions = caption_images(model, processor, images, args.batch_size, args.progress, **generate_kwargs)
    seconds = time.perf_counter() - start
    logger.info("Captioned %d images in %.1f s (%.2f images/s)", len(captions), seconds, len(captions) / seconds)

    # 5. Score the model, the generic baseline and the references alike, through the evaluate modules.
    candidates = {
        "model": (captions, references),
        "baseline": ([args.baseline_caption] * len(captions), references),
        "references": ([refs[0] for refs in references], [refs[1:] for refs in references]),
    }
    scenes = scenes_of(split_data)
    results, per_image = {}, {}
    for system, (texts, refs) in candidates.items():
        results[system], per_image[system] = score_captions(
            texts, refs, image_embeds, clip_metric, training_captions, scenes
        )

    # 6. Reports.
    report = {
        "model": args.model_name_or_path,
        "dataset": args.dataset_dir,
        "split": args.split,
        "images": len(captions),
        "teacher": teacher.identity.describe(),
        "generation": settings,
        "baseline_caption": args.baseline_caption,
        "captioning_seconds": round(seconds, 3),
        "skipped_rows": dict(sorted(drops.items())),
        "notes": {
            "spice": SPICE_UNAVAILABLE,
            "references": "each image's first reference caption, scored against its other references",
            "clip_s": f"2.5 * max(cos, 0) with the CLIP teacher {teacher.identity.describe()}",
        },
        "results": results,
    }
    write_reports(args, report, split_data, images, captions, references, per_image["model"])

    # 7. FiftyOne.
    if args.fiftyone_dataset:
        done = write_captions(
            args.fiftyone_dataset, args.fiftyone_field_prefix, split_data, captions, references, per_image["model"]
        )
        print(done)
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
