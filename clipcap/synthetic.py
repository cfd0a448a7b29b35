"""The embedded synthetic dataset: rendered home-appliance scenes with exact, checkable captions.

Offline there is no Open Images, so the project draws its own domain with PIL: 1-3 home appliances of 8 kinds (named
as Open Images' "Home appliance" classes) in 6 colours, in a room with a wall and a floor, side by side, stacked or
both, at varied sizes, over varied backgrounds with pixel noise. Every scene is stored as a plain description
(`Scene`: the objects with kind, colour and bounding box, grouped into units of identical objects), and its reference
captions are written from that description, so they state kinds, colours, counts and relations exactly.

`caption_errors(caption, scene)` checks any caption against a scene: it parses what the caption states (objects with
count, colour and kind; relations between them) and checks each statement against the scene's geometry, not against
the layout that produced it. Semantic accuracy in evaluation is the fraction of captions without errors.

Everything is deterministic for a seed: scene `i` of split `s` depends only on `(seed, s, i)`.

    python -m clipcap.synthetic --num_train 8 --num_validation 0 --output_dir /tmp/scenes   # writes PNGs + scenes.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Open Images V7 class name -> (noun used in captions, plural, width / height of the drawing).
KINDS: dict[str, tuple[str, str, float]] = {
    "Refrigerator": ("refrigerator", "refrigerators", 0.55),
    "Microwave oven": ("microwave oven", "microwave ovens", 1.6),
    "Washing machine": ("washing machine", "washing machines", 0.85),
    "Oven": ("oven", "ovens", 1.0),
    "Toaster": ("toaster", "toasters", 1.35),
    "Kettle": ("kettle", "kettles", 1.0),
    "Coffeemaker": ("coffeemaker", "coffeemakers", 0.72),
    "Mechanical fan": ("mechanical fan", "mechanical fans", 0.62),
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "yellow": (235, 200, 35),
    "green": (40, 150, 55),
    "blue": (40, 75, 205),
    "white": (240, 240, 240),
    "black": (28, 28, 28),
}
NUMBERS = {1: "a", 2: "two", 3: "three"}
CAPTION_FRAMES = ("{}", "a photo of {}", "a picture of {}")
LAYOUTS = ("single", "row", "column", "stack_beside")
NOUN_TO_KIND = {noun: kind for kind, (noun, _, _) in KINDS.items()}
PLURAL_TO_KIND = {plural: kind for kind, (_, plural, _) in KINDS.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SceneObject:
    kind: str  # Open Images class name, e.g. "Microwave oven"
    colour: str
    unit: int  # index into Scene.units
    bounding_box: list[float]  # [x, y, width, height], relative to the image, as in FiftyOne


@dataclasses.dataclass
class Unit:
    """One or more identical objects (same kind and colour) standing together; captions name a unit once."""

    kind: str
    colour: str
    count: int


@dataclasses.dataclass
class Scene:
    layout: str  # one of LAYOUTS; how the units were placed (captions are checked against geometry, not this)
    units: list[Unit]  # row: left to right; column: top to bottom; stack_beside: top, bottom, beside
    objects: list[SceneObject]
    side: str  # "left" / "right": where the side unit of stack_beside stands; "" otherwise
    render_seed: int  # background, shading, noise and details of the drawing

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        data = dict(data)
        data["units"] = [Unit(**unit) for unit in data["units"]]
        data["objects"] = [SceneObject(**obj) for obj in data["objects"]]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        return cls.from_dict(json.loads(text))

    def unit_box(self, index: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) around every object of unit `index`, relative coordinates."""
        boxes = [o.bounding_box for o in self.objects if o.unit == index]
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[0] + b[2] for b in boxes),
            max(b[1] + b[3] for b in boxes),
        )


def noun_phrase(unit: Unit) -> str:
    noun, plural, _ = KINDS[unit.kind]
    return f"{NUMBERS[unit.count]} {unit.colour} {plural if unit.count > 1 else noun}"


# ---------------------------------------------------------------------------------------------------------------------
# Sampling a scene
# ---------------------------------------------------------------------------------------------------------------------


