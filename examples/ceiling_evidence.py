#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The captioner's ceiling: what 4x the demo's steps buy, and whether relations need another architecture.

The demo trains 350 steps because that is what fits in 15 minutes, and its accuracy is still rising there. This
trains the CLIP-guided demo recipe and the CE-only one as they were before this study (ClipCap's 8 learned queries as
the prefix), each at its own best learning rate from the sweep of `examples/clip_guidance_evidence.py`, for 1,400
steps with two seeds, evaluating every 175 steps, and writes the learning curve (semantic accuracy and the checker's
errors by kind). Next to them the architectural lever for relations, which won and is now the demo's prefix: the 4x4
grid of image tokens itself as the prefix, with 2-D positions (`mapper_prefix: grid`, `prefix_length: 16`); it is
first swept over the same grid at the demo's 350 steps, so that it too runs at its own best learning rate.

    .venv/bin/python examples/ceiling_evidence.py --jobs 2 --learning_rates "CLIP-guided=1e-3,CE only=5e-4"

About 1 h 40 min on 2 CPU cores. The two rates are the 8-query arms' best in the sweep of
`examples/clip_guidance_evidence.py`, run when the demo still had that prefix (docs/results.md); without
`--learning_rates` every arm is swept here first (about 50 minutes more).

Every run is skipped when its output exists. Outputs: outputs/sweeps/* (the lever's sweep), outputs/ceiling/*,
outputs/evidence/{ceiling.md, ceiling.png}.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lr_sweep  # noqa: E402
from evidence import GUIDANCE_ARMS, demo_config_overrides, write_table  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from clipcap.report import plot_metric_curves  # noqa: E402

CONFIG = "configs/demo.yaml"
GRID_PREFIX = "CLIP-guided with grid prefix"
# The demo before the ceiling study: ClipCap's 8 learned queries as the prefix (the demo now trains the lever).
QUERIES = ["--config_overrides", demo_config_overrides({"mapper_prefix": "queries", "prefix_length": 8})]
# name -> flags over the demo's config
ARMS = {
    "CLIP-guided": [*GUIDANCE_ARMS["CLIP-guided"], *QUERIES],
    "CE only": [*GUIDANCE_ARMS["CE only"], *QUERIES],
    GRID_PREFIX: ["--config_overrides", demo_config_overrides({"mapper_prefix": "grid", "prefix_length": 16})],
}
STEPS, EVERY = 1400, 175


@dataclass
class CeilingArguments:
    arms: str = field(default=",".join(ARMS), metadata={"help": "Comma-separated, of: " + ", ".join(ARMS)})
    sweep_dir: str = field(default="outputs/sweeps", metadata={"help": "The 350-step sweeps (best learning rates)."})
    output_dir: str = field(default="outputs/ceiling", metadata={"help": "Where the long runs train."})
    learning_rates: str = field(
        default="",
        metadata={
            "help": "ARM=LR pairs, comma-separated (e.g. 'CLIP-guided=1e-3,CE only=5e-4'): these arms' best rates, "
            "already measured by a sweep, so that it is not run again; every other arm is swept."
        },
    )
    jobs: int = field(default=1, metadata={"help": "Trainings at a time, sharing the cores."})


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(CeilingArguments).parse_args_into_dataclasses(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if unknown := [arm for arm in arms if arm not in ARMS]:
        print(f"unknown arms {unknown}; known: {', '.join(ARMS)}", file=sys.stderr)
        return 1
    given = dict(pair.rsplit("=", 1) for pair in args.learning_rates.split(",") if pair.strip())
    given = {arm.strip(): rate.strip() for arm, rate in given.items()}
    if unknown := [arm for arm in given if arm not in arms]:
        print(f"--learning_rates names arms not trained here: {unknown}", file=sys.stderr)
        return 1
    # 1. Each arm's best learning rate at the demo's 350 steps: the sweep (the lever's trained here if missing).
    swept = [arm for arm in arms if arm not in given]
    sweeps = {arm: lr_sweep.sweep(CONFIG, arm, ARMS[arm], output_dir=args.sweep_dir, jobs=args.jobs) for arm in swept}
    best = given | {arm: lr_sweep.best_learning_rate(runs) for arm, runs in sweeps.items()}
    table = lr_sweep.machine_line(args.jobs) + "\n"
    if given:
        table += "Learning rates given (from an earlier sweep): " + ", ".join(f"{a} {r}" for a, r in given.items())
        table += "\n"
    if sweeps:
        table += "\nAt the demo's 350 steps:\n\n"
        table += lr_sweep.sweep_table([run for runs in sweeps.values() for run in runs])
    # 2. Each arm at its best rate for 4x the steps, two seeds, evaluated every 175 steps.
    long_flags = ["--max_steps", str(STEPS), "--eval_steps", str(EVERY), "--save_steps", str(EVERY)]
    ceiling = {
        f"{arm}, lr {best[arm]}": lr_sweep.sweep(
            CONFIG, arm, [*ARMS[arm], *long_flags], (best[arm],), lr_sweep.SEEDS, args.output_dir, args.jobs
        )
        for arm in arms
    }
    table += f"\nAt {STEPS} steps, each arm at its best rate, the learning curve (the seeds' mean):\n\n"
    table += lr_sweep.curve_table(ceiling)
    table += f"\nAt {STEPS} steps, each seed:\n\n" + lr_sweep.sweep_table(
        [r for runs in ceiling.values() for r in runs]
    )
    curves = write_table("ceiling.md", table).with_name("ceiling.png")
    runs = {f"{name}, seed {run.seed}": str(run.output_dir) for name, runs in ceiling.items() for run in runs}
    plot_metric_curves(runs, curves)
    print(f"Written: {curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
