"""Smoke example: a small ClipCap learns to caption four drawn images, offline, in well under a minute on a CPU.

    python examples/overfit_smoke.py [--steps 300] [--learning_rate 1e-3] [--seed 0] [--output_dir outputs/smoke]

It builds a small model from a config (MobileNetV2 at 64 px, a 2-layer GPT-2 with the real GPT-2 vocabulary), trains
it with the plain cross-entropy of `ClipCapForCaptioning.forward` on four images of coloured shapes, saves model and
processor, reloads them with `from_pretrained`, and prints beam-search captions next to the references. It is the
foundation's end-to-end check; the CLIP-guided training lives in `run_train.py`.
"""

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402
from processing_clipcap import ClipCapProcessor  # noqa: E402

SCENES = [
    ("red", "ellipse", "a red round microwave oven"),
    ("blue", "rectangle", "a blue square refrigerator"),
    ("green", "ellipse", "a green round kettle"),
    ("yellow", "rectangle", "a yellow square toaster"),
]


def draw(colour: str, shape: str) -> Image.Image:
    image = Image.new("RGB", (96, 96), "white")
    getattr(ImageDraw.Draw(image), shape)((16, 16, 80, 80), fill=colour)
    return image


def main(
    steps: int = 300, output_dir: str = "outputs/smoke", seed: int = 0, learning_rate: float = 1e-3
) -> list[tuple[str, str]]:
    """Train, save, reload, caption. 300 steps at 1e-3 caption all four images right for each of the seeds 0-7; the
    earlier 150 steps at 3e-3 did for some seeds only (two or three of four images for the others), so a change of
    float rounding anywhere could flip the result."""
    torch.manual_seed(seed)
    config = ClipCapConfig(
        text_config={"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 64},
        image_size=64,
        prefix_length=4,
        teacher_embed_dim=0,
        encoder_pretrained=False,
        decoder_name_or_path=None,
    )
    model = ClipCapForCaptioning(config)
    processor = ClipCapProcessor.from_config(config, max_caption_length=16)
    images = [draw(colour, shape) for colour, shape, _ in SCENES]
    references = [caption for _, _, caption in SCENES]
    batch = processor(images=images, text=references)

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for step in range(1, steps + 1):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")

    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    model = ClipCapForCaptioning.from_pretrained(output_dir)
    processor = ClipCapProcessor.from_pretrained(output_dir)
    generated = model.generate(processor(images=images)["pixel_values"], num_beams=3, max_new_tokens=12)
    captions = processor.batch_decode(generated)
    for caption, reference in zip(captions, references, strict=True):
        print(f"{'ok ' if caption == reference else 'BAD'} generated: {caption!r:40}  reference: {reference!r}")
    return list(zip(captions, references, strict=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--output_dir", default="outputs/smoke")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = main(args.steps, args.output_dir, args.seed, args.learning_rate)
    sys.exit(0 if all(caption == reference for caption, reference in pairs) else 1)
