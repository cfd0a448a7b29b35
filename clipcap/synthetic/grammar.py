# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The captions' language: written once (`GRAMMAR`), spoken by the reference captions, read by `parse_caption`.

A caption is a frame ("a photo of {}") around a statement: a noun phrase ("two blue kettles": count word, colour,
noun), then relations ("to the left of", "above", "next to", ...) to further noun phrases, in clauses joined by
", which is" or ", and". `reference_captions` writes such sentences from a scene, so they state every unit's kind,
colour and count and the layout's relations exactly; `parse_caption` reads what any caption states, and whether it
is a sentence of the language at all. Every pattern that reads captions is derived from `GRAMMAR`.
"""

from __future__ import annotations

import dataclasses
import random
import re
from functools import cached_property

from .scene import COLOURS, KINDS, Scene, Unit

NUMBERS = {1: "a", 2: "two", 3: "three"}  # how reference captions say a unit's count
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "the": None, "two": 2, "three": 3, "four": 4}  # None: the count unsaid
NOUN_TO_KIND = {noun: kind for kind, (noun, _, _) in KINDS.items()}
PLURAL_TO_KIND = {plural: kind for kind, (_, plural, _) in KINDS.items()}
# Relation phrases -> (canonical relation, whether subject and object swap to reach it).
RELATION_PHRASES = {
    "to the left of": ("left_of", False),
    "left of": ("left_of", False),
    "to the right of": ("left_of", True),
    "right of": ("left_of", True),
    "above": ("above", False),
    "on top of": ("above", False),
    "below": ("above", True),
    "under": ("above", True),
    "next to": ("next_to", False),
    "beside": ("next_to", False),
}
# How reference captions relate the units of a row / a column, first to last: the relation, its converse (last to
# first), and a relation that also holds between neighbours, first to last and last to first.
LINE_PHRASES = {
    "row": ("to the left of", "to the right of", "next to", "next to"),
    "column": ("above", "below", "on top of", "under"),
}
CAPTION_FRAMES = ("{}", "a photo of {}", "a picture of {}")  # "{}" is the statement; any caption takes one
ONE_UNIT_FRAMES = ("there is {}", "there are {}")  # what a caption of a single unit may also say: one / several
# What `parse_caption` finds when it cannot read a caption whole (such a caption is never counted true):
PARSE_PROBLEMS = (
    "no_object",  # nothing recognised
    "dangling_relation",  # a relation phrase without an object on both sides
    "unknown_object",  # an appliance noun outside a "count colour noun" phrase
    "ungrammatical",  # none of those, but no sentence of the grammar: noun phrases run together, "next" alone...
)
# How a statement's clauses are joined (", which is" and ", and" in the reference captions).
_CLAUSE_JOINER = r"\s*(?:,\s*which is|,\s*and|,|\s+and|\s+which is)\s+"


def _one_of(words) -> str:
    return "|".join(re.escape(word) for word in words)


def _longest_first(words) -> list[str]:  # at any position, the longest phrase is tried first
    return sorted(words, key=len, reverse=True)


def _framed(frame: str, statement: str) -> str:
    """The pattern of `frame` around `statement`: the frame's words as written, any whitespace beside the statement."""
    before, after = frame.split("{}")
    space_before = r"\s+" if before[-1:].isspace() else ""
    space_after = r"\s+" if after[:1].isspace() else ""
    return re.escape(before.rstrip()) + space_before + statement + space_after + re.escape(after.lstrip())


@dataclasses.dataclass(frozen=True)
class CaptionGrammar:
    """The words and frames of the captions' language, and the patterns derived from them."""

    frames: tuple[str, ...]  # CAPTION_FRAMES
    one_unit_frames: tuple[str, str]  # ONE_UNIT_FRAMES: for one object, for several
    count_words: dict[str, int | None]
    colours: tuple[str, ...]
    nouns: dict[str, str]  # singular and plural nouns -> Open Images class name
    relation_phrases: dict[str, tuple[str, bool]]

    def noun_phrase_pattern(self, named: bool) -> str:
        """The noun phrase "count [colour] noun", with the groups count, colour and noun when `named`."""

        def group(name, words):
            return f"(?P<{name}>{_one_of(words)})" if named else f"(?:{_one_of(words)})"

        count, colour = group("count", self.count_words), group("colour", self.colours)
        return rf"{count}\s+(?:{colour}\s+)?{group('noun', _longest_first(self.nouns))}"

    @property
    def relation_pattern(self) -> str:
        return _one_of(_longest_first(self.relation_phrases))

    @cached_property
    def noun_phrase(self) -> re.Pattern:
        return re.compile(rf"\b{self.noun_phrase_pattern(named=True)}\b")

    @cached_property
    def relation(self) -> re.Pattern:
        return re.compile(rf"\b(?:{self.relation_pattern})\b")

    @cached_property
    def bare_noun(self) -> re.Pattern:
        return re.compile(rf"\b(?:{_one_of(_longest_first(self.nouns))})\b")

    @cached_property
    def sentence(self) -> re.Pattern:
        """A whole caption: a frame around a noun phrase, optionally related to a second one, then further clauses
        ("relation noun phrase", or "noun phrase relation noun phrase"), and an optional period."""
        np, rel = self.noun_phrase_pattern(named=False), self.relation_pattern
        clause = rf"(?:(?:{rel})\s+{np}|{np}\s+(?:{rel})\s+{np})"
        statement = rf"{np}(?:\s+(?:{rel})\s+{np})?(?:{_CLAUSE_JOINER}{clause})*"
        framed = "|".join(_framed(frame, statement) for frame in (*self.frames, *self.one_unit_frames))
        return re.compile(rf"(?:{framed})\s*\.?")


