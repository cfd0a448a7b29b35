#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Does CLIP guidance make the demo's captions truer? CE-only against CLIP-guided, graded by a second teacher.

A captioner trained toward a teacher should not be graded only by that teacher. This trains a held-out teacher (the
demo teacher's recipe with another seed, never seen in training), the CE-only twin of the demo captioner (same
config, seed and steps, `--lambda_cos 0 --lambda_con 0`), evaluates both captioners with `run_eval.py` under both
teachers, and writes a Markdown table and the learning curves (semantic accuracy against the step):

    bash demo.sh && .venv/bin/python examples/clip_guidance_evidence.py   # 15 minutes on 2 CPU cores after the demo

Every step is skipped when its output exists. Outputs: outputs/demo-ce, outputs/demo-teacher-heldout,
outputs/evidence/{evidence.md, semantic_accuracy.png}.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipcap.report import comparison_table, plot_metric_curves  # noqa: E402

RUNS = {"CE only": "outputs/demo-ce", "CLIP-guided": "outputs/demo"}
SCORERS = {"training teacher": "outputs/demo-teacher", "held-out teacher": "outputs/demo-teacher-heldout"}
ERRORS = ("wrong_kind", "wrong_colour", "wrong_count", "wrong_relation", "missing_object", "unknown_object")


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True)


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    # 1. The held-out scorer: the demo teacher's recipe, another seed.
    if not (ROOT / SCORERS["held-out teacher"] / "open_clip_model.safetensors").exists():
        run(
            "train_clip_teacher.py",
            "configs/demo_teacher.yaml",
            "--seed",
            "1",
            "--output_dir",
            SCORERS["held-out teacher"],
        )
    # 2. The CE-only twin of the demo captioner.
    if not (ROOT / RUNS["CE only"] / "model.safetensors").exists():
        run(
            "-m", "accelerate.commands.launch", "--config_file", "accelerate_config.yaml", "run_train.py",
            "configs/demo.yaml", "--lambda_cos", "0", "--lambda_con", "0", "--output_dir", RUNS["CE only"],
        )  # fmt: skip
    # 3. Both captioners under both scorers.
    results = {}
    for run_name, model_dir in RUNS.items():
        for scorer, teacher_dir in SCORERS.items():
            out = Path(model_dir, "eval" if scorer == "training teacher" else "eval-heldout")
            if not (ROOT / out / "eval_results.json").exists():
                run("run_eval.py", model_dir, "--clip_model", "ClipCap-LiT-S", "--clip_pretrained", teacher_dir,
                    "--output_dir", str(out))  # fmt: skip
            results[run_name, scorer] = json.loads((ROOT / out / "eval_results.json").read_text())["results"]["model"]
    # 4. The table and the curves.
    names = list(RUNS)
    rows = [("semantic accuracy", "semantic_accuracy", "training teacher")]
    rows += [(f"  {n} object{'s' * (n > 1)}", f"semantic_accuracy_{n}obj", "training teacher") for n in (1, 2, 3)]
    rows += [(f"  errors: {e}", f"errors_{e}", "training teacher") for e in ERRORS]
    rows += [(f"CLIP-S ({scorer})", "clip_s", scorer) for scorer in SCORERS]
    rows += [(f"RefCLIP-S ({scorer})", "ref_clip_s", scorer) for scorer in SCORERS]
    rows += [("CIDEr", "cider", "training teacher"), ("BLEU-4", "bleu_4", "training teacher")]
    table = comparison_table(results, names, rows)
    evidence = ROOT / "outputs" / "evidence"
    evidence.mkdir(parents=True, exist_ok=True)
    (evidence / "evidence.md").write_text(table)
    plot_metric_curves({name: str(ROOT / path) for name, path in RUNS.items()}, evidence / "semantic_accuracy.png")
    print(table, end="")
    print(f"Written: {evidence / 'evidence.md'}, {evidence / 'semantic_accuracy.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
