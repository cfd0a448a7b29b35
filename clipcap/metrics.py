# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Every caption score in one place.

* CLIP-S = w * max(cos(image, caption), 0), w = 2.5, and RefCLIP-S, the harmonic mean of CLIP-S and the caption's
  best cosine with a reference (clamped at 0): Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric
  for Image Captioning". Both depend on the CLIP model that embeds, so every report names it.
* BLEU-1..4 (Papineni et al. 2002), METEOR 1.5 (Denkowski & Lavie 2014), ROUGE-L (Lin 2004) and CIDEr-D (Vedantam
  et al. 2015) through pycocoevalcap, after its PTB tokenizer (Stanford CoreNLP, needs Java), exactly as the COCO
  caption evaluation does. SPICE (Anderson et al. 2016) needs Stanford CoreNLP models that pycocoevalcap downloads
  on first use, so offline it is reported as unavailable (`SPICE_UNAVAILABLE`), never silently left out.
* Diversity: distinct-n (Li et al. 2016), vocabulary size, % unique captions, % novel captions (not among the
  training captions), mean length in words.
* Semantic accuracy, on the synthetic data only: the fraction of captions whose every stated kind, colour, count and
  relation is true of the scene (`synthetic.caption_errors`), with the count of each error type.

CLIP-S/RefCLIP-S, the COCO metrics and semantic accuracy are also `evaluate` modules (`clipcap/evaluate_modules/`,
loaded offline from the installed project with `load_metric(name)` or `evaluate.load(metric_path(name))`), and
`score_captions`, `run_eval.py` and the trainer's evaluation compute through them.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch

from clipcap.synthetic import CAPTION_ERROR_TYPES, PARSE_PROBLEMS, SCENE_COLUMN, caption_errors

CLIP_S_WEIGHT = 2.5
COCO_METRICS = ("bleu", "meteor", "rouge_l", "cider")
SPICE_UNAVAILABLE = "unavailable offline: SPICE downloads Stanford CoreNLP models on first use"
EVALUATE_MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
EVALUATE_MODULES = ("clip_score", "coco_captions", "semantic_accuracy")


def metric_path(name: str) -> str:
    """The folder of the project's `evaluate` module `name` (one of `EVALUATE_MODULES`): `evaluate.load(it)`."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"unknown evaluate module {name!r}; the project's: {', '.join(EVALUATE_MODULES)}")
    return str(EVALUATE_MODULES_DIR / name)


def load_metric(name: str, **init_kwargs):
    """`evaluate.load` of the project's module `name`, kept in memory (no cache file, so that every process of a
    distributed run computes on its own). `init_kwargs`: for `clip_score`, `teacher=` or `clip_model=` and
    `clip_pretrained=`."""
    import evaluate

    return evaluate.load(metric_path(name), keep_in_memory=True, **init_kwargs)


def clip_score(
    image_embeds: torch.Tensor, caption_embeds: torch.Tensor, weight: float = CLIP_S_WEIGHT
) -> torch.Tensor:
    """Per-pair CLIP-S `weight * max(cos(image_i, caption_i), 0)` for unit-norm or raw embeddings `(N, D)`."""
    cosine = torch.nn.functional.cosine_similarity(image_embeds.float(), caption_embeds.float(), dim=-1)
    return weight * cosine.clamp(min=0)


def ref_clip_score(
    clip_s: torch.Tensor, caption_embeds: torch.Tensor, reference_embeds: list[torch.Tensor]
) -> torch.Tensor:
    """Per-pair RefCLIP-S: the harmonic mean of `clip_s[i]` and `max(max_r cos(caption_i, reference_r), 0)` over the
    `(R_i, D)` embeddings of image i's references (0 where both are 0). An image without references gets NaN."""
    scores = torch.full_like(clip_s, float("nan"), dtype=torch.float32)
    captions = torch.nn.functional.normalize(caption_embeds.float(), dim=-1)
    for i, references in enumerate(reference_embeds):
        if len(references) == 0:
            continue
        best = (torch.nn.functional.normalize(references.float(), dim=-1) @ captions[i]).max().clamp(min=0)
        total = clip_s[i].float() + best
        scores[i] = 2 * clip_s[i].float() * best / total if total > 0 else 0.0
    return scores


