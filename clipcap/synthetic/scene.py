# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""What a synthetic scene is: its appliances (kind, colour, bounding box), grouped into units of identical objects.

A scene is stored as this plain description, never as the layout that produced it, so its captions can be written
from it and any caption checked against its geometry.
"""

from __future__ import annotations

import dataclasses
import json

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
LAYOUTS = ("single", "row", "column", "stack_beside")
# The dataset column (and FiftyOne field) that holds a scene's description, `Scene.to_dict()` or `Scene.to_json()`.
SCENE_COLUMN = "scene"


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

    def sample_fields(self) -> dict:
        """What a FiftyOne sample of this scene carries about it: its description, under `SCENE_COLUMN` (a dict field,
        which becomes a JSON column of the prepared dataset)."""
        return {SCENE_COLUMN: self.to_dict()}

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
