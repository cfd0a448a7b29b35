# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The compositional test of a CLIP teacher: does it score a true caption above the same words with one fact false?

In the style of ARO (Yuksekgonul et al. 2023) and SugarCrepe (Hsieh et al. 2023), on the synthetic validation scenes:
for each scene and each hard negative kind (`clipcap.hard_negatives.NEGATIVE_KINDS`), the first reference caption
that has a negative of that kind the checker finds false, and that negative; a scene counts when the teacher's
image-caption cosine is higher for the true caption than for the negative. A bag-of-words model is at chance (0.5)
on the binding kinds, whatever its retrieval recall. `compositional_match_test` scores the same pairs with any scorer
of (image, caption) pairs, such as the teacher's image-text matcher (`clipcap.matching`); the table has a column per
scorer.

    python -m clipcap.compositional --clip_model ClipCap-LiT-S-MobileNetV2 --clip_pretrained outputs/demo-teacher \\
        --dataset_dir data/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import torch

from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN, load_prepared_dataset
from clipcap.hard_negatives import NEGATIVE_KINDS, candidates, scene_judge
from clipcap.metrics import scenes_of
from clipcap.teacher import CLIPTeacher

# The table's order and headings (what each kind of negative makes false).
KIND_HEADINGS = {
    "other_colour": "a colour not in the scene",
    "other_kind": "a kind not in the scene",
    "change_count": "a count changed",
    "swap_colours": "colours of two objects swapped",
    "swap_kinds": "kinds of two objects swapped",
    "swap_phrases": "the relation reversed (two objects swapped)",
    "converse_relation": "the relation word replaced by its converse",
}


def compositional_pairs(
    scenes: Sequence[str], references: Sequence[list[str]], kinds: Sequence[str] = NEGATIVE_KINDS
) -> dict[str, list[tuple[int, str, str]]]:
    """For each kind, `(row, true caption, negative)` per scene that has one: the first reference caption with a
    negative of that kind that the checker finds false of the scene, and the first such negative (deterministic)."""
    pairs: dict[str, list[tuple[int, str, str]]] = {kind: [] for kind in kinds}
    for row, (scene, captions) in enumerate(zip(scenes, references, strict=True)):
        is_false = scene_judge(scene)
        for kind in kinds:
            for caption in captions:
                negative = next((c for c in candidates(caption, kind) if is_false(c)), None)
                if negative is not None:
                    pairs[kind].append((row, caption, negative))
                    break
    return pairs


def compositional_scores(
    image_embeds: torch.Tensor, true_embeds: torch.Tensor, negative_embeds: torch.Tensor, rows: torch.Tensor
) -> dict:
    """`accuracy`: the fraction of pairs k where image `rows[k]` is closer (dot product of unit vectors) to
    `true_embeds[k]` than to `negative_embeds[k]` (ties count as wrong); `scenes`: the number of pairs."""
    image = image_embeds[rows].float()
    true = (image * true_embeds.float()).sum(-1)
    negative = (image * negative_embeds.float()).sum(-1)
    wins = int((true > negative).sum())
    return {"accuracy": wins / len(rows) if len(rows) else float("nan"), "scenes": len(rows)}


@torch.no_grad()
def compositional_test(
    image_embeds: torch.Tensor,
    embed_texts: Callable[[list[str]], torch.Tensor],
    scenes: Sequence[str],
    references: Sequence[list[str]],
    kinds: Sequence[str] = NEGATIVE_KINDS,
) -> dict[str, dict]:
    """Per kind, `{"accuracy", "scenes"}` of a teacher whose unit-norm embeddings of the split's images are
    `image_embeds` and which embeds captions with `embed_texts` (unit norm), on scenes with negatives of that kind."""
    pairs = compositional_pairs(scenes, references, kinds)
    texts = sorted({text for found in pairs.values() for _, true, negative in found for text in (true, negative)})
    embeds = embed_texts(texts) if texts else torch.empty(0, image_embeds.shape[1])
    index = {text: i for i, text in enumerate(texts)}
    results = {}
    for kind, found in pairs.items():
        rows = torch.tensor([row for row, _, _ in found], dtype=torch.long)
        true = embeds[[index[t] for _, t, _ in found]]
        negative = embeds[[index[n] for _, _, n in found]]
        results[kind] = compositional_scores(image_embeds.cpu(), true.cpu(), negative.cpu(), rows)
    return results


