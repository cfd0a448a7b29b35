"""The embedded synthetic dataset: determinism, captions that agree with the scene, and the caption checker."""

from collections import Counter

import numpy as np
import pytest

from clipcap import synthetic
from clipcap.synthetic import Scene, SceneObject, Unit, caption_errors, make_example, parse_caption, render_scene


def test_examples_are_deterministic_and_depend_on_seed_split_and_index():
    scene, captions = make_example(3, "train", 7)
    again, captions_again = make_example(3, "train", 7)
    assert scene == again and captions == captions_again
    assert np.array_equal(np.asarray(render_scene(scene, 64)), np.asarray(render_scene(again, 64)))
    others = [make_example(4, "train", 7)[0], make_example(3, "validation", 7)[0], make_example(3, "train", 8)[0]]
    assert all(other.to_dict() != scene.to_dict() for other in others)


def test_render_size_mode_and_variety():
    images = [np.asarray(render_scene(make_example(0, "train", i)[0], 96)) for i in range(4)]
    assert all(image.shape == (96, 96, 3) and image.dtype == np.uint8 for image in images)
    assert len({image.tobytes() for image in images}) == 4


def test_scene_json_round_trip():
    scene, _ = make_example(0, "validation", 5)
    assert Scene.from_json(scene.to_json()) == scene


def test_every_reference_caption_is_true_of_its_scene_and_the_data_covers_the_specification():
    examples = [make_example(0, "train", i) for i in range(400)]
    for scene, captions in examples:
        assert len(captions) >= 3 and len(set(captions)) == len(captions)
        for caption in captions:
            assert caption_errors(caption, scene) == [], (caption, scene)
            assert synthetic.is_parseable(caption), caption
            mentioned = {(m.kind, m.colour, m.count) for m in parse_caption(caption).mentions}
            assert mentioned == {(u.kind, u.colour, u.count) for u in scene.units}
    scenes = [scene for scene, _ in examples]
    objects = Counter(len(scene.objects) for scene in scenes)
    assert set(objects) == {1, 2, 3} and min(objects.values()) > 80
    assert {o.kind for s in scenes for o in s.objects} == set(synthetic.KINDS) and len(synthetic.KINDS) >= 8
    assert {o.colour for s in scenes for o in s.objects} == set(synthetic.COLOURS) and len(synthetic.COLOURS) >= 6
    assert {s.layout for s in scenes} == set(synthetic.LAYOUTS)
    assert {u.count for s in scenes for u in s.units} == {1, 2, 3}
    relations = {r for _, captions in examples for c in captions for _, r, _ in parse_caption(c).relations}
    assert relations == {"left_of", "above", "next_to"}
    phrases = " ".join(c for _, captions in examples for c in captions)
    for phrase in ("to the left of", "to the right of", "above", "below", "next to"):
        assert phrase in phrases
    heights = [o.bounding_box[3] for s in scenes for o in s.objects]
    assert min(heights) < 0.15 and max(heights) > 0.6  # varied sizes


def test_boxes_lie_inside_the_image_and_units_never_overlap():
    for i in range(200):
        scene, _ = make_example(1, "train", i)
        for obj in scene.objects:
            x, y, w, h = obj.bounding_box
            assert 0 <= x and 0 <= y and x + w <= 1 and y + h <= 1 and w > 0 and h > 0
        boxes = [scene.unit_box(u) for u in range(len(scene.units))]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0


# A red toaster on the left, two blue kettles on the right; and a two-storey column beside it for "above".
ROW = Scene(
    layout="row",
    units=[Unit("Toaster", "red", 1), Unit("Kettle", "blue", 2)],
    objects=[
        SceneObject("Toaster", "red", 0, [0.1, 0.5, 0.2, 0.3]),
        SceneObject("Kettle", "blue", 1, [0.4, 0.5, 0.15, 0.3]),
        SceneObject("Kettle", "blue", 1, [0.6, 0.5, 0.15, 0.3]),
    ],
    side="",
    render_seed=0,
)
COLUMN = Scene(
    layout="column",
    units=[Unit("Microwave oven", "white", 1), Unit("Refrigerator", "black", 1)],
    objects=[
        SceneObject("Microwave oven", "white", 0, [0.3, 0.1, 0.4, 0.2]),
        SceneObject("Refrigerator", "black", 1, [0.35, 0.31, 0.3, 0.6]),
    ],
    side="",
    render_seed=0,
)


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


def test_parse_caption_normalises_relations_to_subject_relation_object():
    parsed = parse_caption("a yellow oven below two red kettles, which is to the right of a white fan")
    kettle, oven = synthetic.Mention(2, "red", "Kettle"), synthetic.Mention(1, "yellow", "Oven")
    assert parsed.mentions == [oven, kettle]  # "fan" alone is not a kind: "mechanical fan" is
    assert parsed.relations == [(kettle, "above", oven)]
    assert parsed.problems == ["dangling_relation"]


@pytest.mark.parametrize(
    ("caption", "problems"),
    [
        ("a photo of two red kettles, which is above a white oven", []),
        ("there are three blue coffeemakers", []),
        ("a red toaster above a blue kettle, and a green oven to the left of a blue kettle", []),
        ("a red kettle to the left of", ["dangling_relation"]),
        ("a red kettle kettle", ["unknown_object"]),
        ("a photo of", ["no_object"]),
        ("a photo of a red kettle!", ["ungrammatical"]),
        ("a shiny red kettle", ["unknown_object", "no_object"]),  # "red kettle" lacks its count word
        ("a red kettle to the very left of a blue oven", ["ungrammatical"]),  # "the very" belongs to no phrase
        ("a red kettle next a blue oven a blue oven", ["ungrammatical"]),  # reward hacking of one SCST run
        ("a red kettle a blue oven", ["ungrammatical"]),
    ],
)
def test_a_caption_outside_the_captions_grammar_is_a_parse_problem(caption, problems):
    assert parse_caption(caption).problems == problems
    assert synthetic.is_parseable(caption) == (problems == [])


def test_render_examples_in_two_processes_writes_the_same_files(tmp_path):
    one = synthetic.render_examples(tmp_path / "one", 5, 2, seed=2, image_size=48, num_proc=1, progress=False)
    two = synthetic.render_examples(tmp_path / "two", 5, 2, seed=2, image_size=48, num_proc=2, progress=False)
    assert [(s, p.name, sc, c) for s, p, sc, c in one] == [(s, p.name, sc, c) for s, p, sc, c in two]
    assert [p.read_bytes() for _, p, _, _ in one] == [p.read_bytes() for _, p, _, _ in two]
    assert [str(p.relative_to(tmp_path / "one")) for _, p, _, _ in one][-2:] == [
        "validation/000000.png",
        "validation/000001.png",
    ]
