"""The dataset's examples: determinism, captions that agree with the scene, coverage of the specification, geometry."""

from collections import Counter

import numpy as np

from clipcap import synthetic
from clipcap.synthetic import caption_errors, make_example, parse_caption, render_scene


def test_examples_are_deterministic_and_depend_on_seed_split_and_index():
    scene, captions = make_example(3, "train", 7)
    again, captions_again = make_example(3, "train", 7)
    assert scene == again and captions == captions_again
    assert np.array_equal(np.asarray(render_scene(scene, 64)), np.asarray(render_scene(again, 64)))
    others = [make_example(4, "train", 7)[0], make_example(3, "validation", 7)[0], make_example(3, "train", 8)[0]]
    assert all(other.to_dict() != scene.to_dict() for other in others)


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
