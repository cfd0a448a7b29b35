#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""A recipe over a learning-rate grid and seeds: the table that makes a comparison fair.

Two recipes compared at one learning rate compare the learning rate as much as the recipes: the demo's 2e-3 suits the
CLIP-guided captioner and wrecks its CE-only twin. So each arm of a comparison is trained over the same grid of
learning rates with two seeds (`run_train.py CONFIG FLAGS --learning_rate LR --seed S`, nothing else changed), and
compared at its own best one: the highest mean semantic accuracy over the seeds (the checker's, on the validation
scenes; the lower rate where two tie). The table gives both seeds and their mean, 1 / 2 / 3 objects, the checker's
errors by kind and each run's training time; `--curve` adds the learning curve of every evaluation the runs logged.

    python examples/lr_sweep.py configs/demo.yaml --arm guided
    python examples/lr_sweep.py configs/demo.yaml --arm "CE only" --lambda_cos 0 --lambda_con 0
    python examples/lr_sweep.py configs/demo.yaml --arm guided --learning_rates 5e-4 --max_steps 1400 --eval_steps 175 --curve

Flags this script does not know go to `run_train.py`. Each run trains in OUTPUT_DIR/ARM/lr<LR>-seed<S> and is skipped
when its model is there (an interrupted one resumes from its checkpoint); its log is train.log beside it. The table is
written to OUTPUT_DIR/ARM/sweep.md. `examples/clip_guidance_evidence.py` and `examples/scst_evidence.py` sweep each of
their arms with this module.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipcap.precision import describe_cpu  # noqa: E402
from clipcap.report import metric_series, plot_metric_curves, read_log_history  # noqa: E402

LEARNING_RATES = ("2e-4", "5e-4", "1e-3", "2e-3")
SEEDS = (0, 1)
# The checker's error kinds the tables show, most frequent first in the demo.
ERRORS = ("wrong_relation", "wrong_count", "missing_object", "wrong_colour", "wrong_kind")
ERROR_HEADER = "relation / count / missing / colour / kind"
CURVE_KEYS = ("semantic_accuracy", *(f"semantic_accuracy_{n}obj" for n in (1, 2, 3)), *(f"errors_{e}" for e in ERRORS))


@dataclass
class Run:
    """One trained run of a sweep: its arm, learning rate and seed, and what `run_train.py` wrote for it."""

    arm: str
    learning_rate: str
    seed: int
    output_dir: Path
    metrics: dict = field(default_factory=dict)  # eval_results.json: the last evaluation, keys without "eval_"
    train_seconds: float | None = None  # train_results.json's train_runtime (the evaluations during training included)

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]


def run_dir(output_dir: str | Path, arm: str, learning_rate: str, seed: int) -> Path:
    """Where a run of the sweep trains: OUTPUT_DIR/<arm as a file name>/lr<LR>-seed<S>."""
    return Path(output_dir).resolve() / slug(arm) / f"lr{learning_rate}-seed{seed}"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", name).strip("-").lower()


def read_run(run: Run) -> Run:
    """Fill `run` from its directory: the final evaluation (eval_results.json) and the training time."""
    results = json.loads((run.output_dir / "eval_results.json").read_text())
    run.metrics = {key.removeprefix("eval_"): value for key, value in results.items()}
    train_results = run.output_dir / "train_results.json"
    if train_results.exists():
        run.train_seconds = json.loads(train_results.read_text()).get("train_runtime")
    return run