def _sample_units(rng: random.Random) -> list[Unit]:
    num_objects = rng.randint(1, 3)
    if num_objects == 1:
        counts = [1]
    elif num_objects == 2:
        counts = [2] if rng.random() < 0.25 else [1, 1]
    else:
        draw = rng.random()
        counts = [3] if draw < 0.15 else ([2, 1] if draw < 0.4 else [1, 1, 1])
        rng.shuffle(counts)
    units, seen = [], set()
    for count in counts:
        while True:
            kind, colour = rng.choice(list(KINDS)), rng.choice(list(COLOURS))
            if (kind, colour) not in seen:  # identical objects always form one unit
                break
        seen.add((kind, colour))
        units.append(Unit(kind, colour, count))
    return units


def _place_unit(
    unit: Unit, slot: tuple[float, float, float, float], rng: random.Random, scale: float, centre: float | None = None
) -> list[list]:
    """Boxes (x0, y0, x1, y1) of a unit's objects side by side, standing on the slot's bottom edge.

    The unit goes anywhere across the slot, or centred near `centre` (kept inside the slot) when given.
    """
    x0, y0, x1, y1 = slot
    aspect = KINDS[unit.kind][2]
    gap = 0.02
    width_each = (x1 - x0 - gap * (unit.count - 1)) / unit.count
    height = min(scale * (y1 - y0), width_each / aspect)
    width = height * aspect
    total = width * unit.count + gap * (unit.count - 1)
    if centre is None:
        left = x0 + rng.uniform(0, (x1 - x0) - total)
    else:
        left = min(max(centre + rng.uniform(-0.03, 0.03) - total / 2, x0), x1 - total)
    return [[left + i * (width + gap), y1 - height, left + i * (width + gap) + width, y1] for i in range(unit.count)]


def sample_scene(rng: random.Random) -> Scene:
    """Draw the contents and layout of one scene (relative coordinates; the image size does not matter here)."""
    units = _sample_units(rng)
    n = len(units)
    layout = (
        "single" if n == 1 else rng.choice(("row", "row", "column") if n == 2 else ("row", "stack_beside", "column"))
    )
    floor = rng.uniform(0.8, 0.94)  # where units standing on the floor put their bottom edge
    margin, gap = 0.04, 0.05
    side = ""
    boxes: dict[int, list[list]] = {}
    if layout in ("single", "row"):
        width = (1 - 2 * margin - gap * (n - 1)) / n
        for i in range(n):
            x0 = margin + i * (width + gap)
            slot_top = rng.uniform(0.06, 0.3) if n > 1 else rng.uniform(0.06, 0.45)
            boxes[i] = _place_unit(units[i], (x0, slot_top, x0 + width, floor), rng, rng.uniform(0.6, 1.0))
    else:
        # A column of units, each standing on the one below; stack_beside adds one unit on the floor beside it.
        stack = list(range(n)) if layout == "column" else [0, 1]
        if layout == "stack_beside":
            side = rng.choice(("left", "right"))
            column = (margin, 0.58 - gap / 2) if side == "right" else (0.42 + gap / 2, 1 - margin)
            beside = (1 - margin - (0.42 - gap / 2), 1 - margin) if side == "right" else (margin, 0.42 - gap / 2)
            boxes[2] = _place_unit(units[2], (beside[0], 0.3, beside[1], floor), rng, rng.uniform(0.55, 1.0))
        else:
            half = rng.uniform(0.3, 0.45)
            middle = rng.uniform(0.5 - (0.45 - half), 0.5 + (0.45 - half))
            column = (middle - half, middle + half)
        bottom, room = floor, (floor - 0.04) / len(stack)
        centre = None
        for i in reversed(stack):  # bottom unit first; each one above stands centred on the one below
            slot = (column[0], bottom - room, column[1], bottom)
            placed = _place_unit(units[i], slot, rng, rng.uniform(0.7, 1.0), centre)
            boxes[i] = placed
            bottom = min(b[1] for b in placed) - 0.01
            centre = (min(b[0] for b in placed) + max(b[2] for b in placed)) / 2
    objects = [
        SceneObject(units[i].kind, units[i].colour, i, [round(v, 5) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])])
        for i in range(n)
        for b in boxes[i]
    ]
    return Scene(layout, units, objects, side, rng.randrange(2**31))


# ---------------------------------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------------------------------


