#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Does a CLIP reward make the demo's captions truer, or only more rewarded? The self-critical stage, measured.

Starting from the demo captioner (`bash demo.sh`), this runs the self-critical stage (`configs/demo_scst.yaml`) and a
control (the first stage's loss continued for the same steps, batch and schedule), each over the same learning-rate
grid with two seeds (`examples/lr_sweep.py`), so that each is compared at its own best rate; `--arms` adds the
stage's variants below. It writes the sweep table, then evaluates the demo captioner and each arm's best runs with
`run_eval.py` under the training teacher and under a held-out teacher (the demo teacher's recipe with another seed,
which training never saw), and writes one Markdown table of the seeds' means: semantic accuracy (overall, by number of objects, by error type), CLIP-S by both scorers, CIDEr,
distinct-2, the fraction of captions the checker cannot parse, and the mean length. A second table says what the
reward can see: for each validation scene, how often each teacher scores a true caption above the same caption with
one fact made false (the relation reversed, a colour, a count or a kind changed).

    bash demo.sh && .venv/bin/python examples/scst_evidence.py --jobs 2   # about 1 hour on 2 CPU cores after the demo

Every step is skipped when its output exists; the runs start from outputs/demo, so after the demo changes, delete
outputs/sweeps-scst. Outputs: outputs/sweeps-scst/*, outputs/demo-teacher-heldout, outputs/evidence/scst.md.
"""

import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lr_sweep  # noqa: E402
from evidence import SCORERS, evaluate_under_scorers, mean_results, run, train_heldout_scorer, write_table  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from clipcap.report import comparison_table  # noqa: E402
from clipcap.synthetic import COLOURS, KINDS, Scene, Unit, noun_phrase, noun_phrases  # noqa: E402

START = "outputs/demo"
# The demo teacher's towers with an image-text matcher trained on them (configs/demo_teacher_matcher.yaml).
MATCHER_TEACHER = "outputs/demo-teacher-matcher"
SCST = "configs/demo_scst.yaml"
# The control: the first stage's own loss (configs/demo.yaml) continued from the demo captioner with the stage's
# steps, batch and schedule, so that the stage is compared with what the same compute buys without a reward.
CONTINUED = ["--model_name_or_path", START, "--max_steps", "120", "--per_device_train_batch_size", "16"]
CONTINUED += ["--lr_scheduler_type", "constant", "--warmup_steps", "0", "--eval_strategy", "no"]
CONTINUED += ["--save_steps", "40", "--logging_steps", "10"]
# The matcher arms' teacher. Its towers are the demo teacher's, but the embedding cache is keyed by the teacher's
# directory: they embed each batch's images as they go rather than all 10,000 training images before the 1,920 they
# train on.
MATCHER = ["--clip_pretrained", "{matcher_teacher}", "--cache_teacher_embeddings", "false"]
# name -> (config, flags over it); the learning rate and seed come from the sweep.
ARMS = {
    "first stage continued (control)": ("configs/demo.yaml", CONTINUED),
    "SCST: CLIP-S": (SCST, []),
    "SCST: CLIP-S, greedy baseline": (SCST, ["--scst_baseline", "greedy"]),
    "SCST: CLIP-S + CE guard": (SCST, ["--scst_ce_weight", "0.5"]),
    "SCST: CLIP-S + CIDEr-D": (SCST, ["--scst_cider_weight", "0.2"]),
    # The teacher's image-text matcher (clipcap.matching; a teacher trained with --matcher_layers), which sees
    # relations: its probability alone, and added to CLIP-S.
    "SCST: matcher": (SCST, MATCHER + ["--scst_clip_weight", "0", "--scst_matcher_weight", "1"]),
    "SCST: CLIP-S + matcher": (SCST, MATCHER + ["--scst_matcher_weight", "1"]),
    # The matcher's probability of the caption against the same words with the relation reversed (a contrast, not
    # a likelihood: clipcap.rewards.relation_contrast_reward).
    "SCST: relation contrast": (
        SCST,
        MATCHER + ["--scst_clip_weight", "0", "--scst_matcher_weight", "1", "--scst_matcher_reward", "relation_contrast"],
    ),
}
DEFAULT_ARMS = ("first stage continued (control)", "SCST: CLIP-S")
# A second stage continues a trained model: its grid sits an order of magnitude below the first stage's (the
# stage's own rate, 1e-4, in the middle).
LEARNING_RATES = ("2e-5", "5e-5", "1e-4", "2e-4")


@dataclass
class EvidenceArguments:
    arms: str = field(default=",".join(DEFAULT_ARMS), metadata={"help": "Comma-separated, of: " + ", ".join(ARMS)})
    learning_rates: str = field(default=",".join(LEARNING_RATES), metadata={"help": "The grid."})
    seeds: str = field(default=",".join(map(str, lr_sweep.SEEDS)), metadata={"help": "Comma-separated seeds."})
    output_dir: str = field(default="outputs/sweeps-scst", metadata={"help": "Where the sweeps train."})
    jobs: int = field(default=1, metadata={"help": "Trainings at a time, sharing the cores."})
    heldout: bool = field(default=True, metadata={"help": "Also score under a held-out teacher (trains one)."})
    matcher_teacher: str = field(
        default=MATCHER_TEACHER,
        metadata={"help": "The teacher with a matcher that rewards the matcher arms (trained if it is the default)."},
    )


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


def reward_sensitivity(teacher_dir: str, matcher: bool = False) -> dict[str, tuple[float, int]]:
    """How often the teacher's CLIP-S (or, with `matcher`, its image-text matcher) ranks the true caption of a
    validation scene above a caption with one fact false, by kind of fact (1.0: it always tells them apart; 0.5:
    chance), and the number of scenes compared."""
    import datasets

    from clipcap.metrics import clip_score, scenes_of
    from clipcap.teacher import CLIPTeacher

    validation = datasets.load_from_disk(str(ROOT / "data" / "demo"))["validation"]
    teacher = CLIPTeacher.from_pretrained("ClipCap-LiT-S-MobileNetV2", str(ROOT / teacher_dir), precision="auto")
    images = teacher.image_grids(validation["image"]) if matcher else teacher.embed_pil_images(validation["image"])
    wins: dict[str, list[bool]] = {}
    for i, scene_json in enumerate(scenes_of(validation)):
        for fact, (true, false) in true_and_false_captions(Scene.from_json(scene_json)).items():
            if matcher:
                scores = teacher.match_grids(images[i].expand(2, -1, -1, -1), [true, false])
            else:
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


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(EvidenceArguments).parse_args_into_dataclasses(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    if not (ROOT / START / "model.safetensors").exists():
        print(f"{START} is missing: run `bash demo.sh` first (it trains the demo captioner)", file=sys.stderr)
        return 1
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if unknown := [arm for arm in arms if arm not in ARMS]:
        print(f"unknown arms {unknown}; known: {', '.join(ARMS)}", file=sys.stderr)
        return 1
    learning_rates = tuple(lr.strip() for lr in args.learning_rates.split(","))
    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    uses_matcher = any("{matcher_teacher}" in ARMS[arm][1] for arm in arms)
    if uses_matcher and not (ROOT / args.matcher_teacher / "matcher.safetensors").exists():
        if args.matcher_teacher != MATCHER_TEACHER:
            print(f"{args.matcher_teacher} has no matcher (train_clip_teacher.py --matcher_layers)", file=sys.stderr)
            return 1
        run("train_clip_teacher.py", "configs/demo_teacher_matcher.yaml")
    # 1. Each arm over the grid and seeds, from the demo captioner.
    flags = {arm: [flag.format(matcher_teacher=args.matcher_teacher) for flag in ARMS[arm][1]] for arm in arms}
    sweeps = {
        arm: lr_sweep.sweep(ARMS[arm][0], arm, flags[arm], learning_rates, seeds, args.output_dir, args.jobs)
        for arm in arms
    }
    table = (
        lr_sweep.machine_line(args.jobs) + "\n" + lr_sweep.sweep_table([r for runs in sweeps.values() for r in runs])
    )
    # 2. The held-out scorer; 3. the demo captioner and each arm's best runs under both scorers, the seeds' mean.
    scorers = SCORERS if args.heldout else {"training teacher": SCORERS["training teacher"]}
    if args.heldout:
        train_heldout_scorer()
    groups = {"before (demo)": [START]}
    for arm, arm_runs in sweeps.items():
        learning_rate = lr_sweep.best_learning_rate(arm_runs)
        groups[f"{arm}, lr {learning_rate}"] = [
            str(run.output_dir) for run in arm_runs if run.learning_rate == learning_rate
        ]
    results = mean_results(evaluate_under_scorers({d: d for ds in groups.values() for d in ds}, scorers), groups, scorers)
    runs = list(groups)
    # 4. The table.
    rows = [("semantic accuracy", "semantic_accuracy", "training teacher")]
    rows += [(f"  {n} object{'s' * (n > 1)}", f"semantic_accuracy_{n}obj", "training teacher") for n in (1, 2, 3)]
    rows += [(f"  errors: {e}", f"errors_{e}", "training teacher") for e in ERRORS]
    rows += [("unparseable captions", "unparseable_fraction", "training teacher")]
    rows += [(f"CLIP-S ({scorer})", "clip_s", scorer) for scorer in scorers]
    rows += [("CIDEr", "cider", "training teacher"), ("distinct-2", "distinct_2", "training teacher")]
    rows += [("mean length (words)", "mean_length", "training teacher")]
    table += "\nThe demo captioner and each arm at its best learning rate, the mean of its seeds:\n\n"
    table += comparison_table(results, runs, rows)
    # 5. How the captions changed (the seeds' mean), and what the reward can see.
    habits = {}
    for name, directories in groups.items():
        each = [caption_habits(directory) for directory in directories]
        habits[name] = {habit: statistics.fmean(h[habit] for h in each) for habit in each[0]}
    lines = ["| validation captions | " + " | ".join(runs) + " |", "| --- |" + " ---: |" * len(runs)]
    for habit in habits["before (demo)"]:
        lines.append(f"| {habit} | " + " | ".join(f"{habits[name][habit]:.3f}" for name in runs) + " |")
    table += "\n" + "\n".join(lines) + "\n"
    sensitivity = {scorer: reward_sensitivity(teacher_dir) for scorer, teacher_dir in scorers.items()}
    if uses_matcher:
        sensitivity["matcher"] = reward_sensitivity(args.matcher_teacher, matcher=True)
    lines = ["| true caption scored above one with a false ... | scenes | " + " | ".join(sensitivity) + " |"]
    lines.append("| --- | ---: |" + " ---: |" * len(sensitivity))
    for fact, (_, scenes) in sensitivity["training teacher"].items():
        cells = " | ".join(f"{sensitivity[scorer][fact][0]:.3f}" for scorer in sensitivity)
        lines.append(f"| {fact} | {scenes} | {cells} |")
    table += "\n" + "\n".join(lines) + "\n"
    write_table("scst.md", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
