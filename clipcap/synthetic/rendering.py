# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Drawing a scene with PIL: a room with a wall and a floor over varied backgrounds, the appliances back to front
(one drawer per kind), and pixel noise. The image depends only on the scene (its `render_seed`) and the size.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLOURS, Scene


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in rgb)


def _muted(rng: random.Random, lo: float, hi: float) -> tuple[int, int, int]:
    """A greyish background colour, far from every object colour's saturation."""
    hue, saturation, value = rng.random(), rng.uniform(0.0, 0.2), rng.uniform(lo, hi)
    i, f = int(hue * 6) % 6, hue * 6 - int(hue * 6)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    r, g, b = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


class _Canvas:
    """Where one appliance is drawn: its box in pixels (x0, y0, x1, y1; w, h), its body colour, and what every drawer
    shares: the colours of edges, dark parts and glass, the line width, and positions relative to the box."""

    def __init__(self, draw: ImageDraw.ImageDraw, box, body):
        self.draw, self.body = draw, body
        self.x0, self.y0, self.x1, self.y1 = box
        self.w, self.h = self.x1 - self.x0, self.y1 - self.y0
        bright = sum(body) > 200
        self.dark = (40, 40, 40) if bright else (150, 150, 150)
        self.glass = (60, 70, 80) if bright else (110, 120, 130)
        self.edge = _shade(body, 0.55) if bright else (90, 90, 90)
        self.line = max(1, round(min(self.w, self.h) / 24))

    def x(self, v: float) -> float:  # a fraction of the box's width from its left edge
        return self.x0 + v * self.w

    def y(self, v: float) -> float:  # a fraction of the box's height from its top edge
        return self.y0 + v * self.h

    def rect(self, a, b, c, d, fill, radius=0.0):
        """The outlined rectangle from (a, b) to (c, d) in fractions of the box, rounded by `radius` of its side."""
        coords = (self.x(a), self.y(b), self.x(c), self.y(d))
        if radius:
            self.draw.rounded_rectangle(
                coords, radius=radius * min(self.w, self.h), fill=fill, outline=self.edge, width=self.line
            )
        else:
            self.draw.rectangle(coords, fill=fill, outline=self.edge, width=self.line)


def _draw_refrigerator(c: _Canvas, rng: random.Random) -> None:
    c.rect(0, 0, 1, 1, c.body, 0.06)
    c.draw.line((c.x0, c.y(0.36), c.x1, c.y(0.36)), fill=c.edge, width=c.line)
    hx = c.x(0.82 if rng.random() < 0.5 else 0.12)  # handles on the right or the left
    c.draw.line((hx, c.y(0.12), hx, c.y(0.28)), fill=c.dark, width=c.line + 1)
    c.draw.line((hx, c.y(0.44), hx, c.y(0.66)), fill=c.dark, width=c.line + 1)


def _draw_microwave_oven(c: _Canvas, rng: random.Random) -> None:
    c.rect(0, 0, 1, 1, c.body, 0.08)
    c.rect(0.08, 0.15, 0.66, 0.85, c.glass)
    for j in range(3):
        cy, r = c.y(0.28 + 0.22 * j), 0.05 * c.w
        c.draw.ellipse((c.x(0.8) - r, cy - r, c.x(0.8) + r, cy + r), fill=c.dark)


def _draw_washing_machine(c: _Canvas, rng: random.Random) -> None:
    c.rect(0, 0, 1, 1, c.body, 0.06)
    c.draw.line((c.x0, c.y(0.2), c.x1, c.y(0.2)), fill=c.edge, width=c.line)
    cx, cy, r = c.x(0.5), c.y(0.58), 0.33 * min(c.w, c.h)
    c.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=c.dark)
    c.draw.ellipse((cx - 0.7 * r, cy - 0.7 * r, cx + 0.7 * r, cy + 0.7 * r), fill=c.glass)
    c.draw.ellipse((c.x(0.72), c.y(0.06), c.x(0.84), c.y(0.06) + 0.12 * c.w), fill=c.dark)


def _draw_oven(c: _Canvas, rng: random.Random) -> None:
    c.rect(0, 0, 1, 1, c.body, 0.04)
    c.rect(0, 0, 1, 0.2, _shade(c.body, 0.8))
    for j in range(4):
        cx, r = c.x(0.2 + 0.2 * j), 0.05 * c.w
        c.draw.ellipse((cx - r, c.y(0.1) - r, cx + r, c.y(0.1) + r), fill=c.dark)
    c.draw.line((c.x(0.15), c.y(0.3), c.x(0.85), c.y(0.3)), fill=c.dark, width=c.line + 1)
    c.rect(0.14, 0.38, 0.86, 0.86, c.glass)


