#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Caption image files with a trained ClipCap model (a directory or a Hub id).

    python caption.py outputs/demo photo.jpg                              # one file
    python caption.py outputs/demo images/ --format jsonl --output captions.jsonl
    python caption.py outputs/demo "shots/**/*.png" --num_beams 1       # glob (quoted), greedy
    python caption.py outputs/demo images/ --do_sample --top_p 0.9 --seed 0
    python caption.py outputs/demo-onnx images/ --backend onnx --onnx_dtype int8   # export_onnx.py's graphs

Inputs are files, folders (searched recursively for the `--extensions`) and glob patterns, in the order given.
Images are decoded and captioned in batches of `--batch_size`; decoding settings default to the model's
`generation_config` (what `run_train.py` evaluated with). A file that cannot be read as an image is reported on
stderr and skipped; the others are still captioned, and each batch is written as soon as it is done.

Output (stdout, or `--output`): `text` is one `path<TAB>caption` line per image, `jsonl` one
`{"path": ..., "caption": ...}` object per line, `csv` a `path,caption` table with a header.

Exit status: 0 when every input was captioned; 1 when some were skipped (files that are not readable images, inputs
that match no file; the rest are captioned and written); 2 when nothing could be done (bad arguments, no image
found, the model does not load, or not one image could be read).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from clipcap.images import IMAGE_EXTENSIONS, find_images, load_image
from clipcap.inference import BACKENDS, CaptionWriter, GenerationArguments, caption_batches, load_captioner
from clipcap.memory import keep_freed_memory

EXIT_OK, EXIT_SKIPPED, EXIT_FAILED = 0, 1, 2


@dataclass
class CaptionArguments:
    batch_size: int = field(default=32, metadata={"help": "Images per generate() call."})
    format: str = field(default="text", metadata={"help": "text (path<TAB>caption), jsonl or csv."})
    output: str | None = field(default=None, metadata={"help": "Write here instead of stdout."})
    extensions: str = field(
        default=",".join(IMAGE_EXTENSIONS), metadata={"help": "File endings searched for in folders."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if any)."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "pytorch (a saved model), onnx (an export_onnx.py directory, onnxruntime on the CPU) or auto "
            "(whichever the directory holds)."
        },
    )
    onnx_dtype: str = field(default="fp32", metadata={"help": "The onnx backend's graphs: fp32 or int8."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar on stderr."})
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Also load pickled weight files (.bin/.pt), which can run code; only for files you trust."},
    )

    def __post_init__(self):
        if self.format not in CaptionWriter.FORMATS:
            raise ValueError(f"--format must be {', '.join(CaptionWriter.FORMATS)}, not {self.format!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, not {self.batch_size}")


def parse_args(argv: list[str] | None = None):
    parser = HfArgumentParser(
        (CaptionArguments, GenerationArguments),
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all captioned, 1 some files skipped, 2 nothing could be done.",
    )
    parser.add_argument(
        "model_name_or_path", help="A ClipCap model directory (run_train.py output), Hub id, or ONNX export directory."
    )
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
    for problem in problems:  # an input that matches no file: skipped like an unreadable file, and counted
        print(f"caption.py: skipped {problem}", file=sys.stderr)
    if not paths:
        print("caption.py: no image to caption", file=sys.stderr)
        return EXIT_FAILED
    try:
        model, processor = load_captioner(
            model_name_or_path, args.device, args.allow_pickle, args.backend, args.onnx_dtype
        )
    except (OSError, ValueError, ImportError) as error:
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
        captioned, skipped, loaded = 0, [], []

        def images():  # the readable images, in order; the others reported and skipped
            for path in paths:
                image, reason = load_image(path)
                if image is None:
                    skipped.append(path)
                    tqdm.write(f"caption.py: skipped {path}: {reason}", file=sys.stderr)
                else:
                    loaded.append(path)
                    yield image

        batches = caption_batches(model, processor, images(), args.batch_size, args.progress, len(paths), **kwargs)
        for captions in batches:  # each batch written as soon as it is captioned
            for path, caption in zip(loaded[captioned:], captions, strict=True):
                writer.write(path, caption)
            writer.flush()
            captioned += len(captions)
    if partial:
        os.replace(partial, args.output)
    seconds = time.perf_counter() - start
    print(
        f"caption.py: captioned {captioned} images in {seconds:.1f} s ({captioned / seconds:.2f} images/s), "
        f"skipped {len(skipped) + len(problems)} ({len(skipped)} unreadable files, {len(problems)} inputs that "
        "match no file)",
        file=sys.stderr,
    )
    if not captioned:
        return EXIT_FAILED
    return EXIT_SKIPPED if skipped or problems else EXIT_OK


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
