"""The demo captioner's two prefixes side by side: 8 learned queries (ClipCap's, the default) against the 4x4 grid
of image tokens itself with 2-D positions (`mapper_prefix: grid`, `prefix_length: 16`), on this CPU.

    python bench/bench_prefix.py [--repeats 10] [--batch_size 32]

A training step each (`configs/demo.yaml`'s model, random weights, `--batch_size` 128 px images with 40-token captions:
forward, loss, backward, AdamW), run in alternation (`timing.side_by_side`), and a greedy `generate` of 20 new tokens
for the same images; the grid prefix puts 16 embeddings ahead of the caption instead of 8. Prints a table and writes
bench/results/prefix.json.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import demo_captioner_step, side_by_side, write_results  # noqa: E402 - bench/ is the script directory

PREFIXES = {"8 learned queries": {}, "4x4 grid": {"mapper_prefix": "grid", "prefix_length": 16}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", help="Where to write the JSON (default bench/results/prefix.json).")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    functions = {}
    for label, overrides in PREFIXES.items():
        step = demo_captioner_step(args.batch_size, generator, **overrides)
        pixel_values = step.inputs["pixel_values"]

        def generate(model=step.model, pixel_values=pixel_values):
            with torch.inference_mode():
                model.eval().generate(pixel_values=pixel_values, max_new_tokens=20, num_beams=1, do_sample=False)
            model.train()

        functions[f"training step, {label}"] = step
        functions[f"greedy generate, {label}"] = generate
    timings = side_by_side(functions, args.repeats)
    parts = ("training step", "greedy generate")
    ratios = {
        part: timings[f"{part}, 4x4 grid"]["median_s"] / timings[f"{part}, 8 learned queries"]["median_s"]
        for part in parts
    }
    path = write_results(
        "prefix", {"batch_size": args.batch_size, "steps": timings, "grid_over_queries": ratios}, args.output
    )
    print(f"| batch {args.batch_size}, 128 px, fp32 | 8 learned queries s | 4x4 grid s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for part in parts:
        queries, grid = (timings[f"{part}, {label}"]["median_s"] for label in PREFIXES)
        print(f"| {part} | {queries:.3f} | {grid:.3f} | {ratios[part]:.2f}x |")
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
