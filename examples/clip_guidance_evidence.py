#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Does CLIP guidance make the demo's captions truer? Each arm at its own best learning rate, two seeds.

A recipe that loses at another recipe's learning rate has not lost: the demo's former 2e-3 suited the guided captioner
and wrecked its CE-only twin (0.018 against 0.485 at its own best rate). So every arm here is the demo's config
(`configs/demo.yaml`) with only the CLIP terms changed, trained over the same learning-rate grid with two seeds
(`examples/lr_sweep.py`), and compared at its own best rate:

  * CE only (`--lambda_cos 0 --lambda_con 0`), L_cos alone (`--lambda_con 0`), L_con alone (`--lambda_cos 0`), and
    CLIP-guided (both, the demo's recipe).

It writes the sweep table, then each arm's best runs (both seeds) scored with `run_eval.py` under the training teacher
and under a held-out teacher (the demo teacher's recipe with another seed, which training never saw) with the
seeds' mean, and the learning curves of the best runs:

    bash demo.sh && .venv/bin/python examples/clip_guidance_evidence.py   # about 2.5 hours on 2 CPU cores

`--arms` and `--learning_rates` narrow it; `--jobs 2` runs two trainings at a time. Every run is skipped when its
output exists. Outputs: outputs/sweeps/*, outputs/demo-teacher-heldout, outputs/evidence/{clip_guidance.md,
semantic_accuracy.png}.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lr_sweep  # noqa: E402
from evidence import GUIDANCE_ARMS, SCORERS, evaluate_under_scorers, mean_results, train_heldout_scorer, write_table  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from clipcap.report import comparison_table, plot_metric_curves  # noqa: E402

CONFIG = "configs/demo.yaml"
ARMS = GUIDANCE_ARMS
ERRORS = ("wrong_kind", "wrong_colour", "wrong_count", "wrong_relation", "missing_object", "unknown_object")


@dataclass
class EvidenceArguments:
    arms: str = field(default=",".join(ARMS), metadata={"help": "Comma-separated arms to run, of: " + ", ".join(ARMS)})
    learning_rates: str = field(default=",".join(lr_sweep.LEARNING_RATES), metadata={"help": "The grid."})
    seeds: str = field(default=",".join(map(str, lr_sweep.SEEDS)), metadata={"help": "Comma-separated seeds."})
    output_dir: str = field(default="outputs/sweeps", metadata={"help": "Where the sweeps train."})
    jobs: int = field(default=1, metadata={"help": "Trainings at a time, sharing the cores."})
    heldout: bool = field(default=True, metadata={"help": "Also score the best runs under a held-out teacher."})


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(EvidenceArguments).parse_args_into_dataclasses(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if unknown := [arm for arm in arms if arm not in ARMS]:
        print(f"unknown arms {unknown}; known: {', '.join(ARMS)}", file=sys.stderr)
        return 1
    learning_rates = tuple(lr.strip() for lr in args.learning_rates.split(","))
    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    # 1. Every arm over the grid and seeds.
    sweeps = {
        arm: lr_sweep.sweep(CONFIG, arm, ARMS[arm], learning_rates, seeds, args.output_dir, args.jobs) for arm in arms
    }
    table = (
        lr_sweep.machine_line(args.jobs) + "\n" + lr_sweep.sweep_table([r for runs in sweeps.values() for r in runs])
    )
    # 2. Each arm's best runs under both scorers, and the learning curves of the best runs.
    best = {}
    for arm, runs in sweeps.items():
        learning_rate = lr_sweep.best_learning_rate(runs)
        best[f"{arm}, lr {learning_rate}"] = [run for run in runs if run.learning_rate == learning_rate]
    table += "\n" + lr_sweep.curve_table(best)
    if args.heldout:
        train_heldout_scorer()
        directories = {name: [str(run.output_dir) for run in runs] for name, runs in best.items()}
        results = evaluate_under_scorers({d: d for ds in directories.values() for d in ds})
        rows = [("semantic accuracy", "semantic_accuracy", "training teacher")]
        rows += [(f"  {n} object{'s' * (n > 1)}", f"semantic_accuracy_{n}obj", "training teacher") for n in (1, 2, 3)]
        rows += [(f"  errors: {e}", f"errors_{e}", "training teacher") for e in ERRORS]
        rows += [(f"CLIP-S ({scorer})", "clip_s", scorer) for scorer in SCORERS]
        rows += [(f"RefCLIP-S ({scorer})", "ref_clip_s", scorer) for scorer in SCORERS]
        rows += [("CIDEr", "cider", "training teacher"), ("BLEU-4", "bleu_4", "training teacher")]
        table += "\nEach arm at its best learning rate, the mean of its seeds:\n\n"
        table += comparison_table(mean_results(results, directories), list(directories), rows)
    curves = write_table("clip_guidance.md", table).with_name("semantic_accuracy.png")
    runs = {f"{name}, seed {run.seed}": str(run.output_dir) for name, runs in best.items() for run in runs}
    plot_metric_curves(runs, curves)
    print(f"Written: {curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