def reference_captions(scene: Scene, rng: random.Random) -> list[str]:
    """Several paraphrases, each stating every unit's count, colour and kind and the layout's relations."""
    p = {i: noun_phrase(u) for i, u in enumerate(scene.units)}
    if scene.layout == "single":
        a, be = p[0], "are" if scene.units[0].count > 1 else "is"
        return [a, f"a photo of {a}", f"a picture of {a}", f"there {be} {a}"]
    if scene.layout == "row" and len(scene.units) == 2:
        a, b = p[0], p[1]
        bodies = [f"{a} to the left of {b}", f"{b} to the right of {a}", f"{a} next to {b}", f"{b} next to {a}"]
    elif scene.layout == "row":
        a, b, c = p[0], p[1], p[2]
        bodies = [
            f"{a} to the left of {b}, which is to the left of {c}",
            f"{c} to the right of {b}, which is to the right of {a}",
            f"{a} next to {b}, which is next to {c}",
        ]
    elif scene.layout == "column" and len(scene.units) == 2:
        a, b = p[0], p[1]
        bodies = [f"{a} above {b}", f"{b} below {a}", f"{a} on top of {b}", f"{b} under {a}"]
    elif scene.layout == "column":
        a, b, c = p[0], p[1], p[2]
        bodies = [
            f"{a} above {b}, which is above {c}",
            f"{c} below {b}, which is below {a}",
            f"{a} on top of {b}, which is on top of {c}",
        ]
    else:  # stack_beside: 0 on top of 1, 2 on the floor beside 1
        a, b, c, s = p[0], p[1], p[2], scene.side
        bodies = [
            f"{a} above {b}, and {c} to the {s} of {b}",
            f"{b} below {a}, and {c} to the {s} of {b}",
            f"{c} to the {s} of {b}, which is below {a}",
            f"{a} on top of {b}, and {c} next to {b}",
        ]
    return [rng.choice(CAPTION_FRAMES).format(body) for body in bodies]


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
_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "the": None, "two": 2, "three": 3, "four": 4}
_NOUNS = sorted(list(NOUN_TO_KIND) + list(PLURAL_TO_KIND), key=len, reverse=True)
_NP = re.compile(
    r"\b(?P<count>{})\s+(?:(?P<colour>{})\s+)?(?P<noun>{})\b".format(
        "|".join(_COUNT_WORDS), "|".join(COLOURS), "|".join(re.escape(n) for n in _NOUNS)
    )
)
_REL = re.compile(
    r"\b(?:{})\b".format("|".join(re.escape(r) for r in sorted(RELATION_PHRASES, key=len, reverse=True)))
)
_BARE_NOUN = re.compile(r"\b(?:{})\b".format("|".join(re.escape(n) for n in _NOUNS)))
# The captions' grammar: an optional frame, a noun phrase, then relations to further noun phrases, clauses joined by
# ", which is" / ", and" (every reference caption, `reference_captions`, is one of these sentences).
_NP_TEXT = r"(?:{})\s+(?:(?:{})\s+)?(?:{})".format(
    "|".join(_COUNT_WORDS), "|".join(COLOURS), "|".join(re.escape(n) for n in _NOUNS)
)
_REL_TEXT = "|".join(re.escape(r) for r in sorted(RELATION_PHRASES, key=len, reverse=True))
_SENTENCE = re.compile(
    r"(?:(?:a photo of|a picture of|there is|there are)\s+)?{np}(?:\s+(?:{rel})\s+{np})?"
    r"(?:\s*(?:,\s*which is|,\s*and|,|\s+and|\s+which is)\s+(?:(?:{rel})\s+{np}|{np}\s+(?:{rel})\s+{np}))*"
    r"\s*\.?".format(np=_NP_TEXT, rel=_REL_TEXT)
)


@dataclasses.dataclass(frozen=True)
class Mention:
    count: int | None  # None for "the"
    colour: str | None
    kind: str


@dataclasses.dataclass
class ParsedCaption:
    mentions: list[Mention]
    relations: list[tuple[Mention, str, Mention]]  # canonical (subject, left_of/above/next_to, object)
    problems: list[str]  # "no_object", "dangling_relation", "unknown_object", "ungrammatical"


def noun_phrases(text: str) -> list[tuple[int, int, Mention]]:
    """Every "count colour kind" phrase of a caption, in order, repeats included: (start, end, what it names)."""
    phrases = []
    for match in _NP.finditer(text.lower()):
        noun = match["noun"]
        kind = NOUN_TO_KIND.get(noun) or PLURAL_TO_KIND[noun]
        phrases.append((match.start(), match.end(), Mention(_COUNT_WORDS[match["count"]], match["colour"], kind)))
    return phrases