@torch.no_grad()
def compositional_match_test(
    score_pairs: Callable[[list[int], list[str]], torch.Tensor],
    scenes: Sequence[str],
    references: Sequence[list[str]],
    kinds: Sequence[str] = NEGATIVE_KINDS,
) -> dict[str, dict]:
    """`compositional_test` for a scorer of pairs: `score_pairs(rows, captions)` is the score of caption k with image
    `rows[k]` of the split (higher: more likely true), e.g. the image-text matcher's logit."""
    results = {}
    for kind, found in compositional_pairs(scenes, references, kinds).items():
        rows = [row for row, _, _ in found]
        if not rows:
            results[kind] = {"accuracy": float("nan"), "scenes": 0}
            continue
        true = score_pairs(rows, [t for _, t, _ in found]).float().cpu()
        negative = score_pairs(rows, [n for _, _, n in found]).float().cpu()
        results[kind] = {"accuracy": int((true > negative).sum()) / len(rows), "scenes": len(rows)}
    return results


def format_table(results: dict[str, dict], recall: dict | None = None, **more: dict[str, dict]) -> str:
    """The compositional test as a Markdown table (and the retrieval recall under it, when given); each keyword
    argument adds a column of another scorer's results on the same pairs, headed by its name."""
    heading = "true caption above it" + (" (cosine)" if more else "")
    lines = [
        "| the negative | scenes | " + " | ".join([heading, *more]) + " |",
        "| --- | ---: | " + " | ".join(["---:"] * (1 + len(more))) + " |",
    ]
    for kind, score in results.items():
        cells = [f"{score['accuracy']:.3f}", *(f"{other[kind]['accuracy']:.3f}" for other in more.values())]
        lines.append(f"| {KIND_HEADINGS.get(kind, kind)} | {score['scenes']} | " + " | ".join(cells) + " |")
    if recall:
        lines.append("")
        lines.append(", ".join(f"{key} {value:.3f}" for key, value in recall.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipcap.compositional", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clip_model", required=True, help="open_clip architecture, e.g. ClipCap-LiT-S-MobileNetV2 or ViT-B-32"
    )
    parser.add_argument("--clip_pretrained", required=True, help="a train_clip_teacher.py directory or checkpoint")
    parser.add_argument("--dataset_dir", default="data/demo", help="a prepared synthetic dataset")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    try:
        dataset, _ = load_prepared_dataset(args.dataset_dir, {args.split: [IMAGE_COLUMN, CAPTION_COLUMN]})
        split = dataset[args.split]
        scenes = scenes_of(split)
        if scenes is None:
            raise ValueError(f"{args.dataset_dir} has no scene descriptions: the test needs the synthetic scenes")
        teacher = CLIPTeacher.from_pretrained(args.clip_model, args.clip_pretrained)
    except (OSError, ValueError, KeyError) as error:
        print(f"python -m clipcap.compositional: error: {error}", file=sys.stderr)
        return 1
    images, references = split[IMAGE_COLUMN][:], split[CAPTION_COLUMN][:]
    results = compositional_test(teacher.embed_pil_images(images), teacher.embed_texts, scenes, references)
    more = {}
    if teacher.matcher is not None:
        grids = teacher.image_grids(images)
        more["matcher"] = compositional_match_test(
            lambda rows, texts: teacher.match_grids(grids[rows], texts), scenes, references
        )
    if args.json:
        print(json.dumps({"cosine": results, **more} if more else results, indent=2))
    else:
        print(format_table(results, **more))
    return 0


if __name__ == "__main__":
    sys.exit(main())
