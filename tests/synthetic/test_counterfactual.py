"""Counterfactual scenes: one fact changed, drawn with the same seed, the caption changed the same way; the checker
finds the new caption true of the new scene and the old caption false of it."""

import random

import numpy as np

from clipcap.synthetic import caption_errors, make_example, render_scene
from clipcap.synthetic.counterfactual import (
    counterfactual,
    mirror,
    mirrored_caption,
    recaption,
    swap_colours,
    swap_kinds,
    swap_units,
)
from tests.synthetic.scenes import COLUMN, ROW

CAPTION = "a photo of a red toaster to the left of two blue kettles"


def test_swap_colours_changes_only_the_colours():
    new = swap_colours(ROW, 0, 1)
    assert [(u.kind, u.colour, u.count) for u in new.units] == [("Toaster", "blue", 1), ("Kettle", "red", 2)]
    assert [o.colour for o in new.objects] == ["blue", "red", "red"]
    assert [o.bounding_box for o in new.objects] == [o.bounding_box for o in ROW.objects]
    assert ROW.units[0].colour == "red"  # the original is untouched
    caption = recaption(CAPTION, ROW, new)
    assert caption == "a photo of a blue toaster to the left of two red kettles"
    assert caption_errors(caption, new) == [] and caption_errors(CAPTION, new) == ["wrong_colour", "wrong_colour"]


def test_a_colour_swap_is_drawn_with_the_same_seed():
    """Only the swapped units' pixels change: the room, noise and the drawings' details are the same draws."""
    before, after = np.asarray(render_scene(ROW, 64)), np.asarray(render_scene(swap_colours(ROW, 0, 1), 64))
    changed = np.abs(before.astype(int) - after.astype(int)).sum(-1) > 0
    rows, cols = np.nonzero(changed)
    assert changed.any()
    # Every changed pixel lies inside an object's box (a pixel of margin for the outline).
    boxes = [[v * 64 for v in o.bounding_box] for o in ROW.objects]
    inside = [
        any(x - 1 <= c <= x + w + 1 and y - 1 <= r <= y + h + 1 for x, y, w, h in boxes) for r, c in zip(rows, cols)
    ]
    assert all(inside)


def test_swap_kinds_redraws_each_unit_inside_its_old_box():
    new = swap_kinds(ROW, 0, 1)
    assert [(u.kind, u.colour, u.count) for u in new.units] == [("Kettle", "red", 1), ("Toaster", "blue", 2)]
    for old, obj in zip(ROW.objects, new.objects, strict=True):
        x, y, w, h = old.bounding_box
        nx, ny, nw, nh = obj.bounding_box
        assert x - 1e-5 <= nx and nx + nw <= x + w + 1e-5 and y - 1e-5 <= ny and abs((ny + nh) - (y + h)) < 1e-4
    caption = recaption(CAPTION, ROW, new)
    assert caption == "a photo of a red kettle to the left of two blue toasters"
    assert caption_errors(caption, new) == [] and caption_errors(CAPTION, new)


def test_swap_units_exchanges_places_and_keeps_each_count_where_it_was():
    new = swap_units(ROW, 0, 1)
    assert [(u.kind, u.colour, u.count) for u in new.units] == [("Kettle", "blue", 1), ("Toaster", "red", 2)]
    caption = recaption(CAPTION, ROW, new)
    assert caption == "a photo of a blue kettle to the left of two red toasters"
    assert caption_errors(caption, new) == [] and caption_errors(CAPTION, new)
    # In a column, what is above what is exchanged.
    column = swap_units(COLUMN, 0, 1)
    column_caption = recaption("a white microwave oven above a black refrigerator", COLUMN, column)
    assert column_caption == "a black refrigerator above a white microwave oven"
    assert caption_errors(column_caption, column) == []
    assert caption_errors("a white microwave oven above a black refrigerator", column)


def test_the_kind_is_drawn_first_so_the_one_mirror_is_drawn_as_often_as_a_swap():
    image = render_scene(ROW, 32)
    drawn = [counterfactual(ROW, CAPTION, image, random.Random(seed))[0] for seed in range(200)]
    counts = {kind: drawn.count(kind) for kind in ("swap_colours", "swap_kinds", "swap_units", "mirror")}
    assert sum(counts.values()) == 200 and all(35 <= n <= 65 for n in counts.values()), counts


def test_mirror_flips_boxes_side_and_left_right():
    new = mirror(ROW)
    assert [o.bounding_box[0] for o in new.objects] == [0.7, 0.45, 0.25]
    assert mirrored_caption(CAPTION) == "a photo of a red toaster to the right of two blue kettles"
    assert caption_errors(mirrored_caption(CAPTION), new) == [] and caption_errors(CAPTION, new) == ["wrong_relation"]
    assert mirrored_caption("a white microwave oven above a black refrigerator") == (
        "a white microwave oven above a black refrigerator"
    )


def test_counterfactual_keeps_only_edits_that_make_the_caption_false():
    image = render_scene(COLUMN, 64)
    caption = "a white microwave oven above a black refrigerator"
    # A mirrored column says the same thing: no counterfactual. A colour swap does.
    assert counterfactual(COLUMN, caption, image, random.Random(0), kinds=["mirror"]) is None
    kind, new, new_image, new_caption = counterfactual(COLUMN, caption, image, random.Random(0), ["swap_colours"])
    assert kind == "swap_colours" and new_caption == "a black microwave oven above a white refrigerator"
    assert np.array_equal(np.asarray(new_image), np.asarray(render_scene(new, 64)))
    # The mirror of a row is the image's own pixels mirrored.
    row_image = render_scene(ROW, 64)
    kind, new, new_image, new_caption = counterfactual(ROW, CAPTION, row_image, random.Random(0), ["mirror"])
    assert np.array_equal(np.asarray(new_image), np.asarray(row_image)[:, ::-1])
    assert new_caption == "a photo of a red toaster to the right of two blue kettles"


def test_counterfactuals_of_the_dataset_are_checked_both_ways():
    made = 0
    for index in range(40):
        scene, captions = make_example(0, "validation", index)
        out = counterfactual(scene, captions[0], render_scene(scene, 32), random.Random(index))
        if out is None:
            assert len(scene.units) == 1 or scene.layout == "column"
            continue
        made += 1
        _, new, image, caption = out
        assert image.size == (32, 32)
        assert caption_errors(caption, new) == [] and caption_errors(captions[0], new)
    assert made >= 15
