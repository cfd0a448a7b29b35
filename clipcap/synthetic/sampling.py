# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Drawing a scene at random: 1-3 home appliances of 8 kinds in 6 colours, side by side, stacked or both, at varied
sizes; and the examples of the dataset, each a scene and its reference captions.

Everything is deterministic for a seed: example `i` of split `s` depends only on `(seed, s, i)`.
"""

from __future__ import annotations

import random

from .grammar import reference_captions
from .scene import COLOURS, KINDS, Scene, SceneObject, Unit


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


def make_example(seed: int, split: str, index: int) -> tuple[Scene, list[str]]:
    """Scene and reference captions of example `index` of `split`; a pure function of its arguments."""
    rng = random.Random(f"clipcap-synthetic/{seed}/{split}/{index}")
    scene = sample_scene(rng)
    return scene, reference_captions(scene, rng)
