# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The embedded synthetic dataset: rendered home-appliance scenes with exact, checkable captions.

Offline there is no Open Images, so the project draws its own domain with PIL: 1-3 home appliances of 8 kinds (named
as Open Images' "Home appliance" classes) in 6 colours, in a room with a wall and a floor. Every scene is stored as a
plain description, its reference captions are written from that description, and any caption can be checked
against it. Everything is deterministic for a seed: scene `i` of split `s` depends only on `(seed, s, i)`.

- `scene`: what a scene is (`Scene`: objects with kind, colour and bounding box, grouped into units).
- `sampling`: drawing a scene at random, and the dataset's examples (`make_example`).
- `grammar`: the captions' language, written once; the reference captions and `parse_caption`.
- `checker`: what a caption gets wrong about a scene (`caption_errors`).
- `rendering`: drawing a scene (`render_scene`).
- `dataset`: the examples rendered to PNG files (`render_examples`).

    python -m clipcap.synthetic --num_train 8 --num_validation 0 --output_dir /tmp/scenes  # PNGs + scenes.jsonl
"""

from .checker import CAPTION_ERROR_TYPES, FACT_ERRORS, caption_errors, relation_holds
from .dataset import render_examples
from .grammar import (
    CAPTION_FRAMES,
    COUNT_WORDS,
    GRAMMAR,
    NOUN_TO_KIND,
    NUMBERS,
    ONE_UNIT_FRAMES,
    PARSE_PROBLEMS,
    PLURAL_TO_KIND,
    RELATION_PHRASES,
    CaptionGrammar,
    Mention,
    ParsedCaption,
    is_parseable,
    noun_phrase,
    noun_phrases,
    parse_caption,
    reference_captions,
)
from .rendering import render_scene
from .sampling import make_example, sample_scene
from .scene import COLOURS, KINDS, LAYOUTS, SCENE_COLUMN, Scene, SceneObject, Unit

__all__ = [
    "CAPTION_ERROR_TYPES",
    "CAPTION_FRAMES",
    "COLOURS",
    "COUNT_WORDS",
    "FACT_ERRORS",
    "GRAMMAR",
    "KINDS",
    "LAYOUTS",
    "NOUN_TO_KIND",
    "NUMBERS",
    "ONE_UNIT_FRAMES",
    "PARSE_PROBLEMS",
    "PLURAL_TO_KIND",
    "RELATION_PHRASES",
    "SCENE_COLUMN",
    "CaptionGrammar",
    "Mention",
    "ParsedCaption",
    "Scene",
    "SceneObject",
    "Unit",
    "caption_errors",
    "is_parseable",
    "make_example",
    "noun_phrase",
    "noun_phrases",
    "parse_caption",
    "reference_captions",
    "relation_holds",
    "render_examples",
    "render_scene",
    "sample_scene",
]