def train(config: str, run: Run, flags: list[str], threads: int) -> Run:
    """`accelerate launch run_train.py CONFIG FLAGS --learning_rate LR --seed S --output_dir DIR` with `threads`
    threads, its output in DIR/train.log, unless DIR has its final evaluation already."""
    if not (run.output_dir / "eval_results.json").exists():
        run.output_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_config.yaml"),
            str(ROOT / "run_train.py"), str(Path(config).resolve()), *flags,
            "--learning_rate", run.learning_rate, "--seed", str(run.seed), "--output_dir", str(run.output_dir),
        ]  # fmt: skip
        print(f"+ {' '.join(command[1:])}", flush=True)
        with (run.output_dir / "train.log").open("a") as log:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            finished = subprocess.run(command, check=False, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if finished.returncode:
            raise RuntimeError(
                f"{run.arm}, lr {run.learning_rate}, seed {run.seed} failed: {run.output_dir}/train.log"
            )
    read_run(run)
    print(
        f"{run.arm}, lr {run.learning_rate}, seed {run.seed}: semantic accuracy {run['semantic_accuracy']:.3f}",
        flush=True,
    )
    return run


def sweep(
    config: str,
    arm: str,
    flags: list[str] = (),
    learning_rates: tuple[str, ...] = LEARNING_RATES,
    seeds: tuple[int, ...] = SEEDS,
    output_dir: str | Path = "outputs/sweeps",
    jobs: int = 1,
) -> list[Run]:
    """Train `config` with `flags` at every learning rate and seed (each skipped when done), `jobs` runs at a time
    sharing the machine's cores, and return the runs read back from their directories."""
    runs = [
        Run(arm, learning_rate, seed, run_dir(output_dir, arm, learning_rate, seed))
        for learning_rate in learning_rates
        for seed in seeds
    ]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda run: train(config, run, list(flags), threads), runs))


def by_learning_rate(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs grouped by learning rate, in the order they came, each group in seed order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.learning_rate, []).append(run)
    return {lr: sorted(group, key=lambda run: run.seed) for lr, group in groups.items()}


def mean(runs: list[Run], key: str) -> float:
    return statistics.fmean(run[key] for run in runs)


def best_learning_rate(runs: list[Run]) -> str:
    """The learning rate with the highest mean semantic accuracy over its seeds; of two that tie, the lower."""
    groups = by_learning_rate(runs)
    return max(sorted(groups, key=float), key=lambda lr: (round(mean(groups[lr], "semantic_accuracy"), 9), -float(lr)))


def _number(value: float, digits: int) -> str:
    """`digits` decimals; with 0, a count: whole as it is, a mean of counts to one decimal."""
    return f"{value:.{digits}f}" if digits else f"{value:g}" if value == int(value) else f"{value:.1f}"


def sweep_table(runs: list[Run]) -> str:
    """A Markdown table, a row per arm and learning rate: semantic accuracy of each seed and their mean, the mean of
    1 / 2 / 3 objects, the mean count of each error kind, and each seed's training time; each arm's best learning
    rate in bold, marked "best"."""
    arms: dict[str, list[Run]] = {}
    for run in runs:
        arms.setdefault(run.arm, []).append(run)
    seeds = sorted({run.seed for run in runs})
    header = (
        f"| arm | learning rate | semantic accuracy, seed {' / '.join(map(str, seeds))} (mean) | 1 / 2 / 3 objects "
        f"(mean) | errors: {ERROR_HEADER} (mean) | train time, s |"
    )
    lines = [header, "| --- | ---: | --- | --- | --- | --- |"]
    for arm, arm_runs in arms.items():
        best = best_learning_rate(arm_runs)
        for learning_rate, group in by_learning_rate(arm_runs).items():
            accuracy = " / ".join(f"{run['semantic_accuracy']:.3f}" for run in group)
            accuracy += f" ({mean(group, 'semantic_accuracy'):.3f})"
            means = {key: mean(group, key) for key in CURVE_KEYS if all(key in run.metrics for run in group)}
            objects = " / ".join(_cell(means, f"semantic_accuracy_{n}obj", 2) for n in (1, 2, 3))
            errors = " / ".join(_cell(means, f"errors_{kind}", 0) for kind in ERRORS)
            times = " / ".join("-" if run.train_seconds is None else f"{run.train_seconds:.0f}" for run in group)
            if learning_rate == best:
                learning_rate, accuracy = f"**{learning_rate}** (best)", f"**{accuracy}**"
            lines.append(f"| {arm} | {learning_rate} | {accuracy} | {objects} | {errors} | {times} |")
    return "\n".join(lines) + "\n"


