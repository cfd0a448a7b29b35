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

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence import SCORERS, evaluate_under_scorers, train, train_heldout_scorer, write_table  # noqa: E402

from clipcap.precision import describe_cpu  # noqa: E402
from clipcap.report import comparison_table, plot_metric_curves  # noqa: E402

RUNS = {"CE only": "outputs/demo-ce", "CLIP-guided": "outputs/demo"}
ERRORS = ("wrong_kind", "wrong_colour", "wrong_count", "wrong_relation", "missing_object", "unknown_object")


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    # 1. The held-out scorer; 2. the CE-only twin of the demo captioner.
    train_heldout_scorer()
    train("configs/demo.yaml", RUNS["CE only"], "--lambda_cos", "0", "--lambda_con", "0")
    # 3. Both captioners under both scorers.
    results = evaluate_under_scorers(RUNS)
    # 4. The table and the curves.
    names = list(RUNS)
    rows = [("semantic accuracy", "semantic_accuracy", "training teacher")]
    rows += [(f"  {n} object{'s' * (n > 1)}", f"semantic_accuracy_{n}obj", "training teacher") for n in (1, 2, 3)]
    rows += [(f"  errors: {e}", f"errors_{e}", "training teacher") for e in ERRORS]
    rows += [(f"CLIP-S ({scorer})", "clip_s", scorer) for scorer in SCORERS]
    rows += [(f"RefCLIP-S ({scorer})", "ref_clip_s", scorer) for scorer in SCORERS]
    rows += [("CIDEr", "cider", "training teacher"), ("BLEU-4", "bleu_4", "training teacher")]
    table = f"Machine: {describe_cpu()}\n\n" + comparison_table(results, names, rows)
    curves = write_table("evidence.md", table).with_name("semantic_accuracy.png")
    plot_metric_curves({name: str(ROOT / path) for name, path in RUNS.items()}, curves)
    print(f"Written: {curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
