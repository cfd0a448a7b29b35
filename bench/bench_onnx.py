"""Captions/s of the PyTorch model against its ONNX export under onnxruntime, fp32 and int8; and what int8 costs.

    python bench/bench_onnx.py [--rounds 10] [--new_tokens 20] [--models demo,full] [--accuracy true]

Two models: the demo's (`outputs/demo`, trained; calibrated on `data/demo`'s training images) and the full-size
default config (MobileNetV2 at 224 px, MLP prefix of 10, DistilGPT2-shaped decoder; random weights: the shapes are
what matter for time; calibrated on noise). Each is exported by `clipcap.onnx_export` (fp32 and int8) into a
temporary directory. Four runtimes caption the same images: PyTorch fp32, PyTorch bf16 (only where this CPU computes
bf16 natively, `clipcap.precision.native_bf16`), onnxruntime fp32 and onnxruntime int8, all with torch's thread count,
at batch 1 and 32, greedy and beam 3, each caption exactly `--new_tokens` tokens (`min_new_tokens`, so that a
model's early EOS cannot make a runtime look fast). For each model and setting the runtimes run side by side
(`timing.side_by_side`: a warm-up, then `--rounds` rounds in a shuffled order); the table gives captions/s from the
medians and each runtime's ratio to PyTorch fp32 in the same run, and the file sizes of each graph set.

With `--accuracy` (default: when outputs/demo and data/demo exist) the demo model captions the 200 validation
scenes with its own generation config in each runtime: semantic accuracy by the checker and the share of captions
identical to PyTorch's. Writes bench/results/onnx.json and prints a Markdown table.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import ROOT, machine, side_by_side, write_results  # noqa: E402 - bench/ is the script directory

from clipcap.onnx_export import calibration_batches, export_onnx  # noqa: E402
from clipcap.onnx_runtime import ClipCapONNXCaptioner  # noqa: E402
from clipcap.precision import native_bf16  # noqa: E402
from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402
from processing_clipcap import ClipCapProcessor  # noqa: E402

DEMO_MODEL, DEMO_DATA = ROOT / "outputs" / "demo", ROOT / "data" / "demo"
SETTINGS = [(1, 1), (1, 3), (32, 1), (32, 3)]  # (batch, beams)


def runtimes(model_dir: Path, export_dir: Path) -> dict:
    """name -> an object with `generate(pixel_values, **kwargs)`: the runtimes compared."""
    threads = torch.get_num_threads()
    model = ClipCapForCaptioning.from_pretrained(model_dir).eval()
    found = {"PyTorch fp32": model}
    if native_bf16()[0]:
        found["PyTorch bf16"] = ClipCapForCaptioning.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    found["onnxruntime fp32"] = ClipCapONNXCaptioner.from_pretrained(export_dir, "fp32", threads)
    found["onnxruntime int8"] = ClipCapONNXCaptioner.from_pretrained(export_dir, "int8", threads)
    return found


def speed(model_dir: Path, export_dir: Path, image_size: int, rounds: int, new_tokens: int) -> dict:
    found = runtimes(model_dir, export_dir)
    generator = torch.Generator().manual_seed(0)
    results = {}
    for batch, beams in SETTINGS:
        pixel_values = torch.randn(batch, 3, image_size, image_size, generator=generator)
        kwargs = {"num_beams": beams, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}

        def caption(runtime):
            return lambda: runtime.generate(pixel_values, **kwargs)

        timings = side_by_side({name: caption(runtime) for name, runtime in found.items()}, rounds)
        base = timings["PyTorch fp32"]["median_s"]
        results[f"batch {batch}, {'greedy' if beams == 1 else f'beam {beams}'}"] = {
            name: {
                "captions_per_s": batch / timing["median_s"],
                "speedup_over_pytorch_fp32": base / timing["median_s"],
                **timing,
            }
            for name, timing in timings.items()
        }
        print(
            f"  batch {batch}, beams {beams}: "
            + ", ".join(f"{n} {batch / t['median_s']:.2f}/s" for n, t in timings.items())
        )
    return results


def accuracy(export_dir: Path) -> dict:
    """The demo model on the 200 validation scenes in each runtime, with its generation config."""
    import datasets

    from clipcap.metrics import scenes_of, semantic_accuracy
    from clipcap.synthetic import Scene

    validation = datasets.load_from_disk(str(DEMO_DATA))["validation"]
    scenes = [Scene.from_json(scene) for scene in scenes_of(validation)]
    processor = ClipCapProcessor.from_pretrained(DEMO_MODEL)
    pixel_values = processor(images=[image.convert("RGB") for image in validation["image"]])["pixel_values"]
    captions, results = {}, {}
    for name, runtime in runtimes(DEMO_MODEL, export_dir).items():
        start = time.perf_counter()
        ids = [runtime.generate(pixel_values[i : i + 50]) for i in range(0, len(pixel_values), 50)]
        captions[name] = [caption for batch in ids for caption in processor.batch_decode(batch)]
        reference = captions["PyTorch fp32"]
        results[name] = {
            "semantic_accuracy": semantic_accuracy(captions[name], scenes)["semantic_accuracy"],
            "identical_to_pytorch_fp32": sum(a == b for a, b in zip(captions[name], reference)) / len(reference),
            "seconds": time.perf_counter() - start,
        }
        print(f"  {name}: {results[name]}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--models", default="demo,full")
    parser.add_argument("--accuracy", choices=["true", "false"], default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    results = {"rounds": args.rounds, "new_tokens": args.new_tokens, "threads": torch.get_num_threads(), "models": {}}
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name in args.models.split(","):
            if name == "demo":
                if not (DEMO_MODEL / "model.safetensors").is_file() or not DEMO_DATA.is_dir():
                    print("demo: skipped (no outputs/demo or data/demo: run `bash demo.sh`)")
                    continue
                model_dir = DEMO_MODEL
                calibration = calibration_batches(DEMO_DATA, ClipCapProcessor.from_pretrained(DEMO_MODEL))
            else:
                model_dir = scratch / "full"
                torch.manual_seed(0)
                model = ClipCapForCaptioning(ClipCapConfig(encoder_pretrained=False, decoder_name_or_path=None))
                model.save_pretrained(model_dir)
                ClipCapProcessor.from_config(model.config).save_pretrained(model_dir)
                noise = np.random.default_rng(0)
                size = model.config.image_size
                calibration = [noise.standard_normal((16, 3, size, size), dtype=np.float32) for _ in range(4)]
            start = time.perf_counter()
            section = export_onnx(model_dir, scratch / f"{name}-onnx", "int8", calibration)
            config = json.loads((model_dir / "config.json").read_text())
            print(f"{name}: exported in {time.perf_counter() - start:.0f} s; bytes {section['bytes']}")
            results["models"][name] = {
                "bytes": section["bytes"],
                "int8_over_fp32_bytes": section["bytes"]["int8"] / section["bytes"]["fp32"],
                "speed": speed(
                    model_dir, scratch / f"{name}-onnx", config["image_size"], args.rounds, args.new_tokens
                ),
            }
            if name == "demo" and args.accuracy != "false":
                results["models"][name]["accuracy"] = accuracy(scratch / f"{name}-onnx")
    path = write_results("onnx", results, args.output)
    print(markdown(results))
    print(f"wrote {path}")


def markdown(results: dict) -> str:
    lines = [
        f"Captions/s ({results['new_tokens']} tokens each, {results['threads']} threads; x: over PyTorch fp32)",
        "",
    ]
    for name, model in results["models"].items():
        runtimes_ = list(next(iter(model["speed"].values())))
        lines += [
            f"**{name}** (fp32 {model['bytes']['fp32'] / 1e6:.1f} MB, int8 {model['bytes']['int8'] / 1e6:.1f} MB:"
            f" {model['int8_over_fp32_bytes']:.2f}x)",
            "",
            "| setting | " + " | ".join(runtimes_) + " |",
            "| --- |" + " --- |" * len(runtimes_),
        ]
        for setting, row in model["speed"].items():
            cells = [f"{row[r]['captions_per_s']:.2f} ({row[r]['speedup_over_pytorch_fp32']:.2f}x)" for r in runtimes_]
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
        if "accuracy" in model:
            lines += [
                "",
                "| runtime | semantic accuracy (200 scenes) | captions identical to PyTorch fp32 |",
                "| --- | --- | --- |",
            ]
            lines += [
                f"| {r} | {a['semantic_accuracy']:.3f} | {a['identical_to_pytorch_fp32']:.1%} |"
                for r, a in model["accuracy"].items()
            ]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
