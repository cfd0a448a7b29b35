# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""What the evidence scripts share: running a project script, the held-out scorer, and `run_eval.py` of every model
under every scorer. Each step is skipped when its output exists."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The demo teacher, which training saw, and a held-out one: the demo teacher's recipe with another seed.
SCORERS = {"training teacher": "outputs/demo-teacher", "held-out teacher": "outputs/demo-teacher-heldout"}


EVIDENCE = ROOT / "outputs" / "evidence"
# The CLIP guidance's arms: the demo's config (configs/demo.yaml) with these flags; the learning rate and seed come
# from the sweep (examples/lr_sweep.py).
GUIDANCE_ARMS = {
    "CE only": ["--lambda_cos", "0", "--lambda_con", "0"],
    "L_cos only": ["--lambda_con", "0"],
    "L_con only": ["--lambda_cos", "0"],
    "CLIP-guided": [],
}


def demo_config_overrides(changes: dict) -> str:
    """`configs/demo.yaml`'s `config_overrides` with `changes`, as run_train.py's `key=value,...` flag (the flag
    replaces the file's whole mapping)."""
    overrides = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["config_overrides"] | changes

    def items(mapping, prefix=""):
        for key, value in mapping.items():
            if isinstance(value, dict):
                yield from items(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}={'null' if value is None else value}"

    return ",".join(items(overrides))


def write_table(name: str, table: str) -> Path:
    """Write an evidence script's Markdown `table` to outputs/evidence/NAME and print it."""
    EVIDENCE.mkdir(parents=True, exist_ok=True)
    (EVIDENCE / name).write_text(table)
    print(table, end="")
    print(f"Written: {EVIDENCE / name}")
    return EVIDENCE / name


def run(*command: str) -> None:
    """`python COMMAND...` from the repository root; a failure stops the evidence script."""
    print("+", " ".join(command), flush=True)
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True)


def train_heldout_scorer() -> None:
    if not (ROOT / SCORERS["held-out teacher"] / "open_clip_model.safetensors").exists():
        run(
            "train_clip_teacher.py",
            "configs/demo_teacher.yaml",
            "--seed",
            "1",
            "--output_dir",
            SCORERS["held-out teacher"],
        )


def train(config: str, output_dir: str, *flags: str) -> None:
    """`accelerate launch run_train.py CONFIG --output_dir OUTPUT_DIR FLAGS...`, unless the model is there."""
    if not (ROOT / output_dir / "model.safetensors").exists():
        run(
            "-m", "accelerate.commands.launch", "--config_file", "accelerate_config.yaml", "run_train.py",
            config, "--output_dir", output_dir, *flags,
        )  # fmt: skip


def evaluate_under_scorers(runs: dict[str, str], scorers: dict[str, str] = SCORERS) -> dict[tuple[str, str], dict]:
    """`run_eval.py` of each model directory in `runs` (name -> directory) under each of `scorers` (default
    `SCORERS`): written to `DIR/eval` (training teacher) and `DIR/eval-heldout`; returns each model's scores by
    (name, scorer)."""
    results = {}
    for name, model_dir in runs.items():
        for scorer, teacher_dir in scorers.items():
            out = Path(model_dir, "eval" if scorer == "training teacher" else "eval-heldout")
            if not (ROOT / out / "eval_results.json").exists():
                run("run_eval.py", model_dir, "--clip_model", "ClipCap-LiT-S-MobileNetV2", "--clip_pretrained", teacher_dir,
                    "--output_dir", str(out))  # fmt: skip
            results[name, scorer] = json.loads((ROOT / out / "eval_results.json").read_text())["results"]["model"]
    return results


def mean_results(
    results: dict[tuple[str, str], dict], runs: dict[str, list[str]], scorers: dict[str, str] = SCORERS
) -> dict[tuple[str, str], dict]:
    """Each arm's scores under each scorer as the mean over its seeds' runs (`results` is keyed by run directory)."""
    means = {}
    for arm, directories in runs.items():
        for scorer in scorers:
            scores = [results[directory, scorer] for directory in directories]
            keys = [key for key in scores[0] if all(isinstance(s.get(key), (int, float)) for s in scores)]
            means[arm, scorer] = {key: statistics.fmean(float(s[key]) for s in scores) for key in keys}
    return means
