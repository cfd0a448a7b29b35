"""clipcap/captioning_app.py (`CaptioningDemo`): an image captioned three ways, each caption equal to `generate`'s,
with its CLIP-S by the teacher and the checker's verdict."""

import pytest

from clipcap import synthetic
from clipcap.captioning_app import CaptioningDemo, ValidationScene
from clipcap.metrics import clip_score
from clipcap.teacher import CLIPTeacher
from processing_clipcap import ClipCapProcessor
from tests.conftest import tiny_model
from tests.helpers import expected_captions


def test_the_demo_captions_three_ways_with_clip_s_and_the_checkers_verdict(app_dirs, teacher_checkpoint):
    model = tiny_model()
    processor = ClipCapProcessor.from_pretrained(app_dirs / "model")
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    scene, captions = synthetic.make_example(0, "validation", 0)
    image = synthetic.render_scene(scene, size=48)
    demo = CaptioningDemo(model, processor, teacher, [ValidationScene(image, scene, captions[0])])
    rows = demo.caption(image, scene)
    assert [row["decoding"] for row in rows] == ["greedy", "beam search", "sampling"]
    assert {row["decoding"]: row["caption"] for row in rows} == expected_captions(model, processor, image)
    image_embeds = teacher.embed_pil_images([image]).cpu()
    for row in rows:
        expected = clip_score(image_embeds, teacher.embed_texts([row["caption"]]).cpu())[0].item()
        assert row["clip_s"] == pytest.approx(expected, abs=1e-6)
        errors = synthetic.caption_errors(row["caption"], scene)
        assert row["verdict"] == ("correct" if not errors else ", ".join(errors))
    # A true caption is marked correct; no teacher and no scene, nothing to score.
    assert CaptioningDemo(model, processor).caption(image)[0]["clip_s"] is None
    assert demo.describe({"clip_s": 1.5, "verdict": "correct"}) == "CLIP-S 1.500 · checker: correct"
    assert demo.describe({"clip_s": None, "verdict": "wrong_colour"}) == "checker: wrong (wrong_colour)"
    assert synthetic.caption_errors(captions[0], scene) == []
    # Another seed, another sample (with this tiny random model the samples differ).
    assert len({demo.caption(image, seed=seed)[2]["caption"] for seed in range(4)}) > 1
