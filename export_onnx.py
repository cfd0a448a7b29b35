#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Export a trained ClipCap model to ONNX, for onnxruntime (`caption.py OUT_DIR --backend onnx`), the browser
(`web/`) and any other ONNX runtime (`pip install -e ".[onnx]"`).

    python export_onnx.py outputs/demo outputs/demo-onnx                    # fp32 graphs
    python export_onnx.py outputs/demo outputs/demo-onnx --quantize int8    # and int8 beside them

OUT_DIR gets `onnx/vision_encoder.onnx` (images -> prefix), `onnx/embed_tokens.onnx` and
`onnx/decoder_model_merged.onnx` (the decoder with and without its cache), the processor and tokenizer files, and a
config.json that records the model's identity (`clipcap/onnx_export.py` says what each graph takes and gives).
`--quantize int8` adds `onnx/*_int8.onnx`: the decoder dynamically quantized, the image graph statically, calibrated
on `--calibration_images` training images of `--calibration_dataset` (default: the data the model was trained on,
from its run_args.json; without data the image graph stays fp32). Each fp32 graph is then checked against PyTorch
and the largest difference printed (relative to the output's scale where that exceeds 1).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from clipcap.data import IMAGE_COLUMN
from clipcap.inference import training_run_args
from clipcap.onnx_export import calibration_batches, export_onnx
from clipcap.onnx_runtime import verify_export
from modeling_clipcap import ClipCapForCaptioning
from processing_clipcap import ClipCapProcessor


@dataclass
class ExportArguments:
    quantize: str | None = field(default=None, metadata={"help": "int8: also write int8 graphs."})
    calibration_dataset: str | None = field(
        default=None, metadata={"help": "Prepared data whose training images calibrate the int8 image graph."}
    )
    calibration_images: int = field(default=64, metadata={"help": "How many training images calibrate it."})
    verify: bool = field(default=True, metadata={"help": "Check each fp32 graph against the PyTorch model."})

    def __post_init__(self):
        if self.quantize not in (None, "int8"):
            raise ValueError(f"--quantize must be int8 (or left out), not {self.quantize!r}")


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(ExportArguments, description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="A saved ClipCap model (run_train.py's output_dir).")
    parser.add_argument("output_dir", help="Where the export goes.")
    try:
        args, positional = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        print(f"export_onnx.py: {error}", file=sys.stderr)
        return 2
    args.model_dir, args.output_dir = positional.model_dir, positional.output_dir
    start = time.perf_counter()

    # 1. The calibration images for the int8 image graph: the model's own training data unless named.
    calibration = None
    if args.quantize == "int8":
        data = training_run_args(args.model_dir).get("data", {})
        dataset_dir = args.calibration_dataset or data.get("dataset_dir")
        if dataset_dir and Path(dataset_dir).is_dir():
            processor = ClipCapProcessor.from_pretrained(args.model_dir)
            column = data.get("image_column", IMAGE_COLUMN) if not args.calibration_dataset else IMAGE_COLUMN
            calibration = calibration_batches(dataset_dir, processor, args.calibration_images, image_column=column)
        else:
            print("export_onnx.py: no calibration data (--calibration_dataset): the int8 image graph stays fp32")

    # 2. Export (and quantize).
    try:
        section = export_onnx(args.model_dir, args.output_dir, args.quantize, calibration)
    except (OSError, ValueError, ImportError) as error:
        print(f"export_onnx.py: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{dtype} {size / 1e6:.1f} MB" for dtype, size in section["bytes"].items())
    print(f"export_onnx.py: {args.output_dir}: opset {section['opset']}, {sizes}")

    # 3. Check the fp32 graphs against PyTorch.
    if args.verify:
        model = ClipCapForCaptioning.from_pretrained(args.model_dir).eval()
        differences = verify_export(model, args.output_dir)
        print(
            "export_onnx.py: largest |ONNX - PyTorch| / max(1, |PyTorch|): "
            + ", ".join(f"{k} {v:.1e}" for k, v in differences.items())
        )
    print(f"export_onnx.py: done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
