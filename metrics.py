# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Caption scores: CLIP-S with the teacher, COCO caption metrics (pycocoevalcap), diversity, synthetic accuracy.

* CLIP-S = w * max(cos(image, caption), 0) with w = 2.5 (Hessel et al. 2021, "CLIPScore: A Reference-free
  Evaluation Metric for Image Captioning"), always reported with the teacher that computed it.
* BLEU-4 (Papineni et al. 2002) and CIDEr-D (Vedantam et al. 2015) through pycocoevalcap, after its PTB tokenizer
  (Stanford CoreNLP, needs Java) exactly as the COCO caption evaluation does.
* distinct-n (Li et al. 2016): distinct n-grams over all n-grams of all captions.
* semantic accuracy, on the synthetic data only: the fraction of captions whose every stated kind, colour, count and
  relation is true of the scene (`synthetic.caption_errors`).
"""

from __future__ import annotations

from collections import Counter

import torch

CLIP_S_WEIGHT = 2.5


def clip_score(
    image_embeds: torch.Tensor, caption_embeds: torch.Tensor, weight: float = CLIP_S_WEIGHT
) -> torch.Tensor:
    """Per-pair CLIP-S `weight * max(cos(image_i, caption_i), 0)` for unit-norm or raw embeddings `(N, D)`."""
    cosine = torch.nn.functional.cosine_similarity(image_embeds.float(), caption_embeds.float(), dim=-1)
    return weight * cosine.clamp(min=0)


def coco_caption_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of `predictions[i]` against `references[i]`, tokenised as the COCO evaluation does."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    tokenizer = PTBTokenizer()
    results = tokenizer.tokenize({i: [{"caption": caption}] for i, caption in enumerate(predictions)})
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in enumerate(references)})
    bleu, _ = Bleu(4).compute_score(gts, results, verbose=0)
    cider, _ = Cider().compute_score(gts, results)
    return {**{f"bleu_{n}": float(score) for n, score in enumerate(bleu, start=1)}, "cider": float(cider)}


def distinct_n(captions: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams, across every caption (lower-cased, split on whitespace)."""
    ngrams = Counter()
    for caption in captions:
        words = caption.lower().split()
        ngrams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(ngrams.values())
    return len(ngrams) / total if total else 0.0


def semantic_accuracy(captions: list[str], scenes: list) -> dict[str, float | int]:
    """Fraction of captions with no error against their `synthetic.Scene`, overall, by number of objects in the
    scene (`semantic_accuracy_<n>obj`), and the count of each error type (`errors_<type>`)."""
    from synthetic import caption_errors

    correct, total, errors = Counter(), Counter(), Counter()
    for caption, scene in zip(captions, scenes, strict=True):
        found = caption_errors(caption, scene)
        objects = len(scene.objects)
        total[objects] += 1
        correct[objects] += not found
        errors.update(found)
    result: dict[str, float | int] = {"semantic_accuracy": sum(correct.values()) / max(sum(total.values()), 1)}
    for objects in sorted(total):
        result[f"semantic_accuracy_{objects}obj"] = correct[objects] / total[objects]
    result.update({f"errors_{kind}": count for kind, count in sorted(errors.items())})
    return result
