"""The demo teacher's training step (configs/demo_teacher.yaml: its batch with counterfactual images and hard negative
captions, `batch_loss`, backward, AdamW) under the levers of issue 41, side by side: NCHW image input (the demo's is
channels-last), gradient checkpointing, the text tower's lower layers locked.

    python bench/bench_teacher_step.py [--rounds 10] [--variants demo,nchw,...] [--flags "--text_length_groups 2" ...]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/bench_teacher_step.py    # the AVX2 code path

Needs data/demo (`python prepare_dataset.py configs/demo_data.yaml`) and the offline weights. Six batches of the
training data are made once; each variant has its own model (same seed) and optimizer; after two warm-up steps each,
the variants alternate in a shuffled order for `--rounds` rounds, one step each. Prints the medians and their ratio
to the demo's step, and writes bench/results/teacher_step.json (or `--output`). Sequential demo runs cannot show a
15% step difference: these cores drift by 20% from run to run. Peak memory is not measured here (one process holds
every variant): `python -m clipcap.memory -- python train_clip_teacher.py ...` does that per run.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import side_by_side, write_results  # noqa: E402 - bench/ is the script directory

import train_clip_teacher  # noqa: E402
from clipcap.lit_teacher import create_teacher_model  # noqa: E402
from clipcap.precision import describe_cpu, resolve_bf16  # noqa: E402
from clipcap.teacher import register_model_configs  # noqa: E402

# name: (the teacher's arguments changed from configs/demo_teacher.yaml, channels-last image input)
VARIANTS = {
    "demo": ({}, True),
    "fp32": ({"precision": "fp32"}, True),
    "text_one_group": ({"text_length_groups": 1}, True),
    "text_2_groups": ({"text_length_groups": 2}, True),
    "text_8_groups": ({"text_length_groups": 8}, True),
    "nchw": ({}, False),
    "checkpointing_image": ({"gradient_checkpointing": "image"}, True),
    "checkpointing_both": ({"gradient_checkpointing": "both"}, True),
    "text_last_3_layers": ({"lock_text_tower": True, "lock_text_unlocked_layers": 3}, True),
    "text_last_3_layers+checkpointing_image": (
        {"lock_text_tower": True, "lock_text_unlocked_layers": 3, "gradient_checkpointing": "image"},
        True,
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--flags",
        action="append",
        default=[],
        help="One more variant: train_clip_teacher.py flags over the demo's (e.g. \"--lock_text_tower "
        '--lock_text_unlocked_layers 3"); repeatable',
    )
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    names = [name for name in options.variants.split(",") if name]
    if unknown := [name for name in names if name not in VARIANTS]:
        parser.error(f"unknown variants {unknown}")
    if "demo" not in names:
        names.insert(0, "demo")
    demo_argv = ["configs/demo_teacher.yaml", "--output_dir", "/tmp/bench-teacher-step"]
    args = train_clip_teacher.parse_args(demo_argv)
    variants = {name: (dataclasses.replace(args, **VARIANTS[name][0]), VARIANTS[name][1]) for name in names}
    for flags in options.flags:
        variants[flags] = (train_clip_teacher.parse_args(demo_argv + flags.split()), True)
    train, _ = train_clip_teacher.load_data(args)
    register_model_configs()
    make_batch = train_clip_teacher.BatchMaker(train, args)
    batches = [make_batch(list(range(i * args.batch_size, (i + 1) * args.batch_size))) for i in range(6)]
    channels_last = train_clip_teacher.preprocess_images

    def nchw(preprocess, images):
        return torch.stack([preprocess(image.convert("RGB")) for image in images])

    def make_step(name):
        variant_args, is_channels_last = variants[name]
        torch.manual_seed(0)
        model, preprocess, tokenizer, _ = create_teacher_model(
            args.model, args.image_tower_pretrained, args.text_tower_pretrained, "cpu"
        )
        train_clip_teacher.configure_towers(model, variant_args)
        optimizer, _ = train_clip_teacher.make_optimizer(model, variant_args, 1000)
        bf16 = resolve_bf16(variant_args.precision, "cpu", f"the {name} variant's towers")
        model.train()
        count = 0

        def step():
            nonlocal count
            batch = batches[count % len(batches)]
            count += 1
            train_clip_teacher.preprocess_images = channels_last if is_channels_last else nchw
            try:
                loss, _ = train_clip_teacher.batch_loss(
                    model, tokenizer, preprocess, batch, variant_args, torch.device("cpu"), bf16=bf16
                )
            finally:
                train_clip_teacher.preprocess_images = channels_last
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return step, trainable

    steps, trainable = {}, {}
    for name in variants:
        steps[name], trainable[name] = make_step(name)
        for _ in range(2):
            steps[name]()
    results = side_by_side(steps, options.rounds, warmup=False)
    machine = describe_cpu()
    print(f"the demo teacher's step, {options.rounds} rounds, {machine}:")
    base = results["demo"]["median_s"]
    for name, timing in results.items():
        timing["trainable_parameters"] = trainable[name]
        timing["demo_over_this"] = base / timing["median_s"]
        print(
            f"  {name:40s} median {timing['median_s']:.3f} s a step, {base / timing['median_s']:.2f}x the demo's "
            f"speed, {trainable[name] / 1e6:.1f}M trainable parameters"
        )
    path = write_results("teacher_step", {"steps": results}, options.output)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