def learning_curve(runs: list[Run]) -> dict[int, dict[str, float]]:
    """At each evaluation step that every run logged: the runs' mean semantic accuracy (overall and by objects, where
    the split has scenes of that many) and error counts, read from their trainer_state.json."""
    series: dict[int, dict[str, list[float]]] = {}
    for run in runs:
        found = read_log_history(str(run.output_dir))
        history = found[1] if found else []
        for key in CURVE_KEYS:
            for step, value in metric_series(history, f"eval_{key}"):
                series.setdefault(step, {}).setdefault(key, []).append(value)
    return {
        step: {key: statistics.fmean(values) for key, values in by_key.items() if len(values) == len(runs)}
        for step, by_key in sorted(series.items())
        if len(by_key.get("semantic_accuracy", [])) == len(runs)
    }


def curve_table(arms: dict[str, list[Run]]) -> str:
    """The learning curve of each arm (its runs' mean at each evaluation step) as one Markdown table."""
    lines = [
        f"| arm | step | semantic accuracy (mean) | 1 / 2 / 3 objects | errors: {ERROR_HEADER} |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for arm, runs in arms.items():
        for step, values in learning_curve(runs).items():
            objects = " / ".join(_cell(values, f"semantic_accuracy_{n}obj", 2) for n in (1, 2, 3))
            errors = " / ".join(_cell(values, f"errors_{kind}", 0) for kind in ERRORS)
            lines.append(f"| {arm} | {step} | {values['semantic_accuracy']:.3f} | {objects} | {errors} |")
    return "\n".join(lines) + "\n"


def _cell(values: dict[str, float], key: str, digits: int) -> str:
    return _number(values[key], digits) if key in values else "-"


def machine_line(jobs: int) -> str:
    shared = f"; {jobs} runs at a time shared the cores, so each run's time is about {jobs}x a lone run's" * (jobs > 1)
    return f"Machine: {describe_cpu()}{shared}\n"


def parse_args(argv: list[str] | None = None) -> tuple[SweepArguments, list[str]]:
    """The config file first, then the sweep's flags; flags it does not know are run_train.py's."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: lr_sweep.py CONFIG [--arm NAME] [--learning_rates LR,...] [run_train.py flags]")
    args, run_train_flags = HfArgumentParser(SweepArguments).parse_args_into_dataclasses(
        argv[1:], return_remaining_strings=True
    )
    args.config = argv[0]
    return args, run_train_flags


@dataclass
class SweepArguments:
    """What the sweep varies and where it writes; every other flag goes to run_train.py."""

    config: str | None = field(default=None, metadata={"help": "run_train.py's config file: the first argument."})
    arm: str = field(default="recipe", metadata={"help": "The recipe's name in the table."})
    learning_rates: str = field(default=",".join(LEARNING_RATES), metadata={"help": "Comma-separated grid."})
    seeds: str = field(default=",".join(map(str, SEEDS)), metadata={"help": "Comma-separated seeds."})
    output_dir: str = field(default="outputs/sweeps", metadata={"help": "Runs go to OUTPUT_DIR/ARM/lr<LR>-seed<S>."})
    jobs: int = field(default=1, metadata={"help": "Runs at a time, sharing the cores (each gets cores / jobs)."})
    curve: bool = field(
        default=False,
        metadata={
            "help": "Add the learning curve of every logged evaluation (the seeds' mean), and plot it: sweep.png."
        },
    )


def main(argv: list[str] | None = None) -> int:
    args, flags = parse_args(argv)
    learning_rates = tuple(lr.strip() for lr in args.learning_rates.split(",") if lr.strip())
    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    runs = sweep(args.config, args.arm, flags, learning_rates, seeds, args.output_dir, args.jobs)
    table = machine_line(args.jobs) + "\n" + sweep_table(runs)
    out = Path(args.output_dir) / slug(args.arm) / "sweep.md"
    if args.curve:
        table += "\n" + curve_table({args.arm: runs})
        labels = {f"{args.arm}, lr {run.learning_rate}, seed {run.seed}": str(run.output_dir) for run in runs}
        plot_metric_curves(labels, out.with_suffix(".png"))
    out.write_text(table)
    print(table + f"Written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
