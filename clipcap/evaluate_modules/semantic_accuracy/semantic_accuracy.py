# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Semantic accuracy of captions of the synthetic home-appliance scenes, as an `evaluate` module."""

import datasets
import evaluate

from clipcap.metrics import semantic_accuracy
from clipcap.synthetic import Scene, caption_errors

_DESCRIPTION = """\
The fraction of captions whose every stated kind, colour, count and relation is true of the scene they describe,
checked exactly against the scene's description (the `scene` column of a dataset that `prepare_dataset.py` rendered
from `clipcap.synthetic`), overall and by number of objects, with the count of each error type.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one caption per scene.
    references (`list[str]`): each scene as JSON (`Scene.to_json()`, a synthetic dataset's `scene` column).
    per_caption (`bool`, *optional*, defaults to `False`): also return each caption's errors under "per_caption".
Returns:
    semantic_accuracy (`float`), semantic_accuracy_<n>obj (`float`) for each number of objects, errors_<type>
    (`int`) for each error type (`clipcap.synthetic.CAPTION_ERROR_TYPES`), unparseable_fraction (`float`: captions
    with a word outside the captions' language or a parse problem), per_caption ({"errors": list[list[str]]}).
Examples:
    >>> accuracy = evaluate.load("clipcap/evaluate_modules/semantic_accuracy")
    >>> accuracy.compute(predictions=["a red fridge"], references=[scene_json])["semantic_accuracy"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SemanticAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, per_caption=False):
        scenes = [Scene.from_json(text) for text in references]
        errors = [caption_errors(caption, scene) for caption, scene in zip(predictions, scenes, strict=True)]
        result = semantic_accuracy(predictions, scenes, errors)
        if per_caption:
            result["per_caption"] = {"errors": errors}
        return result