def coco_caption_scores(
    predictions: list[str], references: list[list[str]], metrics: tuple[str, ...] = COCO_METRICS
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Corpus and per-caption scores of `predictions[i]` against `references[i]` (BLEU-1..4, METEOR, ROUGE-L,
    CIDEr-D, or the subset named in `metrics`), tokenised as the COCO evaluation does.

    Corpus BLEU is pycocoevalcap's (brevity penalty over the corpus), not the mean of the per-caption values."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    if unknown := set(metrics) - set(COCO_METRICS):
        raise ValueError(f"unknown caption metrics {sorted(unknown)}; known: {COCO_METRICS}")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every prediction needs at least one reference")
    if not predictions:
        return {}, {}
    tokenizer = PTBTokenizer()
    results = tokenizer.tokenize({i: [{"caption": caption}] for i, caption in enumerate(predictions)})
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in enumerate(references)})
    corpus, per_caption = {}, {}
    if "bleu" in metrics:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, bleu_each = Bleu(4).compute_score(gts, results, verbose=0)
        for n in range(4):
            corpus[f"bleu_{n + 1}"], per_caption[f"bleu_{n + 1}"] = float(bleu[n]), list(map(float, bleu_each[n]))
    scorers = {}
    if "meteor" in metrics:
        from pycocoevalcap.meteor.meteor import Meteor

        scorers["meteor"] = Meteor
    if "rouge_l" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        scorers["rouge_l"] = Rouge
    if "cider" in metrics:
        from pycocoevalcap.cider.cider import Cider

        scorers["cider"] = Cider
    for name, scorer in scorers.items():
        score, each = scorer().compute_score(gts, results)
        corpus[name], per_caption[name] = float(score), [float(value) for value in each]
    return corpus, per_caption


def normalize_caption(caption: str) -> str:
    """Lower case, words split on whitespace and rejoined, trailing full stop dropped: for uniqueness and novelty."""
    return " ".join(caption.lower().split()).rstrip(" .")