def parse_caption(text: str) -> ParsedCaption:
    """What a caption states: its objects and, for each relation phrase, the nearest object before and after it."""
    text = text.lower()
    tokens = noun_phrases(text)
    covered = [(s, e) for s, e, _ in tokens]
    problems = []
    for match in _BARE_NOUN.finditer(text):  # an appliance named without a determiner ("red toaster toaster")
        if not any(s <= match.start() < e for s, e in covered):
            problems.append("unknown_object")
    for match in _REL.finditer(text):
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
        relation, swap = RELATION_PHRASES[token]
        relations.append((after, relation, before) if swap else (before, relation, after))
    if not mentions:
        problems.append("no_object")
    if not problems and not _SENTENCE.fullmatch(text.strip()):
        problems.append("ungrammatical")  # e.g. noun phrases run together, "next" without "to", a stray word
    return ParsedCaption(mentions, relations, problems)


def is_parseable(text: str) -> bool:
    """Whether the checker reads the whole caption: a sentence of the captions' grammar, so no parse problem
    (no_object, dangling_relation, unknown_object, ungrammatical), which also rules out any word outside the
    captions' language. A generator that drifts away from it (reward hacking) shows up here."""
    return not parse_caption(text).problems


def relation_holds(scene: Scene, subject: int, relation: str, obj: int) -> bool:
    """Geometric truth of `subject relation obj` between two units (left_of, above, next_to)."""
    a, b = scene.unit_box(subject), scene.unit_box(obj)
    if relation == "left_of":
        return a[2] <= b[0]
    if relation == "above":
        return a[3] <= b[1]
    if relation == "next_to":
        if not (a[2] <= b[0] or b[2] <= a[0]) or a[3] <= b[1] or b[3] <= a[1]:
            return False  # not side by side, or no vertical overlap
        lo, hi = min(a[2], b[2]), max(a[0], b[0])  # the horizontal gap between them
        for other in range(len(scene.units)):
            c = scene.unit_box(other)
            if (
                other not in (subject, obj)
                and c[0] < hi
                and c[2] > lo
                and c[1] < min(a[3], b[3])
                and c[3] > max(a[1], b[1])
            ):
                return False  # another unit stands between them
        return True
    raise ValueError(f"unknown relation {relation!r}")


def _match(mention: Mention, scene: Scene) -> tuple[int | None, str | None]:
    """The unit a mention refers to, and its error if it misstates that unit.

    A mention with the right kind but a wrong colour or count still refers to a unit of that kind (so the unit is not
    also reported missing); a mention of a kind the scene lacks refers to nothing.
    """
    same_kind = [i for i, u in enumerate(scene.units) if u.kind == mention.kind]
    if not same_kind:
        return None, "wrong_kind"
    candidates = [i for i in same_kind if mention.colour is None or scene.units[i].colour == mention.colour]
    if not candidates:
        return same_kind[0], "wrong_colour"
    if mention.count is not None:
        exact = [i for i in candidates if scene.units[i].count == mention.count]
        if not exact:
            return candidates[0], "wrong_count"
        candidates = exact
    return candidates[0], None


CAPTION_ERROR_TYPES = (
    "wrong_kind",
    "wrong_colour",
    "wrong_count",
    "wrong_relation",
    "missing_object",
    "no_object",
    "dangling_relation",
    "unknown_object",
    "ungrammatical",
)
# The errors that say the checker could not read the caption whole (`ParsedCaption.problems`).
PARSE_PROBLEMS = ("no_object", "dangling_relation", "unknown_object", "ungrammatical")


def caption_errors(caption: str, scene: Scene) -> list[str]:
    """Every error in a caption about `scene`, by type; an empty list means the caption is entirely true.

    Types: wrong_kind, wrong_colour, wrong_count (a mentioned object), wrong_relation, missing_object (a unit the
    caption never mentions; a wrong-kind mention leaves its object missing too), and the parse problems no_object
    (nothing recognised), dangling_relation (a relation phrase without an object on both sides), unknown_object
    (an appliance noun outside a "count colour kind" phrase) and ungrammatical (none of those, but the caption is
    not a sentence of the captions' grammar: noun phrases run together, "next" without "to", a word of no phrase).
    A caption the checker cannot read whole is never counted true.
    """
    parsed = parse_caption(caption)
    errors = list(parsed.problems)
    units = {}
    for mention in parsed.mentions:
        unit, error = _match(mention, scene)
        if error:
            errors.append(error)
        if unit is not None:
            units[mention] = unit
    for subject, relation, obj in parsed.relations:
        if subject in units and obj in units and not relation_holds(scene, units[subject], relation, units[obj]):
            errors.append("wrong_relation")
    mentioned = set(units.values())
    errors.extend("missing_object" for i in range(len(scene.units)) if i not in mentioned)
    return errors


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in rgb)


