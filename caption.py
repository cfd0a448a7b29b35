#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Caption image files with a trained ClipCap model (a directory or a Hub id).

    python caption.py outputs/demo photo.jpg                              # one file
    python caption.py outputs/demo images/ --format jsonl --output captions.jsonl
    python caption.py outputs/demo "shots/**/*.png" --num_beams 1       # glob (quoted), greedy
    python caption.py outputs/demo images/ --do_sample --top_p 0.9 --seed 0

Inputs are files, folders (searched recursively for the `--extensions`) and glob patterns, in the order given.
Images are decoded and captioned in batches of `--batch_size`; decoding settings default to the model's
`generation_config` (what `run_train.py` evaluated with). A file that cannot be read as an image is reported on
stderr and skipped; the others are still captioned, and each batch is written as soon as it is done.

Output (stdout, or `--output`): `text` is one `path<TAB>caption` line per image, `jsonl` one
`{"path": ..., "caption": ...}` object per line, `csv` a `path,caption` table with a header.

Exit status: 0 when every image was captioned; 1 when some files were skipped (the rest are captioned and
written); 2 when nothing could be done (bad arguments, no image found, the model does not load).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from transformers import HfArgumentParser

from cli_utils import keep_freed_memory

EXIT_OK, EXIT_SKIPPED, EXIT_FAILED = 0, 1, 2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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


@dataclass
class CaptionArguments:
    batch_size: int = field(default=32, metadata={"help": "Images per generate() call."})
    format: str = field(default="text", metadata={"help": "text (path<TAB>caption), jsonl or csv."})
    output: str | None = field(default=None, metadata={"help": "Write here instead of stdout."})
    extensions: str = field(
        default=",".join(IMAGE_EXTENSIONS), metadata={"help": "File endings searched for in folders."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if any)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar on stderr."})
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Also load pickled weight files (.bin/.pt), which can run code; only for files you trust."},
    )

    def __post_init__(self):
        if self.format not in ("text", "jsonl", "csv"):
            raise ValueError(f"--format must be text, jsonl or csv, not {self.format!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, not {self.batch_size}")


def find_images(inputs: list[str], extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[list[str], list[str]]:
    """Expand files, folders (recursively, by extension) and glob patterns into image paths, in order, each once.
    Returns (paths, problems): an input that matches nothing is a problem, not an error."""
    extensions = tuple(extension.lower() for extension in extensions)
    paths, problems, seen = [], [], set()

    def add(path: str):
        if path not in seen:
            seen.add(path)
            paths.append(path)

    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                str(path) for path in Path(item).rglob("*") if path.is_file() and path.suffix.lower() in extensions
            )
            if not found:
                problems.append(f"{item}: no {'/'.join(extensions)} files in this folder")
            for path in found:
                add(path)
        elif os.path.exists(item):
            add(item)  # a file named explicitly is tried whatever its ending
        elif glob.has_magic(item):
            found = sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
            if not found:
                problems.append(f"{item}: the pattern matches no file")
            for path in found:
                add(path)
        else:
            problems.append(f"{item}: no such file or folder")
    return paths, problems


