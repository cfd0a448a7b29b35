# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Counterfactual scenes: a scene with one fact changed, drawn with the same seed, and its caption changed the same
way, so that the two images differ only in that fact and each caption is true of one image and false of the other.

This is the image side of hard negatives: NegCLIP (Yuksekgonul et al. 2023) adds hard negative images, CounterCurate
(Zhang et al. 2024) flips an image and swaps left and right in its caption, TripletCLIP (Patel et al. 2024) generates
negative images. A counterfactual here is exact, because the scene is known:

| kind | the scene | its caption |
| --- | --- | --- |
| `swap_colours` | two units exchange their colours | the two units' colours exchanged |
| `swap_kinds` | two units exchange their kinds (each drawn inside its old box) | the two units' nouns exchanged |
| `swap_units` | two units exchange places (colours and kinds; each count stays where it was) | both exchanged |
| `mirror` | mirrored left to right (the image's pixels, as for a photo) | left and right exchanged |

The kind is drawn first, then the units it edits, so that the one mirror of a scene is tried first as often as each
kind of swap (not once among its many pairs of units); the next kind is tried when one changes nothing. A
counterfactual is kept only when the checker finds its caption true of it and the original caption false of it.
"""

from __future__ import annotations

import copy
import random

from PIL import Image, ImageOps

from .checker import caption_errors
from .grammar import GRAMMAR
from .rendering import render_scene
from .scene import KINDS, Scene

COUNTERFACTUAL_KINDS = ("swap_colours", "swap_kinds", "swap_units", "mirror")
_LEFT_RIGHT = {"left": "right", "right": "left"}


def swap_colours(scene: Scene, i: int, j: int) -> Scene:
    """The scene with units `i` and `j` (and their objects) in each other's colours."""
    new = copy.deepcopy(scene)
    a, b = new.units[i], new.units[j]
    a.colour, b.colour = b.colour, a.colour
    for obj in new.objects:
        obj.colour = new.units[obj.unit].colour
    return new


def _fit(box: list[float], kind: str) -> list[float]:
    """A `kind`'s drawing inside `box` ([x, y, w, h]): its own width / height, as large as fits, standing on the box's
    bottom edge, centred."""
    x, y, w, h = box
    aspect = KINDS[kind][2]
    width, height = (w, w / aspect) if w / aspect <= h else (h * aspect, h)
    return [round(v, 5) for v in (x + (w - width) / 2, y + h - height, width, height)]


def swap_kinds(scene: Scene, i: int, j: int) -> Scene:
    """The scene with units `i` and `j` of each other's kinds, each object redrawn inside its old box (so that no new
    overlap appears and every relation still holds)."""
    new = copy.deepcopy(scene)
    a, b = new.units[i], new.units[j]
    a.kind, b.kind = b.kind, a.kind
    for obj in new.objects:
        if obj.unit in (i, j):
            obj.kind = new.units[obj.unit].kind
            obj.bounding_box = _fit(obj.bounding_box, obj.kind)
    return new


def swap_units(scene: Scene, i: int, j: int) -> Scene:
    """The scene with units `i` and `j` in each other's places: each takes the other's colour and kind (each drawn
    inside its old box), so that what is left of / above what is exchanged and each place keeps its count."""
    return swap_kinds(swap_colours(scene, i, j), i, j)


_EDITS = {"swap_colours": swap_colours, "swap_kinds": swap_kinds, "swap_units": swap_units}


def mirror(scene: Scene) -> Scene:
    """The scene's description mirrored left to right (what `ImageOps.mirror` of its image shows)."""
    new = copy.deepcopy(scene)
    for obj in new.objects:
        x, y, w, h = obj.bounding_box
        obj.bounding_box = [round(1 - x - w, 5), y, w, h]
    new.side = _LEFT_RIGHT.get(new.side, new.side)
    return new


def recaption(caption: str, scene: Scene, new: Scene) -> str:
    """`caption` of `scene` rewritten for `new` (the same units, some of another colour or kind): each noun phrase
    that names a unit of `scene` names that unit of `new` instead, keeping its count word and number."""
    text = caption.lower()
    edits = []
    for match in GRAMMAR.noun_phrase.finditer(text):
        kind = GRAMMAR.nouns[match["noun"]]
        unit = next(
            (k for k, u in enumerate(scene.units) if u.kind == kind and match["colour"] in (None, u.colour)), None
        )
        if unit is None:
            continue
        target = new.units[unit]
        plural = match["noun"] == KINDS[kind][1]
        if match["colour"]:
            edits.append((*match.span("colour"), target.colour))
        edits.append((*match.span("noun"), KINDS[target.kind][1 if plural else 0]))
    out, last = [], 0
    for start, end, word in sorted(edits):
        out += [text[last:start], word]
        last = end
    return "".join(out) + text[last:]


def mirrored_caption(caption: str) -> str:
    """`caption` with left and right exchanged in its relation phrases (the caption of the mirror image)."""
    text = caption.lower()
    covered = [m.span() for m in GRAMMAR.noun_phrase.finditer(text)]
    out, last = [], 0
    for match in GRAMMAR.relation.finditer(text):
        if any(s <= match.start() < e for s, e in covered):
            continue
        out += [text[last : match.start()], " ".join(_LEFT_RIGHT.get(w, w) for w in match[0].split())]
        last = match.end()
    return "".join(out) + text[last:]


def _options(scene: Scene, kinds, rng: random.Random) -> list[tuple]:
    """Every edit of `kinds` for `scene`, in the order they are tried: kinds in a random order, each kind's edits
    shuffled."""
    unknown = [kind for kind in kinds if kind not in COUNTERFACTUAL_KINDS]
    if unknown:
        raise ValueError(f"unknown counterfactual kind {unknown[0]!r}; known: {', '.join(COUNTERFACTUAL_KINDS)}")
    pairs = [(i, j) for i in range(len(scene.units)) for j in range(i + 1, len(scene.units))]
    order = list(dict.fromkeys(kinds))
    rng.shuffle(order)
    options = []
    for kind in order:
        edits = [(kind,)] if kind == "mirror" else [(kind, i, j) for i, j in pairs]
        rng.shuffle(edits)
        options += edits
    return options


def counterfactual(
    scene: Scene, caption: str, image: Image.Image, rng: random.Random, kinds=COUNTERFACTUAL_KINDS
) -> tuple[str, Scene, Image.Image, str] | None:
    """One counterfactual of `scene` (whose picture is `image` and one of whose true captions is `caption`), drawn by
    `rng` among `kinds`: `(kind, new scene, its image, its caption)`, or None when no edit makes the caption false.

    Colour and kind swaps are rendered from the new description with the scene's own `render_seed` at the image's
    size; the mirror is the image's pixels mirrored."""
    for kind, *units in _options(scene, kinds, rng):
        if kind == "mirror":
            new, new_caption = mirror(scene), mirrored_caption(caption)
        else:
            new = _EDITS[kind](scene, *units)
            new_caption = recaption(caption, scene, new)
        if caption_errors(new_caption, new) or not caption_errors(caption, new):
            continue  # the edit changed nothing the caption says, or its caption is not true of it
        new_image = ImageOps.mirror(image) if kind == "mirror" else render_scene(new, image.size[0])
        return kind, new, new_image, new_caption
    return None
