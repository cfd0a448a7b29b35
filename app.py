#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The captioning app, in the Hugging Face Spaces convention (Gradio; `pip install -e ".[app]"`).

    python app.py                                   # outputs/demo, its teacher and validation scenes; 127.0.0.1:7860
    python app.py USER/clipcap-home-appliance --clip_model ViT-B-32 --clip_pretrained openai
    python app.py outputs/demo-onnx --onnx_dtype int8     # export_onnx.py's graphs, run by onnxruntime
    CLIPCAP_MODEL=USER/clipcap-home-appliance python app.py     # as a Space runs it: no arguments

Drop an image (or pick one of the validation scenes) and see its captions by greedy search, beam search and
sampling side by side, each with its CLIP-S by the teacher and, for a synthetic scene, the checker's verdict. The
teacher and the scenes default to those the model was trained with (its `run_args.json`); a teacher that cannot be
loaded there (offline, say) is left out with a warning, one named with `--clip_model` is an error.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from clipcap.captioning_app import CaptioningDemo, ValidationScene
from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN, load_prepared_dataset
from clipcap.inference import load_captioner, training_run_args
from clipcap.memory import keep_freed_memory
from clipcap.metrics import scenes_of
from clipcap.synthetic import Scene
from clipcap.teacher import CLIPTeacher, TeacherArguments

logger = logging.getLogger("app")


@dataclass
class AppArguments:
    model_name_or_path: str = field(
        default=os.environ.get("CLIPCAP_MODEL", "outputs/demo"),
        metadata={"help": "A ClipCap model directory or Hub id (default: $CLIPCAP_MODEL, else outputs/demo)."},
    )
    dataset_dir: str | None = field(
        default=None, metadata={"help": "Prepared data whose scenes to offer (default: the model's training data)."}
    )
    split: str = field(default="validation", metadata={"help": "Split whose first images are offered."})
    num_scenes: int = field(default=16, metadata={"help": "How many of its images to offer (0: none)."})
    server_name: str = field(
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),  # a Space sets it to 0.0.0.0
        metadata={"help": "Address to serve on (0.0.0.0: every one; default $GRADIO_SERVER_NAME, else 127.0.0.1)."},
    )
    server_port: int = field(default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), metadata={"help": "Port."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda if any)."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "pytorch, onnx (an export_onnx.py directory: onnxruntime) or auto (what the directory holds)."
        },
    )
    onnx_dtype: str = field(default="fp32", metadata={"help": "The onnx backend's graphs: fp32 or int8."})


def parse_args(argv: list[str] | None = None) -> tuple[AppArguments, TeacherArguments]:
    """`app.py [MODEL] [--flags]`: the model may come first without its flag."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--model_name_or_path", *argv]
    return HfArgumentParser((AppArguments, TeacherArguments)).parse_args_into_dataclasses(args=argv)


def load_teacher(args: AppArguments, teacher_args: TeacherArguments, run_args: dict, device) -> CLIPTeacher | None:
    """The teacher named by the flags (an error if it cannot load), else the training run's (a warning if not)."""
    if teacher_args.clip_model:
        return CLIPTeacher.from_arguments(teacher_args, device)
    trained_with = run_args.get("teacher_args") or {}
    if not trained_with.get("clip_model"):
        return None
    teacher_args.clip_model, teacher_args.clip_pretrained = trained_with["clip_model"], trained_with["clip_pretrained"]
    try:
        return CLIPTeacher.from_arguments(teacher_args, device)
    except (OSError, ValueError) as error:
        logger.warning("Without CLIP-S: the model's teacher did not load (%s)", str(error).splitlines()[0])
        return None


def load_scenes(args: AppArguments, run_args: dict) -> list[ValidationScene]:
    """The first `num_scenes` images of the split, when the data are synthetic scenes (they carry descriptions)."""
    dataset_dir = args.dataset_dir or run_args.get("data", {}).get("dataset_dir")
    if not dataset_dir or args.num_scenes <= 0 or not os.path.isdir(dataset_dir):
        return []
    data = run_args.get("data", {})
    image_column, caption_column = data.get("image_column", IMAGE_COLUMN), data.get("caption_column", CAPTION_COLUMN)
    required = {args.split: [IMAGE_COLUMN, CAPTION_COLUMN]}
    dataset, _ = load_prepared_dataset(dataset_dir, required, image_column, caption_column)
    split = dataset[args.split]
    rows = split.select(range(min(args.num_scenes, len(split))))
    if (scenes := scenes_of(rows)) is None:
        return []
    return [
        ValidationScene(image.convert("RGB"), Scene.from_json(scene), captions[0])
        for image, scene, captions in zip(rows[IMAGE_COLUMN], scenes, rows[CAPTION_COLUMN])
    ]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    args, teacher_args = parse_args(argv)

    # 1. The model, and what its training run left: the teacher and the data.
    try:
        model, processor = load_captioner(
            args.model_name_or_path, args.device, backend=args.backend, onnx_dtype=args.onnx_dtype
        )
    except (OSError, ValueError, ImportError) as error:
        print(f"app.py: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    run_args = training_run_args(args.model_name_or_path)

    # 2. The teacher (CLIP-S) and the validation scenes (the checker's verdict).
    teacher = load_teacher(args, teacher_args, run_args, model.device)
    scenes = load_scenes(args, run_args)
    logger.info("teacher: %s; %d scenes", teacher.identity.describe() if teacher else "none", len(scenes))

    # 3. Serve.
    demo = CaptioningDemo(model, processor, teacher, scenes, title=f"ClipCap: {args.model_name_or_path}")
    demo.build().launch(server_name=args.server_name, server_port=args.server_port, footer_links=[])
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