def _muted(rng: random.Random, lo: float, hi: float) -> tuple[int, int, int]:
    """A greyish background colour, far from every object colour's saturation."""
    hue, saturation, value = rng.random(), rng.uniform(0.0, 0.2), rng.uniform(lo, hi)
    i, f = int(hue * 6) % 6, hue * 6 - int(hue * 6)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    r, g, b = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_appliance(draw: ImageDraw.ImageDraw, kind: str, box, body, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dark = (40, 40, 40) if sum(body) > 200 else (150, 150, 150)
    glass = (60, 70, 80) if sum(body) > 200 else (110, 120, 130)
    edge = _shade(body, 0.55) if sum(body) > 200 else (90, 90, 90)
    line = max(1, round(min(w, h) / 24))

    def rect(a, b, c, d, fill, radius=0.0):
        coords = (x0 + a * w, y0 + b * h, x0 + c * w, y0 + d * h)
        if radius:
            draw.rounded_rectangle(coords, radius=radius * min(w, h), fill=fill, outline=edge, width=line)
        else:
            draw.rectangle(coords, fill=fill, outline=edge, width=line)

    if kind == "Refrigerator":
        rect(0, 0, 1, 1, body, 0.06)
        draw.line((x0, y0 + 0.36 * h, x1, y0 + 0.36 * h), fill=edge, width=line)
        hx = x0 + (0.82 if rng.random() < 0.5 else 0.12) * w
        draw.line((hx, y0 + 0.12 * h, hx, y0 + 0.28 * h), fill=dark, width=line + 1)
        draw.line((hx, y0 + 0.44 * h, hx, y0 + 0.66 * h), fill=dark, width=line + 1)
    elif kind == "Microwave oven":
        rect(0, 0, 1, 1, body, 0.08)
        rect(0.08, 0.15, 0.66, 0.85, glass)
        for j in range(3):
            cy = y0 + (0.28 + 0.22 * j) * h
            r = 0.05 * w
            draw.ellipse((x0 + 0.8 * w - r, cy - r, x0 + 0.8 * w + r, cy + r), fill=dark)
    elif kind == "Washing machine":
        rect(0, 0, 1, 1, body, 0.06)
        draw.line((x0, y0 + 0.2 * h, x1, y0 + 0.2 * h), fill=edge, width=line)
        cx, cy, r = x0 + 0.5 * w, y0 + 0.58 * h, 0.33 * min(w, h / 1.0)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=dark)
        draw.ellipse((cx - 0.7 * r, cy - 0.7 * r, cx + 0.7 * r, cy + 0.7 * r), fill=glass)
        draw.ellipse((x0 + 0.72 * w, y0 + 0.06 * h, x0 + 0.84 * w, y0 + 0.06 * h + 0.12 * w), fill=dark)
    elif kind == "Oven":
        rect(0, 0, 1, 1, body, 0.04)
        rect(0, 0, 1, 0.2, _shade(body, 0.8))
        for j in range(4):
            cx, r = x0 + (0.2 + 0.2 * j) * w, 0.05 * w
            draw.ellipse((cx - r, y0 + 0.1 * h - r, cx + r, y0 + 0.1 * h + r), fill=dark)
        draw.line((x0 + 0.15 * w, y0 + 0.3 * h, x0 + 0.85 * w, y0 + 0.3 * h), fill=dark, width=line + 1)
        rect(0.14, 0.38, 0.86, 0.86, glass)
    elif kind == "Toaster":
        rect(0, 0.12, 1, 1, body, 0.3)
        for fx in (0.25, 0.55):
            draw.rectangle((x0 + fx * w, y0 + 0.06 * h, x0 + (fx + 0.2) * w, y0 + 0.2 * h), fill=dark)
        lever_x = x0 + (0.93 if rng.random() < 0.5 else 0.0) * w
        draw.rectangle((lever_x, y0 + 0.4 * h, lever_x + 0.07 * w, y0 + 0.52 * h), fill=dark)
    elif kind == "Kettle":
        flip = rng.random() < 0.5

        def fx(v):  # mirror the kettle half the time
            return x0 + (1 - v if flip else v) * w

        draw.polygon(
            [(fx(0.2), y0 + 0.3 * h), (fx(0.7), y0 + 0.3 * h), (fx(0.8), y1), (fx(0.1), y1)], fill=body, outline=edge
        )
        draw.polygon(
            [(fx(0.72), y0 + 0.5 * h), (fx(1.0), y0 + 0.25 * h), (fx(1.0), y0 + 0.33 * h), (fx(0.76), y0 + 0.7 * h)],
            fill=body,
            outline=edge,
        )
        handle = (
            (x1 - 0.34 * w, y0 + 0.3 * h, x1, y0 + 0.8 * h)
            if flip
            else (x0, y0 + 0.3 * h, x0 + 0.34 * w, y0 + 0.8 * h)
        )
        draw.arc(handle, 270 if flip else 90, 90 if flip else 270, fill=dark, width=line + 1)
        draw.rectangle(
            (fx(0.22), y0 + 0.15 * h, fx(0.68), y0 + 0.3 * h)
            if not flip
            else (fx(0.68), y0 + 0.15 * h, fx(0.22), y0 + 0.3 * h),
            fill=_shade(body, 0.8),
            outline=edge,
        )
        draw.ellipse((x0 + 0.4 * w, y0 + 0.02 * h, x0 + 0.5 * w, y0 + 0.15 * h), fill=dark)
    elif kind == "Coffeemaker":
        rect(0, 0, 1, 0.28, body, 0.1)  # head
        rect(0.62, 0.2, 1, 1, body)  # column
        rect(0, 0.88, 1, 1, body)  # base
        draw.ellipse((x0 + 0.06 * w, y0 + 0.4 * h, x0 + 0.58 * w, y0 + 0.98 * h), fill=glass, outline=edge)
        draw.rectangle((x0 + 0.14 * w, y0 + 0.36 * h, x0 + 0.5 * w, y0 + 0.46 * h), fill=dark)
    elif kind == "Mechanical fan":
        cx, cy, r = x0 + 0.5 * w, y0 + 0.5 * w, 0.5 * w
        draw.rectangle((cx - 0.04 * w, cy, cx + 0.04 * w, y1 - 0.06 * h), fill=dark)  # pole
        draw.ellipse((x0 + 0.1 * w, y1 - 0.1 * h, x1 - 0.1 * w, y1), fill=body, outline=edge, width=line)  # base
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_shade(body, 0.85), outline=edge, width=line)
        start = rng.uniform(0, 120)
        for j in range(3):
            angle = math.radians(start + 120 * j)
            bx, by = cx + 0.55 * r * math.cos(angle), cy + 0.55 * r * math.sin(angle)
            draw.ellipse((bx - 0.32 * r, by - 0.32 * r, bx + 0.32 * r, by + 0.32 * r), fill=body, outline=edge)
        draw.ellipse((cx - 0.15 * r, cy - 0.15 * r, cx + 0.15 * r, cy + 0.15 * r), fill=dark)
    else:
        raise ValueError(f"unknown kind {kind!r}")