def distinct_n(captions: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams, across every caption (lower-cased, split on whitespace)."""
    ngrams = Counter()
    for caption in captions:
        words = caption.lower().split()
        ngrams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(ngrams.values())
    return len(ngrams) / total if total else 0.0


def mean_length(captions: list[str]) -> float:
    """Mean caption length in words (split on whitespace); 0 for no captions."""
    return sum(len(caption.split()) for caption in captions) / len(captions) if captions else 0.0


def diversity(captions: list[str], training_captions: set[str] | None = None) -> dict[str, float | int]:
    """distinct-1/2, vocabulary size (distinct words), % unique captions, mean length in words, and, given the
    training captions (normalised with `normalize_caption`), % novel captions: those not among them."""
    normalized = [normalize_caption(caption) for caption in captions]
    words = [re.findall(r"[a-z0-9']+", caption) for caption in normalized]
    result: dict[str, float | int] = {
        "distinct_1": distinct_n(captions, 1),
        "distinct_2": distinct_n(captions, 2),
        "vocabulary_size": len({word for caption in words for word in caption}),
        "unique_captions_pct": 100 * len(set(normalized)) / len(captions) if captions else 0.0,
        "mean_length": mean_length(captions),
    }
    if training_captions is not None:
        novel = sum(caption not in training_captions for caption in normalized)
        result["novel_captions_pct"] = 100 * novel / len(captions) if captions else 0.0
    return result


def semantic_accuracy(
    captions: list[str], scenes: list, found_errors: list[list[str]] | None = None
) -> dict[str, float | int]:
    """Fraction of captions with no error against their `synthetic.Scene`, overall, by number of objects in the
    scene (`semantic_accuracy_<n>obj`), the count of each error type (`errors_<type>`, 0s included), and the fraction
    of captions the checker cannot read whole (`unparseable_fraction`: a parse problem among their errors, as
    `synthetic.is_parseable` says).
    `found_errors`: each caption's `synthetic.caption_errors`, when they are already known."""
    if found_errors is None:
        found_errors = [caption_errors(caption, scene) for caption, scene in zip(captions, scenes, strict=True)]
    correct, total, errors = Counter(), Counter(), Counter()
    for found, scene in zip(found_errors, scenes, strict=True):
        objects = len(scene.objects)
        total[objects] += 1
        correct[objects] += not found
        errors.update(found)
    result: dict[str, float | int] = {"semantic_accuracy": sum(correct.values()) / max(sum(total.values()), 1)}
    for objects in sorted(total):
        result[f"semantic_accuracy_{objects}obj"] = correct[objects] / total[objects]
    result.update({f"errors_{kind}": errors[kind] for kind in CAPTION_ERROR_TYPES})
    unparseable = sum(any(error in PARSE_PROBLEMS for error in found) for found in found_errors)
    result["unparseable_fraction"] = unparseable / max(len(found_errors), 1)
    return result


def scenes_of(dataset) -> list[str] | None:
    """The scene descriptions (`synthetic.Scene` as JSON) of a dataset's rows, which semantic accuracy checks captions
    against, or None for data without them: only the synthetic scenes have one (`SCENE_COLUMN`)."""
    return dataset[SCENE_COLUMN][:] if SCENE_COLUMN in dataset.column_names else None


def scene_of(row: dict) -> str | None:
    """The scene description of one dataset row (a dict), or None when the data has none (`scenes_of`'s row form)."""
    return row.get(SCENE_COLUMN)


def score_captions(
    captions: list[str],
    references: list[list[str]],
    image_embeds: torch.Tensor | None,
    clip_metric,
    training_captions: set[str] | None = None,
    scenes: list[str] | None = None,
    coco_metrics: tuple[str, ...] = COCO_METRICS,
    ref_clip_s: bool = True,
) -> tuple[dict, dict[str, list]]:
    """Corpus scores and per-image scores of one captioner: CLIP-S and RefCLIP-S (`clip_metric`, the `clip_score`
    module with its CLIP model, given the images' embeddings by it; None: no CLIP score), the COCO metrics
    (`coco_metrics`), diversity and, given the scenes (`scenes_of`), semantic accuracy (per image: the list of
    `errors`). `references[i]` may be empty (no reference-based score for image i); `ref_clip_s=False` skips
    RefCLIP-S (and the embedding of every reference it needs)."""
    corpus, per_image = {}, {}
    if clip_metric is not None:
        clip = clip_metric.compute(
            predictions=captions,
            references=references if ref_clip_s else None,
            image_embeds=image_embeds,
            per_caption=True,
        )
        corpus["clip_s"], per_image["clip_s"] = clip["clip_s"], clip["per_caption"]["clip_s"]
        if ref_clip_s:
            corpus["ref_clip_s"] = clip.get("ref_clip_s", float("nan"))
            per_image["ref_clip_s"] = clip["per_caption"].get("ref_clip_s", [float("nan")] * len(captions))
    scored = [i for i, refs in enumerate(references) if refs]
    if scored:
        coco = load_metric("coco_captions").compute(
            predictions=[captions[i] for i in scored],
            references=[references[i] for i in scored],
            metrics=coco_metrics,
            per_caption=True,
        )
        for name, values in coco.pop("per_caption").items():
            per_image[name] = [None] * len(captions)
            for i, value in zip(scored, values, strict=True):
                per_image[name][i] = value
        corpus.update(coco)
    corpus.update(
        {
            "spice": None,
            **diversity(captions, training_captions),
            "images": len(captions),
            "images_with_references": len(scored),
        }
    )
    if scenes is not None:
        accuracy = load_metric("semantic_accuracy").compute(predictions=captions, references=scenes, per_caption=True)
        per_image["errors"] = accuracy.pop("per_caption")["errors"]
        corpus.update(accuracy)
    return corpus, per_image
