# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Hard negative captions: the same words as a true caption with one fact made false.

NegCLIP (Yuksekgonul et al. 2023, "When and why vision-language models behave like bags-of-words, and what to do
about it?", ICLR) fine-tunes CLIP with captions whose words a parser swapped, so that a model that only sees which
words occur cannot tell them from the true one. Here the captions' grammar (`clipcap.synthetic.GRAMMAR`) finds each
noun phrase ("two red kettles": count, colour, noun) and relation phrase exactly, so every edit is exact:

| kind | edit | what a bag of words misses |
| --- | --- | --- |
| `swap_colours` | two noun phrases exchange their colours | which colour goes with which object |
| `swap_kinds` | two noun phrases exchange their nouns | which kind goes with which colour |
| `swap_phrases` | two noun phrases exchange places | the order, so the relation between them |
| `converse_relation` | a relation phrase replaced by its converse ("left of" -> "right of") | the relation |
| `change_count` | a count word changed ("a red oven" -> "two red ovens") | the count |
| `other_colour` | a colour the caption never names | (an easy negative) |
| `other_kind` | a kind the caption never names | (an easy negative) |

An edit is only a candidate: it is kept when a judge says it is false (`scene_judge`: the checker on a synthetic
scene; `label_judge`: the labels of a photo, for the captions made from Open Images labels). The first five are the
ones a bag-of-words teacher cannot tell apart (`BINDING_KINDS` and the count); `compositional_test` in
`clipcap.compositional` scores a teacher on each.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable

from clipcap.synthetic import COLOURS, GRAMMAR, KINDS, NUMBERS, PARSE_PROBLEMS, RELATION_PHRASES, Scene, caption_errors

NEGATIVE_KINDS = (
    "swap_colours",
    "swap_kinds",
    "swap_phrases",
    "converse_relation",
    "change_count",
    "other_colour",
    "other_kind",
)
BINDING_KINDS = ("swap_colours", "swap_kinds", "swap_phrases", "converse_relation")  # same words, other meaning

Judge = Callable[[str], bool]  # True when a caption is false (of an image, its scene or its labels)


def _converse_phrases() -> dict[str, str]:
    """Each relation phrase -> the phrase of the converse relation made of the most words in common ("to the left
    of" -> "to the right of", "above" -> "below", "on top of" -> "under"); symmetric relations ("next to") have
    none."""
    converse = {}
    for phrase, (relation, swapped) in RELATION_PHRASES.items():
        options = [p for p, (r, s) in RELATION_PHRASES.items() if r == relation and s != swapped]
        if options:
            words = set(phrase.split())
            converse[phrase] = max(options, key=lambda p: (len(words & set(p.split())), -len(p)))
    return converse


CONVERSE_PHRASES = _converse_phrases()


def _noun(kind: str, plural: bool) -> str:
    noun, nouns, _ = KINDS[kind]
    return nouns if plural else noun


def _replace(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    """`text` with each (start, end) span replaced; spans do not overlap."""
    out, last = [], 0
    for start, end, new in sorted(edits):
        out.append(text[last:start])
        out.append(new)
        last = end
    return "".join(out) + text[last:]


class _Phrase:
    """One noun phrase of a caption: its spans and what it names."""

    def __init__(self, match: re.Match):
        self.match = match
        self.count = GRAMMAR.count_words[match["count"]]
        self.colour = match["colour"]
        self.kind = GRAMMAR.nouns[match["noun"]]
        self.plural = match["noun"] == KINDS[self.kind][1]

    def span(self, group: str = 0) -> tuple[int, int]:
        return self.match.span(group)


def _phrases(text: str) -> list[_Phrase]:
    return [_Phrase(match) for match in GRAMMAR.noun_phrase.finditer(text)]


def _pairs(phrases: list[_Phrase]):
    return itertools.combinations(range(len(phrases)), 2)


def candidates(caption: str, kind: str) -> list[str]:
    """Every edit of `kind` (`NEGATIVE_KINDS`) of a caption, in a fixed order, none judged yet; a caption the edit
    cannot change gives none. The caption is read lower-cased, as the checker reads it."""
    text = caption.lower()
    phrases = _phrases(text)
    out = []
    if kind == "swap_colours":
        for i, j in _pairs(phrases):
            a, b = phrases[i], phrases[j]
            if a.colour and b.colour and a.colour != b.colour:
                out.append(_replace(text, [(*a.span("colour"), b.colour), (*b.span("colour"), a.colour)]))
    elif kind == "swap_kinds":
        for i, j in _pairs(phrases):
            a, b = phrases[i], phrases[j]
            if a.kind != b.kind:
                edits = [(*a.span("noun"), _noun(b.kind, a.plural)), (*b.span("noun"), _noun(a.kind, b.plural))]
                out.append(_replace(text, edits))
    elif kind == "swap_phrases":
        for i, j in _pairs(phrases):
            a, b = phrases[i], phrases[j]
            if a.match[0] != b.match[0]:
                out.append(_replace(text, [(*a.span(), b.match[0]), (*b.span(), a.match[0])]))
    elif kind == "converse_relation":
        covered = [p.span() for p in phrases]
        for match in GRAMMAR.relation.finditer(text):
            inside = any(s <= match.start() < e for s, e in covered)
            if not inside and match[0] in CONVERSE_PHRASES:
                out.append(_replace(text, [(*match.span(), CONVERSE_PHRASES[match[0]])]))
    elif kind == "change_count":
        for p in phrases:
            for count in sorted(NUMBERS):
                if p.count is not None and count != p.count:
                    edits = [(*p.span("count"), NUMBERS[count]), (*p.span("noun"), _noun(p.kind, count > 1))]
                    out.append(_replace(text, edits))
    elif kind == "other_colour":
        named = {p.colour for p in phrases}
        for p in phrases:
            if p.colour:
                out.extend(_replace(text, [(*p.span("colour"), c)]) for c in COLOURS if c not in named)
    elif kind == "other_kind":
        named = {p.kind for p in phrases}
        for p in phrases:
            out.extend(_replace(text, [(*p.span("noun"), _noun(k, p.plural))]) for k in KINDS if k not in named)
    else:
        raise ValueError(f"unknown hard negative kind {kind!r}; known: {', '.join(NEGATIVE_KINDS)}")
    return list(dict.fromkeys(c for c in out if c != text))


def scene_judge(scene: Scene | str) -> Judge:
    """False of a synthetic scene by the checker: a fact error, and a sentence of the captions' grammar (a caption
    the checker cannot read is not a hard negative, it is just wrong)."""
    scene = Scene.from_json(scene) if isinstance(scene, str) else scene

    def is_false(caption: str) -> bool:
        errors = caption_errors(caption, scene)
        return bool(errors) and not set(errors) & set(PARSE_PROBLEMS)

    return is_false


def label_judge(labels: Iterable[str]) -> Judge:
    """False of a photo by its labels (Open Images classes), for captions made from them: a kind it has no label of,
    or a count its labels contradict. Colours and relations are not in the labels, so nothing else is judged false."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1

    def is_false(caption: str) -> bool:
        for p in _phrases(caption.lower()):
            if p.kind not in counts or (p.count is not None and p.count != counts[p.kind]):
                return True
        return False

    return is_false


def judge_of(scene: Scene | str | None, labels: Iterable[str] | None = None) -> Judge | None:
    """The judge of an image: by its synthetic scene when it has one, else by its labels, else None (no negative
    can be judged false)."""
    if scene is not None:
        return scene_judge(scene)
    return label_judge(labels) if labels is not None else None


def draw_hard_negatives(
    captions: list[str], judges: list[Judge | None], kinds: Iterable[str], per_caption: int, rng: random.Random
) -> tuple[list[str], list[int], list[str]]:
    """Up to `per_caption` hard negatives of each caption, of different kinds drawn at random among those it has:
    `(negatives, owners, kinds)`, negative k made from `captions[owners[k]]` by an edit of `kinds[k]`."""
    negatives, owners, made = [], [], []
    for owner, (caption, judge) in enumerate(zip(captions, judges, strict=True)):
        if judge is None:
            continue
        found = hard_negatives(caption, judge, kinds, per_kind=None, rng=rng)
        chosen = list(found)
        rng.shuffle(chosen)
        for kind in chosen[:per_caption]:
            negatives.append(found[kind][0])
            owners.append(owner)
            made.append(kind)
    return negatives, owners, made


def hard_negatives(
    caption: str,
    is_false: Judge,
    kinds: Iterable[str] = BINDING_KINDS,
    per_kind: int | None = 1,
    rng: random.Random | None = None,
) -> dict[str, list[str]]:
    """For each of `kinds`, up to `per_kind` edits of `caption` that `is_false` judges false (all of them with
    `per_kind=None`), drawn by `rng` or, without one, the first in `candidates`' order. Kinds with none are left
    out."""
    out = {}
    for kind in kinds:
        found = [c for c in candidates(caption, kind) if is_false(c)]
        if rng is not None:
            rng.shuffle(found)
        if found:
            out[kind] = found if per_kind is None else found[:per_kind]
    return out