def _draw_toaster(c: _Canvas, rng: random.Random) -> None:
    c.rect(0, 0.12, 1, 1, c.body, 0.3)
    for fx in (0.25, 0.55):
        c.draw.rectangle((c.x(fx), c.y(0.06), c.x(fx + 0.2), c.y(0.2)), fill=c.dark)
    lever_x = c.x(0.93 if rng.random() < 0.5 else 0.0)
    c.draw.rectangle((lever_x, c.y(0.4), lever_x + 0.07 * c.w, c.y(0.52)), fill=c.dark)


def _draw_kettle(c: _Canvas, rng: random.Random) -> None:
    flip = rng.random() < 0.5

    def fx(v):  # mirror the kettle half the time
        return c.x(1 - v if flip else v)

    body = [(fx(0.2), c.y(0.3)), (fx(0.7), c.y(0.3)), (fx(0.8), c.y1), (fx(0.1), c.y1)]
    c.draw.polygon(body, fill=c.body, outline=c.edge)
    spout = [(fx(0.72), c.y(0.5)), (fx(1.0), c.y(0.25)), (fx(1.0), c.y(0.33)), (fx(0.76), c.y(0.7))]
    c.draw.polygon(spout, fill=c.body, outline=c.edge)
    handle = (c.x1 - 0.34 * c.w, c.y(0.3), c.x1, c.y(0.8)) if flip else (c.x0, c.y(0.3), c.x(0.34), c.y(0.8))
    c.draw.arc(handle, 270 if flip else 90, 90 if flip else 270, fill=c.dark, width=c.line + 1)
    lid = (fx(0.68), c.y(0.15), fx(0.22), c.y(0.3)) if flip else (fx(0.22), c.y(0.15), fx(0.68), c.y(0.3))
    c.draw.rectangle(lid, fill=_shade(c.body, 0.8), outline=c.edge)
    c.draw.ellipse((c.x(0.4), c.y(0.02), c.x(0.5), c.y(0.15)), fill=c.dark)


def _draw_coffeemaker(c: _Canvas, rng: random.Random) -> None:
    c.rect(0, 0, 1, 0.28, c.body, 0.1)  # head
    c.rect(0.62, 0.2, 1, 1, c.body)  # column
    c.rect(0, 0.88, 1, 1, c.body)  # base
    c.draw.ellipse((c.x(0.06), c.y(0.4), c.x(0.58), c.y(0.98)), fill=c.glass, outline=c.edge)
    c.draw.rectangle((c.x(0.14), c.y(0.36), c.x(0.5), c.y(0.46)), fill=c.dark)


def _draw_mechanical_fan(c: _Canvas, rng: random.Random) -> None:
    cx, cy, r = c.x(0.5), c.y0 + 0.5 * c.w, 0.5 * c.w  # a round head as wide as the box, at its top
    c.draw.rectangle((cx - 0.04 * c.w, cy, cx + 0.04 * c.w, c.y1 - 0.06 * c.h), fill=c.dark)  # pole
    c.draw.ellipse((c.x(0.1), c.y1 - 0.1 * c.h, c.x1 - 0.1 * c.w, c.y1), fill=c.body, outline=c.edge, width=c.line)
    c.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_shade(c.body, 0.85), outline=c.edge, width=c.line)
    start = rng.uniform(0, 120)
    for j in range(3):  # blades
        angle = math.radians(start + 120 * j)
        bx, by = cx + 0.55 * r * math.cos(angle), cy + 0.55 * r * math.sin(angle)
        c.draw.ellipse((bx - 0.32 * r, by - 0.32 * r, bx + 0.32 * r, by + 0.32 * r), fill=c.body, outline=c.edge)
    c.draw.ellipse((cx - 0.15 * r, cy - 0.15 * r, cx + 0.15 * r, cy + 0.15 * r), fill=c.dark)


# Open Images class name -> its drawer, which draws inside the canvas and may draw details from `rng`.
_DRAWERS = {
    "Refrigerator": _draw_refrigerator,
    "Microwave oven": _draw_microwave_oven,
    "Washing machine": _draw_washing_machine,
    "Oven": _draw_oven,
    "Toaster": _draw_toaster,
    "Kettle": _draw_kettle,
    "Coffeemaker": _draw_coffeemaker,
    "Mechanical fan": _draw_mechanical_fan,
}


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
        canvas = _Canvas(draw, (x, y, x + w - 1, y + h - 1), _shade(COLOURS[obj.colour], jitter))
        if obj.kind not in _DRAWERS:
            raise ValueError(f"unknown kind {obj.kind!r}")
        _DRAWERS[obj.kind](canvas, rng)
    noise = np.random.default_rng(scene.render_seed).normal(0, rng.uniform(2, 9), (size, size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
