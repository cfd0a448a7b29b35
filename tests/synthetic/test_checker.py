"""The caption checker: each kind of mistake, relations judged by geometry, and the error types listed once."""

import pytest

from clipcap import synthetic
from clipcap.synthetic import caption_errors, make_example
from tests.synthetic.scenes import COLUMN, ROW


@pytest.mark.parametrize(
    "scene, caption, errors",
    [
        (ROW, "a red toaster to the left of two blue kettles", []),
        (ROW, "A photo of two blue kettles to the right of a red toaster.", []),
        (ROW, "a red toaster next to two blue kettles", []),
        (ROW, "a red toaster to the left of the blue kettles", []),
        (ROW, "a green toaster to the left of two blue kettles", ["wrong_colour"]),
        (ROW, "a red oven to the left of two blue kettles", ["wrong_kind", "missing_object"]),
        (ROW, "a red toaster to the right of two blue kettles", ["wrong_relation"]),
        (ROW, "two blue kettles to the left of a red toaster", ["wrong_relation"]),
        (ROW, "a red toaster above two blue kettles", ["wrong_relation"]),
        (ROW, "a red toaster to the left of a blue kettle", ["wrong_count"]),
        (ROW, "three blue kettles next to a red toaster", ["wrong_count"]),
        (ROW, "a red toaster", ["missing_object"]),
        (ROW, "a red toaster to the left of", ["dangling_relation", "missing_object"]),
        (ROW, "a red toaster toaster to the left of two blue kettles", ["unknown_object"]),
        (ROW, "", ["no_object", "missing_object", "missing_object"]),
        (COLUMN, "a white microwave oven above a black refrigerator", []),
        (COLUMN, "a black refrigerator under a white microwave oven", []),
        (COLUMN, "a white microwave oven on top of a black refrigerator", []),
        (COLUMN, "a black refrigerator above a white microwave oven", ["wrong_relation"]),
        (COLUMN, "a white microwave oven next to a black refrigerator", ["wrong_relation"]),
        (COLUMN, "a white microwave oven to the left of a black refrigerator", ["wrong_relation"]),
    ],
)
def test_caption_errors_classify_each_kind_of_mistake(scene, caption, errors):
    assert sorted(caption_errors(caption, scene)) == sorted(errors)


def test_next_to_is_false_across_a_unit_in_between():
    scene = next(
        s for s, _ in (make_example(0, "train", i) for i in range(200)) if s.layout == "row" and len(s.units) == 3
    )
    a, _, c = (synthetic.noun_phrase(scene.units[i]) for i in range(3))
    assert caption_errors(f"{a} next to {c}", scene) == ["wrong_relation", "missing_object"]
    assert caption_errors(f"{c} to the right of {a}", scene) == ["missing_object"]


def test_the_error_types_are_the_fact_errors_then_the_parse_problems():
    assert synthetic.CAPTION_ERROR_TYPES == synthetic.FACT_ERRORS + synthetic.PARSE_PROBLEMS
    assert len(set(synthetic.CAPTION_ERROR_TYPES)) == len(synthetic.CAPTION_ERROR_TYPES)
    # Every type the checker reports is listed, and the parse problems are exactly what parse_caption reports.
    captions = ["", "a red toaster to the left of", "a red toaster toaster", "a red toaster a blue kettle"]
    captions += ["a red oven to the left of a blue kettle", "a green toaster above two blue kettles"]
    errors = {error for caption in captions for error in caption_errors(caption, ROW)}
    assert errors == set(synthetic.CAPTION_ERROR_TYPES)
    problems = {problem for caption in captions for problem in synthetic.parse_caption(caption).problems}
    assert problems == set(synthetic.PARSE_PROBLEMS)