def render_scene(scene: Scene, size: int = 128) -> Image.Image:
    """Draw `scene` as a `size` x `size` RGB image: wall, floor, appliances (back to front), pixel noise."""
    rng = random.Random(scene.render_seed)
    floor_y = max(b.bounding_box[1] + b.bounding_box[3] for b in scene.objects) - rng.uniform(0.03, 0.12)
    image = Image.new("RGB", (size, size), _muted(rng, 0.45, 0.8))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, floor_y * size, size, size), fill=_muted(rng, 0.35, 0.7))
    pattern = rng.choice(("plain", "stripes", "tiles"))
    if pattern != "plain":
        tone = _shade(image.getpixel((0, 0)), rng.uniform(0.85, 0.95))
        step = rng.randint(size // 12, size // 5)
        for x in range(rng.randint(0, step), size, step):
            draw.line((x, 0, x, floor_y * size), fill=tone, width=1)
        if pattern == "tiles":
            for y in range(int(floor_y * size) + step // 2, size, step // 2):
                draw.line((0, y, size, y), fill=tone, width=1)
    for obj in sorted(scene.objects, key=lambda o: o.bounding_box[1] + o.bounding_box[3]):
        x, y, w, h = (v * size for v in obj.bounding_box)
        jitter = rng.uniform(0.85, 1.1)
        _draw_appliance(draw, obj.kind, (x, y, x + w - 1, y + h - 1), _shade(COLOURS[obj.colour], jitter), rng)
    noise = np.random.default_rng(scene.render_seed).normal(0, rng.uniform(2, 9), (size, size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


# ---------------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------------


def make_example(seed: int, split: str, index: int) -> tuple[Scene, list[str]]:
    """Scene and reference captions of example `index` of `split`; a pure function of its arguments."""
    rng = random.Random(f"clipcap-synthetic/{seed}/{split}/{index}")
    scene = sample_scene(rng)
    return scene, reference_captions(scene, rng)


def _render_to_file(job: tuple) -> tuple[Scene, list[str]]:
    seed, split, index, size, path = job
    scene, captions = make_example(seed, split, index)
    render_scene(scene, size).save(path)
    return scene, captions


def render_examples(
    image_dir: str | Path,
    num_train: int,
    num_validation: int,
    seed: int = 0,
    image_size: int = 128,
    num_proc: int = 1,
    progress: bool = True,
) -> list[tuple[str, Path, Scene, list[str]]]:
    """Render every scene to `image_dir/{split}/{index:06d}.png`; returns (split, path, scene, captions) in order.

    With `num_proc` > 1 the rendering and PNG encoding run in forked worker processes (the output is the same).
    """
    from tqdm.auto import tqdm

    image_dir = Path(image_dir).resolve()
    jobs = []
    for split, count in (("train", num_train), ("validation", num_validation)):
        (image_dir / split).mkdir(parents=True, exist_ok=True)
        jobs += [(seed, split, i, image_size, image_dir / split / f"{i:06d}.png") for i in range(count)]
    bar = {"total": len(jobs), "desc": "Rendering synthetic scenes", "disable": not progress}
    if num_proc > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(tqdm(pool.map(_render_to_file, jobs, chunksize=32), **bar))
    else:
        results = [_render_to_file(job) for job in tqdm(jobs, **bar)]
    return [(job[1], job[4], scene, captions) for job, (scene, captions) in zip(jobs, results)]


def build_fiftyone_dataset(
    name: str,
    image_dir: str | Path,
    num_train: int = 2000,
    num_validation: int = 200,
    seed: int = 0,
    image_size: int = 128,
    overwrite: bool = True,
    progress: bool = True,
    num_proc: int = 1,
):
    """Render the synthetic scenes into `image_dir` and return a FiftyOne dataset of them.

    Each sample is tagged with its split and has `ground_truth` (`Detections` with the Open Images class names and a
    `colour` attribute), `captions` (the reference captions) and `scene` (the `Scene` as a dict).
    FiftyOne must be importable, with a database (see `clipcap.mongod.fiftyone_database`).
    """
    import fiftyone as fo

    if fo.dataset_exists(name):
        if not overwrite:
            return fo.load_dataset(name)
        fo.delete_dataset(name)
    rendered = render_examples(image_dir, num_train, num_validation, seed, image_size, num_proc, progress)
    samples = [
        fo.Sample(
            filepath=str(path),
            tags=[split],
            ground_truth=fo.Detections(
                detections=[
                    fo.Detection(label=o.kind, bounding_box=o.bounding_box, colour=o.colour) for o in scene.objects
                ]
            ),
            captions=captions,
            scene=scene.to_dict(),
        )
        for split, path, scene, captions in rendered
    ]
    dataset = fo.Dataset(name)
    dataset.add_samples(samples, progress=False)
    dataset.info = {"source": "clipcap synthetic", "seed": seed, "image_size": image_size}
    dataset.save()
    return dataset


def main():
    parser = argparse.ArgumentParser(description="Render synthetic home-appliance scenes to PNGs and scenes.jsonl.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_train", type=int, default=16)
    parser.add_argument("--num_validation", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=128)
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scenes.jsonl", "w") as f:
        for split, n in (("train", args.num_train), ("validation", args.num_validation)):
            for i in range(n):
                scene, captions = make_example(args.seed, split, i)
                render_scene(scene, args.image_size).save(out / f"{split}_{i:06d}.png")
                f.write(
                    json.dumps({"file": f"{split}_{i:06d}.png", "captions": captions, "scene": scene.to_dict()}) + "\n"
                )
    print(f"wrote {args.num_train + args.num_validation} scenes to {out}")


if __name__ == "__main__":
    main()
