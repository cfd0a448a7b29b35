# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The caption checker: `caption_errors(caption, scene)` says what a caption gets wrong about a scene.

It parses what the caption states (objects with count, colour and kind; relations between them) and checks each
statement against the scene's geometry, not against the layout that produced it. Semantic accuracy in evaluation is
the fraction of captions without errors.
"""

from __future__ import annotations

from .grammar import PARSE_PROBLEMS, Mention, parse_caption
from .scene import Scene

# What a caption the checker reads can get wrong about its scene:
FACT_ERRORS = (
    "wrong_kind",  # a mention of a kind the scene lacks (it refers to nothing, so its unit is missing too)
    "wrong_colour",  # a mention of the right kind in a wrong colour
    "wrong_count",  # a mention of the right kind and colour with a wrong count
    "wrong_relation",  # a relation the geometry contradicts
    "missing_object",  # a unit the caption never mentions
)
CAPTION_ERROR_TYPES = FACT_ERRORS + PARSE_PROBLEMS


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


def caption_errors(caption: str, scene: Scene) -> list[str]:
    """Every error in a caption about `scene`, each one of `CAPTION_ERROR_TYPES`; an empty list means the caption is
    entirely true. Its parse problems (`PARSE_PROBLEMS`) come first, then its `FACT_ERRORS`: a caption the checker
    cannot read whole is never counted true.
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