def load_image(path: str) -> tuple[Image.Image | None, str]:
    """Decode an image in full as RGB; returns (image, "") or (None, the reason it cannot be used)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB"), ""
    except UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError as error:
        return None, f"too large ({error})"
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        return None, f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def load_captioner(model_name_or_path: str, device: str | None = None, allow_pickle: bool = False):
    """The model (eval mode, on `device`) and its processor. A path that is clearly local (absolute, relative with
    `.`, or inside an existing folder) but is not a directory is an error here, not a Hub request. Weights load from
    safetensors only unless `allow_pickle`."""
    from cli_utils import missing_local_path
    from modeling_clipcap import ClipCapForCaptioning
    from processing_clipcap import ClipCapProcessor

    if missing_local_path(model_name_or_path):
        raise OSError(f"no model directory {model_name_or_path}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = ClipCapForCaptioning.from_pretrained(model_name_or_path, allow_pickle=allow_pickle).to(device).eval()
    processor = ClipCapProcessor.from_pretrained(model_name_or_path)
    return model, processor


@torch.no_grad()
def caption_images(model, processor, images: list[Image.Image], **generate_kwargs) -> list[str]:
    """Captions of PIL images (one generate() call; pass at most a batch)."""
    pixel_values = processor(images=list(images))["pixel_values"].to(model.device)
    return processor.batch_decode(model.generate(pixel_values, **generate_kwargs))


class CaptionWriter:
    """Writes each (path, caption) as it comes, in the chosen format, flushing after every batch."""

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


def caption_files(
    model, processor, paths: list[str], writer: CaptionWriter, batch_size: int, progress: bool, **generate_kwargs
) -> tuple[int, list[str]]:
    """Caption `paths` in batches, writing each batch as it is done. Returns (images captioned, paths skipped)."""
    from tqdm.auto import tqdm

    captioned, skipped = 0, []
    with tqdm(total=len(paths), unit="image", disable=not progress, file=sys.stderr) as bar:
        for first in range(0, len(paths), batch_size):
            batch = []
            for path in paths[first : first + batch_size]:
                image, reason = load_image(path)
                if image is None:
                    skipped.append(path)
                    bar.write(f"caption.py: skipped {path}: {reason}", file=sys.stderr)
                else:
                    batch.append((path, image))
            if batch:
                captions = caption_images(model, processor, [image for _, image in batch], **generate_kwargs)
                for (path, _), caption in zip(batch, captions, strict=True):
                    writer.write(path, caption)
                writer.flush()
                captioned += len(batch)
            bar.update(len(paths[first : first + batch_size]))
    return captioned, skipped


def parse_args(argv: list[str] | None = None):
    parser = HfArgumentParser(
        (CaptionArguments, GenerationArguments),
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all captioned, 1 some files skipped, 2 nothing could be done.",
    )
    parser.add_argument("model_name_or_path", help="A ClipCap model directory (run_train.py output) or Hub id.")
    parser.add_argument("inputs", nargs="+", help="Image files, folders and glob patterns.")
    args, generation, positional = parser.parse_args_into_dataclasses(args=argv)
    return positional.model_name_or_path, positional.inputs, args, generation


def main(argv: list[str] | None = None) -> int:
    try:
        model_name_or_path, inputs, args, generation = parse_args(argv)
    except ValueError as error:
        print(f"caption.py: {error}", file=sys.stderr)
        return EXIT_FAILED
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in args.extensions.replace(" ", "").split(","))
    paths, problems = find_images(inputs, extensions)
    for problem in problems:
        print(f"caption.py: {problem}", file=sys.stderr)
    if not paths:
        print("caption.py: no image to caption", file=sys.stderr)
        return EXIT_FAILED
    try:
        model, processor = load_captioner(model_name_or_path, args.device, args.allow_pickle)
    except (OSError, ValueError) as error:
        print(f"caption.py: cannot load the model {model_name_or_path}: {str(error).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    if generation.seed is not None:
        torch.manual_seed(generation.seed)
    kwargs = generation.generate_kwargs()

    # An --output file is written beside itself (OUTPUT.partial, batch by batch) and renamed over OUTPUT at the end,
    # so an interrupted run leaves the earlier OUTPUT intact and what it captioned in OUTPUT.partial.
    partial = f"{args.output}.partial" if args.output else None
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open(partial, "w", newline="")) if partial else sys.stdout
        writer = CaptionWriter(stream, args.format)
        captioned, skipped = caption_files(model, processor, paths, writer, args.batch_size, args.progress, **kwargs)
    if partial:
        os.replace(partial, args.output)
    seconds = time.perf_counter() - start
    print(
        f"caption.py: captioned {captioned} images in {seconds:.1f} s ({captioned / seconds:.2f} images/s), "
        f"skipped {len(skipped)}",
        file=sys.stderr,
    )
    return EXIT_SKIPPED if skipped or problems else EXIT_OK


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
