# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Captioning with a trained model: loading it, the decoding options, and the one batched captioning loop that
`caption.py`, `run_eval.py` and the trainer's evaluation all call.

    model, processor = load_captioner("outputs/demo")
    captions = caption_images(model, processor, images, batch_size=32, num_beams=5)
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from clipcap.files import missing_local_path
from clipcap.onnx_export import is_onnx_export
from clipcap.onnx_runtime import ClipCapONNXCaptioner
from modeling_clipcap import ClipCapForCaptioning
from processing_clipcap import ClipCapProcessor


@dataclass
class GenerationArguments:
    """Decoding options; each one left unset keeps the model's `generation_config` value."""

    num_beams: int | None = field(default=None, metadata={"help": "Beam size (1: greedy, unless --do_sample)."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of searching."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling: keep this much probability."})
    top_k: int | None = field(default=None, metadata={"help": "Sampling: keep the k likeliest tokens."})
    temperature: float | None = field(default=None, metadata={"help": "Sampling temperature."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Longest caption in tokens."})
    no_repeat_ngram_size: int | None = field(default=None, metadata={"help": "Never repeat an n-gram of this size."})
    seed: int | None = field(default=None, metadata={"help": "Seed for sampling (reproducible captions)."})

    def generate_kwargs(self) -> dict:
        """The options to pass to `model.generate` (only those that were set)."""
        kwargs = {
            name: getattr(self, name)
            for name in ("num_beams", "top_p", "top_k", "temperature", "max_new_tokens", "no_repeat_ngram_size")
            if getattr(self, name) is not None
        }
        if self.do_sample:
            kwargs["do_sample"] = True
            kwargs.setdefault("num_beams", 1)
        return kwargs


def training_run_args(model_name_or_path: str) -> dict:
    """The `run_args.json` that `run_train.py` wrote next to the model (its data, teacher, ...), or {}."""
    path = Path(model_name_or_path, "run_args.json")
    return json.loads(path.read_text()) if path.is_file() else {}


BACKENDS = ("auto", "pytorch", "onnx")


def load_captioner(
    model_name_or_path: str,
    device: str | None = None,
    allow_pickle: bool = False,
    backend: str = "auto",
    onnx_dtype: str = "fp32",
):
    """The captioner (eval mode, on `device`) and its processor. `backend`: "pytorch" loads a saved model, "onnx" an
    `export_onnx.py` directory (`ClipCapONNXCaptioner`, graphs of `onnx_dtype`, on the CPU), "auto" whichever the
    directory holds. A path that is clearly local (absolute, relative with `.`, or inside an existing folder) but is
    not a directory is an error here, not a Hub request. Weights load from safetensors only unless `allow_pickle`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if missing_local_path(model_name_or_path):
        raise OSError(f"no model directory {model_name_or_path}")
    exported = is_onnx_export(model_name_or_path)
    if backend == "onnx" and not exported:
        raise ValueError(
            f"{model_name_or_path} is not an ONNX export: run `python export_onnx.py {model_name_or_path} OUT_DIR` "
            "and caption with OUT_DIR"
        )
    if backend == "pytorch" and exported:
        raise ValueError(f"{model_name_or_path} is an ONNX export: caption it with the onnx backend")
    processor = ClipCapProcessor.from_pretrained(model_name_or_path)
    if exported:
        if device not in (None, "cpu"):
            raise ValueError(f"the onnx backend runs on the CPU, not {device}")
        return ClipCapONNXCaptioner.from_pretrained(model_name_or_path, onnx_dtype), processor
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = ClipCapForCaptioning.from_pretrained(model_name_or_path, allow_pickle=allow_pickle).to(device).eval()
    return model, processor


@torch.no_grad()
def caption_batches(
    model,
    processor,
    images: Iterable,
    batch_size: int = 32,
    progress: bool = False,
    total: int | None = None,
    **generate_kwargs,
) -> Iterator[list[str]]:
    """Caption `images` (PIL images of any mode) `batch_size` at a time with one `generate` call per batch, yielding
    each batch's captions as soon as it is done.

    `images` may be a list, a lazy sequence such as a `datasets` image column (sliced, so only a batch is decoded
    at a time) or any iterable (a generator that skips unreadable files). `progress` shows a bar on stderr over
    `total` images (default: `len(images)` when it has one). The caller chooses the model's mode (`eval()`).
    """
    sliceable = hasattr(images, "__len__") and hasattr(images, "__getitem__")
    total = total if total is not None else (len(images) if sliceable else None)
    iterator = None if sliceable else iter(images)
    with tqdm(total=total, unit="image", desc="Captioning", disable=not progress, file=sys.stderr) as bar:
        first = 0
        while True:
            batch = list(images[first : first + batch_size]) if sliceable else list(islice(iterator, batch_size))
            if not batch:
                return
            first += len(batch)
            pixel_values = processor(images=batch)["pixel_values"].to(model.device)
            yield processor.batch_decode(model.generate(pixel_values, **generate_kwargs))
            bar.update(len(batch))


def caption_images(
    model, processor, images: Iterable, batch_size: int = 32, progress: bool = False, **generate_kwargs
) -> list[str]:
    """Every caption of `caption_batches`, in order."""
    batches = caption_batches(model, processor, images, batch_size, progress, **generate_kwargs)
    return [caption for batch in batches for caption in batch]


class CaptionWriter:
    """Writes each (path, caption) as it comes: `text` (path<TAB>caption), `jsonl` or `csv` (with a header)."""

    FORMATS = ("text", "jsonl", "csv")

    def __init__(self, stream, format: str):
        self.stream, self.format = stream, format
        self.csv = csv.writer(stream) if format == "csv" else None
        if self.csv:
            self.csv.writerow(["path", "caption"])

    def write(self, path: str, caption: str):
        if self.format == "jsonl":
            self.stream.write(json.dumps({"path": path, "caption": caption}, ensure_ascii=False) + "\n")
        elif self.csv:
            self.csv.writerow([path, caption])
        else:
            self.stream.write(f"{path}\t{caption}\n")

    def flush(self):
        self.stream.flush()
