#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Does a CLIP reward make the demo's captions truer, or only more rewarded? The self-critical stage, measured.

Starting from the demo captioner (`bash demo.sh`), this runs the self-critical stage (`configs/demo_scst.yaml`) in
the variants below, evaluates the demo captioner and every variant with `run_eval.py` under the training teacher and
under a held-out teacher (the demo teacher's recipe with another seed, which training never saw), and writes one
Markdown table: semantic accuracy (overall, by number of objects, by error type), CLIP-S by both scorers, CIDEr,
distinct-2, the fraction of captions the checker cannot parse, and the mean length.

    bash demo.sh && .venv/bin/python examples/scst_evidence.py   # about 30 minutes on 2 CPU cores after the demo

Every step is skipped when its output exists. Outputs: outputs/demo-scst*, outputs/demo-teacher-heldout,
outputs/evidence/scst.md.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipcap.report import comparison_table  # noqa: E402

START = "outputs/demo"
# name -> (output directory, flags over configs/demo_scst.yaml)
VARIANTS = {
    "SCST: CLIP-S, mean of others": ("outputs/demo-scst", []),
    "SCST: CLIP-S, greedy baseline": ("outputs/demo-scst-greedy", ["--scst_baseline", "greedy"]),
    "SCST: CLIP-S + CE guard": ("outputs/demo-scst-ce", ["--scst_ce_weight", "0.5"]),
    "SCST: CLIP-S + CIDEr-D": ("outputs/demo-scst-cider", ["--scst_cider_weight", "0.2"]),
}
SCORERS = {"training teacher": "outputs/demo-teacher", "held-out teacher": "outputs/demo-teacher-heldout"}
ERRORS = ("wrong_kind", "wrong_colour", "wrong_count", "wrong_relation", "missing_object", "unknown_object")


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True)


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    if not (ROOT / START / "model.safetensors").exists():
        print(f"{START} is missing: run `bash demo.sh` first (it trains the demo captioner)", file=sys.stderr)
        return 1
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
    # 2. The self-critical stage, each variant from the demo captioner.
    for output_dir, flags in VARIANTS.values():
        if not (ROOT / output_dir / "model.safetensors").exists():
            run(
                "-m", "accelerate.commands.launch", "--config_file", "accelerate_config.yaml", "run_train.py",
                "configs/demo_scst.yaml", "--output_dir", output_dir, *flags,
            )  # fmt: skip
    # 3. Every captioner under both scorers.
    runs = {"before (demo)": START, **{name: output_dir for name, (output_dir, _) in VARIANTS.items()}}
    results = {}
    for name, model_dir in runs.items():
        for scorer, teacher_dir in SCORERS.items():
            out = Path(model_dir, "eval" if scorer == "training teacher" else "eval-heldout")
            if not (ROOT / out / "eval_results.json").exists():
                run("run_eval.py", model_dir, "--clip_model", "ClipCap-LiT-S", "--clip_pretrained", teacher_dir,
                    "--output_dir", str(out))  # fmt: skip
            results[name, scorer] = json.loads((ROOT / out / "eval_results.json").read_text())["results"]["model"]
    # 4. The table.
    rows = [("semantic accuracy", "semantic_accuracy", "training teacher")]
    rows += [(f"  {n} object{'s' * (n > 1)}", f"semantic_accuracy_{n}obj", "training teacher") for n in (1, 2, 3)]
    rows += [(f"  errors: {e}", f"errors_{e}", "training teacher") for e in ERRORS]
    rows += [("unparseable captions", "unparseable_fraction", "training teacher")]
    rows += [(f"CLIP-S ({scorer})", "clip_s", scorer) for scorer in SCORERS]
    rows += [("CIDEr", "cider", "training teacher"), ("distinct-2", "distinct_2", "training teacher")]
    rows += [("mean length (words)", "mean_length", "training teacher")]
    table = comparison_table(results, list(runs), rows)
    evidence = ROOT / "outputs" / "evidence"
    evidence.mkdir(parents=True, exist_ok=True)
    (evidence / "scst.md").write_text(table)
    print(table, end="")
    print(f"Written: {evidence / 'scst.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