GRAMMAR = CaptionGrammar(
    frames=CAPTION_FRAMES,
    one_unit_frames=ONE_UNIT_FRAMES,
    count_words=COUNT_WORDS,
    colours=tuple(COLOURS),
    nouns={**NOUN_TO_KIND, **PLURAL_TO_KIND},
    relation_phrases=RELATION_PHRASES,
)


# ---------------------------------------------------------------------------------------------------------------------
# Writing captions
# ---------------------------------------------------------------------------------------------------------------------


def noun_phrase(unit: Unit) -> str:
    noun, plural, _ = KINDS[unit.kind]
    return f"{NUMBERS[unit.count]} {unit.colour} {plural if unit.count > 1 else noun}"


def reference_captions(scene: Scene, rng: random.Random) -> list[str]:
    """Several paraphrases, each stating every unit's count, colour and kind and the layout's relations."""
    p = {i: noun_phrase(u) for i, u in enumerate(scene.units)}
    if scene.layout == "single":
        one, several = GRAMMAR.one_unit_frames
        frames = (*GRAMMAR.frames, several if scene.units[0].count > 1 else one)
        return [frame.format(p[0]) for frame in frames]
    if scene.layout in LINE_PHRASES:  # units in a row (left to right) or a column (top to bottom)
        forward, backward, close, close_backward = LINE_PHRASES[scene.layout]
        if len(scene.units) == 2:
            a, b = p[0], p[1]
            bodies = [f"{a} {forward} {b}", f"{b} {backward} {a}", f"{a} {close} {b}", f"{b} {close_backward} {a}"]
        else:
            a, b, c = p[0], p[1], p[2]
            bodies = [
                f"{a} {forward} {b}, which is {forward} {c}",
                f"{c} {backward} {b}, which is {backward} {a}",
                f"{a} {close} {b}, which is {close} {c}",
            ]
    else:  # stack_beside: 0 on top of 1, 2 on the floor beside 1
        a, b, c, s = p[0], p[1], p[2], scene.side
        bodies = [
            f"{a} above {b}, and {c} to the {s} of {b}",
            f"{b} below {a}, and {c} to the {s} of {b}",
            f"{c} to the {s} of {b}, which is below {a}",
            f"{a} on top of {b}, and {c} next to {b}",
        ]
    return [rng.choice(GRAMMAR.frames).format(body) for body in bodies]


# ---------------------------------------------------------------------------------------------------------------------
# Reading captions
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mention:
    count: int | None  # None for "the"
    colour: str | None
    kind: str


@dataclasses.dataclass
class ParsedCaption:
    mentions: list[Mention]
    relations: list[tuple[Mention, str, Mention]]  # canonical (subject, left_of/above/next_to, object)
    problems: list[str]  # of PARSE_PROBLEMS, as found


def noun_phrases(text: str) -> list[tuple[int, int, Mention]]:
    """Every "count colour kind" phrase of a caption, in order, repeats included: (start, end, what it names)."""
    phrases = []
    for match in GRAMMAR.noun_phrase.finditer(text.lower()):
        mention = Mention(GRAMMAR.count_words[match["count"]], match["colour"], GRAMMAR.nouns[match["noun"]])
        phrases.append((match.start(), match.end(), mention))
    return phrases


def parse_caption(text: str) -> ParsedCaption:
    """What a caption states: its objects and, for each relation phrase, the nearest object before and after it."""
    text = text.lower()
    tokens = noun_phrases(text)
    covered = [(s, e) for s, e, _ in tokens]
    problems = []
    for match in GRAMMAR.bare_noun.finditer(text):  # an appliance named without a determiner ("red toaster toaster")
        if not any(s <= match.start() < e for s, e in covered):
            problems.append("unknown_object")
    for match in GRAMMAR.relation.finditer(text):
        if not any(s <= match.start() < e for s, e in covered):
            tokens.append((match.start(), match.end(), match[0]))
    tokens.sort(key=lambda t: t[0])
    mentions = list(dict.fromkeys(t[2] for t in tokens if isinstance(t[2], Mention)))
    relations = []
    for i, (_, _, token) in enumerate(tokens):
        if isinstance(token, Mention):
            continue
        before = next((t[2] for t in reversed(tokens[:i]) if isinstance(t[2], Mention)), None)
        after = tokens[i + 1][2] if i + 1 < len(tokens) and isinstance(tokens[i + 1][2], Mention) else None
        if before is None or after is None:
            problems.append("dangling_relation")
            continue
        relation, swap = GRAMMAR.relation_phrases[token]
        relations.append((after, relation, before) if swap else (before, relation, after))
    if not mentions:
        problems.append("no_object")
    if not problems and not GRAMMAR.sentence.fullmatch(text.strip()):
        problems.append("ungrammatical")  # e.g. noun phrases run together, "next" without "to", a stray word
    return ParsedCaption(mentions, relations, problems)


def is_parseable(text: str) -> bool:
    """Whether the checker reads the whole caption: a sentence of the captions' grammar, so no parse problem
    (`PARSE_PROBLEMS`), which also rules out any word outside the captions' language. A generator that drifts away
    from it (reward hacking) shows up here."""
    return not parse_caption(text).problems
