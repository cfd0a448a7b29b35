#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Does a CLIP reward make the demo's captions truer, or only more rewarded? The self-critical stage, measured.

Starting from the demo captioner (`bash demo.sh`), this runs the self-critical stage (`configs/demo_scst.yaml`) in
the variants below and a control (the first stage's loss continued for the same steps), evaluates the demo captioner
and every run with `run_eval.py` under the training teacher and
under a held-out teacher (the demo teacher's recipe with another seed, which training never saw), and writes one
Markdown table: semantic accuracy (overall, by number of objects, by error type), CLIP-S by both scorers, CIDEr,
distinct-2, the fraction of captions the checker cannot parse, and the mean length. A second table says what the
reward can see: for each validation scene, how often each teacher scores a true caption above the same caption with
one fact made false (the relation reversed, a colour, a count or a kind changed).

    bash demo.sh && .venv/bin/python examples/scst_evidence.py   # about 50 minutes on 2 CPU cores after the demo

Every step is skipped when its output exists. Outputs: outputs/demo-scst*, outputs/demo-teacher-heldout,
outputs/evidence/scst.md.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence import SCORERS, evaluate_under_scorers, train, train_heldout_scorer, write_table  # noqa: E402

from clipcap.precision import describe_cpu  # noqa: E402
from clipcap.report import comparison_table  # noqa: E402
from clipcap.synthetic import COLOURS, KINDS, Scene, Unit, noun_phrase, noun_phrases  # noqa: E402

START = "outputs/demo"
SCST = "configs/demo_scst.yaml"
# The control: the first stage's own loss (configs/demo.yaml) continued from the demo captioner with the stage's
# steps, batch and learning rate, so that each variant is compared with what the same compute buys without a reward.
CONTINUED = ["--model_name_or_path", START, "--max_steps", "120", "--per_device_train_batch_size", "16"]
CONTINUED += [
    "--learning_rate",
    "1e-4",
    "--lr_scheduler_type",
    "constant",
    "--warmup_steps",
    "0",
    "--eval_strategy",
    "no",
]
CONTINUED += ["--save_steps", "40", "--logging_steps", "10"]
# name -> (output directory, config, flags over it)
VARIANTS = {
    "first stage continued (control)": ("outputs/demo-continued", "configs/demo.yaml", CONTINUED),
    "SCST: CLIP-S, mean of others": ("outputs/demo-scst", SCST, []),
    "SCST: CLIP-S, greedy baseline": ("outputs/demo-scst-greedy", SCST, ["--scst_baseline", "greedy"]),
    "SCST: CLIP-S + CE guard": ("outputs/demo-scst-ce", SCST, ["--scst_ce_weight", "0.5"]),
    "SCST: CLIP-S + CIDEr-D": ("outputs/demo-scst-cider", SCST, ["--scst_cider_weight", "0.2"]),
    "SCST: CLIP-S, lr 2e-5": ("outputs/demo-scst-lr2e-5", SCST, ["--learning_rate", "2e-5"]),
}
ERRORS = (
    "wrong_kind",
    "wrong_colour",
    "wrong_count",
    "wrong_relation",
    "missing_object",
    "unknown_object",
    "ungrammatical",
)


def true_and_false_captions(scene: Scene) -> dict[str, tuple[str, str]]:
    """For a scene of one or two units: a true caption and, per kind of fact, the same caption with that fact false."""
    units = scene.units
    if len(units) > 2:
        return {}
    relation = {"row": "to the left of", "column": "above"}.get(scene.layout)

    def caption(us: list[Unit]) -> str:
        return noun_phrase(us[0]) if len(us) == 1 else f"{noun_phrase(us[0])} {relation} {noun_phrase(us[1])}"

    if len(units) == 2 and relation is None:
        return {}
    first, taken = units[0], {(u.kind, u.colour) for u in units}
    colour = next(c for c in COLOURS if c != first.colour and (first.kind, c) not in taken)
    kind = next(k for k in KINDS if k not in {u.kind for u in units})
    count = {1: 2, 2: 1, 3: 2}[first.count]
    true = caption(units)
    pairs = {
        "colour": (true, caption([Unit(first.kind, colour, first.count), *units[1:]])),
        "count": (true, caption([Unit(first.kind, first.colour, count), *units[1:]])),
        "kind": (true, caption([Unit(kind, first.colour, first.count), *units[1:]])),
    }
    if len(units) == 2:
        pairs["relation"] = (true, caption(units[::-1]))
    return pairs


def reward_sensitivity(teacher_dir: str) -> dict[str, tuple[float, int]]:
    """How often the teacher's CLIP-S ranks the true caption of a validation scene above a caption with one fact
    false, by kind of fact (1.0: it always tells them apart; 0.5: chance), and the number of scenes compared."""
    import datasets

    from clipcap.metrics import clip_score, scenes_of
    from clipcap.teacher import CLIPTeacher

    validation = datasets.load_from_disk(str(ROOT / "data" / "demo"))["validation"]
    teacher = CLIPTeacher.from_pretrained("ClipCap-LiT-S-MobileNetV2", str(ROOT / teacher_dir), precision="auto")
    images = teacher.embed_pil_images(validation["image"])
    wins: dict[str, list[bool]] = {}
    for i, scene_json in enumerate(scenes_of(validation)):
        for fact, (true, false) in true_and_false_captions(Scene.from_json(scene_json)).items():
            scores = clip_score(images[i].expand(2, -1), teacher.embed_texts([true, false]))
            wins.setdefault(fact, []).append(bool(scores[0] > scores[1]))
    return {fact: (sum(w) / len(w), len(w)) for fact, w in sorted(wins.items())}


def caption_habits(model_dir: str) -> dict[str, float]:
    """How a model's validation captions (`run_eval.py`'s predictions.jsonl) are written: the share that names an
    object twice, and the share of relation phrases that are "next to" (true of any two side by side), "to the
    right of" / "to the left of", or "above" / "below"."""
    predictions = [json.loads(line) for line in (ROOT / model_dir / "eval" / "predictions.jsonl").open()]
    repeated, relations = 0, {"next to": 0, "right/left of": 0, "above/below": 0}
    for prediction in predictions:
        text = prediction["caption"].lower()
        named = [mention for _, _, mention in noun_phrases(text)]
        repeated += len(named) != len(set(named))
        relations["next to"] += text.count("next to")
        relations["right/left of"] += text.count("right of") + text.count("left of")
        relations["above/below"] += text.count("above") + text.count("below")
    total = max(sum(relations.values()), 1)
    return {"names an object twice": repeated / len(predictions)} | {
        f'relations: "{name}"': count / total for name, count in relations.items()
    }


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    if not (ROOT / START / "model.safetensors").exists():
        print(f"{START} is missing: run `bash demo.sh` first (it trains the demo captioner)", file=sys.stderr)
        return 1
    # 1. The held-out scorer; 2. the self-critical stage, each variant from the demo captioner.
    train_heldout_scorer()
    for output_dir, config, flags in VARIANTS.values():
        train(config, output_dir, *flags)
    # 3. Every captioner under both scorers.
    runs = {"before (demo)": START, **{name: output_dir for name, (output_dir, _, _) in VARIANTS.items()}}
    results = evaluate_under_scorers(runs)
    # 4. The table.
    rows = [("semantic accuracy", "semantic_accuracy", "training teacher")]
    rows += [(f"  {n} object{'s' * (n > 1)}", f"semantic_accuracy_{n}obj", "training teacher") for n in (1, 2, 3)]
    rows += [(f"  errors: {e}", f"errors_{e}", "training teacher") for e in ERRORS]
    rows += [("unparseable captions", "unparseable_fraction", "training teacher")]
    rows += [(f"CLIP-S ({scorer})", "clip_s", scorer) for scorer in SCORERS]
    rows += [("CIDEr", "cider", "training teacher"), ("distinct-2", "distinct_2", "training teacher")]
    rows += [("mean length (words)", "mean_length", "training teacher")]
    table = f"Machine: {describe_cpu()}\n\n" + comparison_table(results, list(runs), rows)
    # 5. How the captions changed, and what the reward can see.
    habits = {name: caption_habits(model_dir) for name, model_dir in runs.items()}
    lines = ["| validation captions | " + " | ".join(runs) + " |", "| --- |" + " ---: |" * len(runs)]
    for habit in habits["before (demo)"]:
        lines.append(f"| {habit} | " + " | ".join(f"{habits[name][habit]:.3f}" for name in runs) + " |")
    table += "\n" + "\n".join(lines) + "\n"
    sensitivity = {scorer: reward_sensitivity(teacher_dir) for scorer, teacher_dir in SCORERS.items()}
    lines = ["| true caption scored above one with a false ... | scenes | " + " | ".join(SCORERS) + " |"]
    lines.append("| --- | ---: |" + " ---: |" * len(SCORERS))
    for fact, (_, scenes) in sensitivity["training teacher"].items():
        cells = " | ".join(f"{sensitivity[scorer][fact][0]:.3f}" for scorer in SCORERS)
        lines.append(f"| {fact} | {scenes} | {cells} |")
    table += "\n" + "\n".join(lines) + "\n"
    write_table("scst.md", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
