"""The demo teacher's training step (configs/demo_teacher.yaml: its batch with counterfactual images and hard negative
captions, `batch_loss`, backward, AdamW) with NCHW and with channels-last image input, side by side.

    python bench/bench_teacher_step.py [--rounds 10]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/bench_teacher_step.py    # the AVX2 code path

Needs data/demo (`python prepare_dataset.py configs/demo_data.yaml`) and the offline weights. Six batches of the
training data are made once; after two warm-up steps each, the two layouts alternate in a shuffled order for
`--rounds` rounds, one step each. Prints the medians and their ratio, and writes bench/results/teacher_step.json
(or `--output`). Sequential demo runs cannot show a 15% step difference: these cores drift by 20% from run to run.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import side_by_side, write_results  # noqa: E402 - bench/ is the script directory

import train_clip_teacher  # noqa: E402
from clipcap.lit_teacher import create_teacher_model  # noqa: E402
from clipcap.teacher import register_model_configs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    args = train_clip_teacher.parse_args(["configs/demo_teacher.yaml", "--output_dir", "/tmp/bench-teacher-step"])
    train, _ = train_clip_teacher.load_data(args)
    register_model_configs()
    torch.manual_seed(0)
    model, preprocess, tokenizer, _ = create_teacher_model(
        args.model, args.image_tower_pretrained, args.text_tower_pretrained, "cpu"
    )
    optimizer, _ = train_clip_teacher.make_optimizer(model, args, 1000)
    make_batch = train_clip_teacher.BatchMaker(train, args)
    batches = [make_batch(list(range(i * args.batch_size, (i + 1) * args.batch_size))) for i in range(6)]
    model.train()
    channels_last = train_clip_teacher.preprocess_images

    def nchw(preprocess, images):
        return torch.stack([preprocess(image.convert("RGB")) for image in images])

    def step(layout):
        batch = batches[step.count % len(batches)]
        step.count += 1
        train_clip_teacher.preprocess_images = layout
        try:
            loss, _ = train_clip_teacher.batch_loss(model, tokenizer, preprocess, batch, args, torch.device("cpu"))
        finally:
            train_clip_teacher.preprocess_images = channels_last
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step.count = 0
    for _ in range(2):
        step(nchw), step(channels_last)
    results = side_by_side(
        {"nchw": lambda: step(nchw), "channels_last": lambda: step(channels_last)}, options.rounds, warmup=False
    )
    ratio = results["nchw"]["median_s"] / results["channels_last"]["median_s"]
    for name, timing in results.items():
        print(f"{name}: median {timing['median_s']:.3f} s a step")
    print(f"channels-last is {ratio:.2f}x as fast")
    path = write_results("teacher_step", {"steps": results, "nchw_over_channels_last": ratio}, options.output)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
