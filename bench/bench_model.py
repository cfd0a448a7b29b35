"""Model size and CPU speed of the default ClipCap (MobileNetV2 -> MLP mapper -> DistilGPT2-shaped decoder).

    python bench/bench_model.py [--repeats 7] [--batch_size 8] [--caption_tokens 20] [--new_tokens 20]

Measures, with random weights (the shapes are what matter for time):
  * parameter counts of encoder, mapper, decoder (tied LM head counted once), teacher head, total;
  * one training step at `--batch_size`: forward, cross-entropy, backward, AdamW step;
  * beam-5 generation for `--batch_size` images, exactly `--new_tokens` new tokens each (min = max).
Times are medians over `--repeats` runs after one warm-up. Prints a table and writes bench/results/model.json.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import machine, median_seconds  # noqa: E402 - bench/ is the script directory

from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--caption_tokens", type=int, default=20)
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--num_beams", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "model.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    config = ClipCapConfig(encoder_pretrained=False, decoder_name_or_path=None)
    model = ClipCapForCaptioning(config)
    parts = {
        name: sum(p.numel() for p in getattr(model, name).parameters())
        for name in ("encoder", "mapper", "decoder", "teacher_head")
    }
    parts["total"] = model.num_parameters()

    batch = args.batch_size
    pixel_values = torch.randn(batch, 3, config.image_size, config.image_size)
    input_ids = torch.randint(0, 50256, (batch, args.caption_tokens))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def train_step():
        model.train()
        loss = model(pixel_values=pixel_values, input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def beam_generate():
        model.eval()
        model.generate(
            pixel_values, num_beams=args.num_beams, min_new_tokens=args.new_tokens, max_new_tokens=args.new_tokens
        )

    train_median, train_times = median_seconds(train_step, args.repeats)
    generate_median, generate_times = median_seconds(beam_generate, args.repeats)

    results = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "parameters": parts,
        "train_step": {
            "batch_size": batch,
            "caption_tokens": args.caption_tokens,
            "median_s": train_median,
            "times_s": train_times,
        },
        "beam_generation": {
            "images": batch,
            "num_beams": args.num_beams,
            "new_tokens": args.new_tokens,
            "median_s": generate_median,
            "captions_per_s": batch / generate_median,
            "times_s": generate_times,
        },
    }
    print(f"{'part':<14}{'parameters':>14}")
    for name, count in parts.items():
        print(f"{name:<14}{count:>14,}")
    print(f"\ntraining step, batch {batch} x {args.caption_tokens} caption tokens: median {train_median:.3f} s")
    print(
        f"beam-{args.num_beams} generation, {batch} images x {args.new_tokens} new tokens: median "
        f"{generate_median:.3f} s ({batch / generate_median:.1f} captions/s)   [{args.repeats} runs each]"
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
