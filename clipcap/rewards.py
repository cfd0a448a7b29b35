# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Rewards of sampled captions for self-critical training (`clipcap.scst`).

* `clip_reward`: CLIP-S of each caption with its image by the teacher, `2.5 * max(cos, 0)` (Hessel et al. 2021), the
  reward of Cho et al. 2022, "Fine-grained Image Captioning with CLIP Reward".
* `CiderDReward`: CIDEr-D of each caption against its image's references (Vedantam et al. 2015), the reward of Rennie
  et al. 2017, "Self-critical Sequence Training for Image Captioning". pycocoevalcap's `CiderScorer` computes it, with
  the document frequencies of the whole training corpus (fixed once), not of the batch at hand, as SCST does.
* `matcher_reward`: the probability the teacher's image-text matcher gives each caption of being true of its image
  (ALBEF / BLIP's ITM score): it reads the image's grid and the caption's tokens, so it sees relations that one
  pooled cosine cannot.
* `relation_contrast_reward`: the probability the matcher gives each caption rather than the same words with its
  relation reversed (its noun phrases swapped, or its relation word replaced by the converse: the grammar's edits,
  `clipcap.hard_negatives.candidates`, which read only the caption): a contrast of the same words, so a likely but
  incomplete caption gains nothing over a complete one (a likelihood reward favours the first).
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import torch
from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_refs, cook_test

from clipcap.hard_negatives import candidates
from clipcap.metrics import clip_score

_WORD = re.compile(r"[a-z0-9']+")


def reward_tokens(caption: str) -> str:
    """Lower case, punctuation dropped, words joined by spaces: the COCO tokenisation's result on plain captions,
    without its Java process (too slow to start at every training step)."""
    return " ".join(_WORD.findall(caption.lower()))


@torch.no_grad()
def clip_reward(teacher, captions: list[str], image_embeds: torch.Tensor) -> torch.Tensor:
    """CLIP-S of `captions[i]` with image i, given the images' unit-norm teacher embeddings `(N, D)`; on the CPU."""
    text_embeds = teacher.embed_texts(captions).float().cpu()
    return clip_score(image_embeds.float().cpu(), text_embeds)


@torch.no_grad()
def matcher_reward(teacher, captions: list[str], grids: torch.Tensor) -> torch.Tensor:
    """The probability the teacher's image-text matcher (`clipcap.matching`) gives `captions[i]` with the image whose
    grid is `grids[i]` (`CLIPTeacher.grids_of_pixel_values`), on the CPU: for the ITM kind the sigmoid of its logit
    (that the caption is true), for the generative kind the exponential of its mean token log-probability (the
    geometric mean of the tokens' probabilities)."""
    scores = teacher.match_grids(grids, captions)
    return scores.exp() if teacher.matcher.config.kind == "generative" else torch.sigmoid(scores)


RELATION_EDITS = ("swap_phrases", "converse_relation")


@torch.no_grad()
def relation_contrast_reward(teacher, captions: list[str], grids: torch.Tensor) -> torch.Tensor:
    """For each caption, the mean over its relation edits c' (`RELATION_EDITS`) of sigmoid(s(c) - s(c')), where s is
    the matcher's log-likelihood of the caption given the image (generative kind: the sum of its token
    log-probabilities, so that sigmoid(s(c) - s(c')) = p(c | image) / (p(c | image) + p(c' | image)), the posterior of
    c against c' under equal priors) or its ITM logit; 0.5 for a caption with no relation to reverse (one object, a
    symmetric relation's swap scores the same, or words the grammar cannot read). On the CPU."""
    negatives, owners = [], []
    for i, caption in enumerate(captions):
        edits = {edit for kind in RELATION_EDITS for edit in candidates(caption, kind)} - {caption.lower()}
        negatives += sorted(edits)
        owners += [i] * len(edits)
    reward = torch.full((len(captions),), 0.5)
    if not negatives:
        return reward
    reduction = "sum" if teacher.matcher.config.kind == "generative" else "mean"
    owners = torch.tensor(owners)
    scores = teacher.match_grids(torch.cat([grids, grids[owners]]), captions + negatives, reduction=reduction)
    wins = torch.sigmoid(scores[: len(captions)][owners] - scores[len(captions) :])
    return reward.index_reduce_(0, owners, wins, "mean", include_self=False)


class _CorpusCiderScorer(CiderScorer):
    """`CiderScorer` whose document frequencies and reference-corpus size are set once, from the training corpus:
    `compute_cider` then scores any batch of captions with them (`compute_doc_freq` would recount the batch, and
    `compute_cider` sets `ref_len` from the batch's size: both are kept to the corpus here)."""

    def __init__(self, document_frequency: defaultdict, corpus_size: int):
        super().__init__(n=4, sigma=6.0)
        self.document_frequency, self._corpus_ref_len = document_frequency, float(np.log(float(corpus_size)))

    @property
    def ref_len(self):
        return self._corpus_ref_len

    @ref_len.setter
    def ref_len(self, value):  # compute_cider assigns log(batch size); the corpus's stays
        pass


class CiderDReward:
    """CIDEr-D of captions against their references, with document frequencies from `corpus` (every training image's
    reference captions).

        reward = CiderDReward(train_dataset["captions"])
        reward(["a red kettle"], [["a red kettle", "a photo of a red kettle"]])  # tensor([...])
    """

    def __init__(self, corpus: list[list[str]]):
        document_frequency: defaultdict = defaultdict(float)  # CiderScorer reads unseen n-grams as 0
        for references in corpus:
            cooked = cook_refs([reward_tokens(reference) for reference in references if reference])
            for ngram in {ngram for counts in cooked for ngram in counts}:
                document_frequency[ngram] += 1.0
        self.document_frequency, self.corpus_size = document_frequency, len(corpus)
        if not self.corpus_size:
            raise ValueError("CIDEr-D needs a reference corpus: no training captions")

    def __call__(self, captions: list[str], references: list[list[str]]) -> torch.Tensor:
        if len(captions) != len(references):
            raise ValueError(f"{len(captions)} captions for {len(references)} reference lists")
        scorer = _CorpusCiderScorer(self.document_frequency, self.corpus_size)
        for caption, refs in zip(captions, references, strict=True):
            refs = [reward_tokens(reference) for reference in refs if reference]
            if not refs:
                raise ValueError("every caption needs at least one reference for its CIDEr-D reward")
            scorer.ctest.append(cook_test(reward_tokens(caption)))
            scorer.crefs.append(cook_refs(refs))
        return torch.tensor(scorer.compute_cider(), dtype=torch.float32)
