"""clipcap/metrics.py and the evaluate modules it loads (clipcap/evaluate_modules/): CLIP-S, RefCLIP-S, the COCO
caption scores, diversity and semantic accuracy on hand-checked values, and each evaluate module computing what its
function does, also loaded from the installed project in a fresh process outside the repository."""

import math

import pytest
import torch

from clipcap import synthetic
from clipcap.metrics import (
    EVALUATE_MODULES,
    clip_score,
    coco_caption_scores,
    distinct_n,
    diversity,
    load_metric,
    metric_path,
    ref_clip_score,
    semantic_accuracy,
)
from clipcap.teacher import CLIPTeacher
from tests.conftest import ROOT
from tests.helpers import run_isolated
from tests.synthetic.scenes import COLUMN, ROW


def test_clip_score_and_ref_clip_score_on_fixed_vectors():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    captions = torch.tensor([[0.6, 0.8], [-0.6, 0.8], [3.0, 4.0]])  # cos with the image: 0.6, -0.6, 0.6
    clip_s = clip_score(image, captions)
    assert clip_s.tolist() == pytest.approx([2.5 * 0.6, 0.0, 2.5 * 0.6])  # negative cosine clamps to 0
    references = [torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.empty(0, 2)]
    # Image 0: best reference cosine max(0.8, 0.6) = 0.8, harmonic mean with 1.5. Image 1: CLIP-S 0 -> 0.
    ref_clip_s = ref_clip_score(clip_s, captions, references)
    assert ref_clip_s[:2].tolist() == pytest.approx([2 * 1.5 * 0.8 / (1.5 + 0.8), 0.0])
    assert math.isnan(ref_clip_s[2])  # no reference, no RefCLIP-S


def test_coco_scores_identical_and_disjoint_captions():
    """Two images with disjoint words. A caption equal to its only reference: every n-gram's IDF is log(2/1), the
    candidate's and the reference's TF-IDF vectors are equal (cosine 1 for n = 1..4) and the lengths match (no
    Gaussian penalty), so CIDEr-D = 10 * 1; BLEU, METEOR and ROUGE-L are 1. A caption sharing no word with its
    reference scores 0 on all of them, and the corpus CIDEr is the mean, 5."""
    same = ["a red toaster on the table", "two blue kettles next to fridge"]
    corpus, each = coco_caption_scores(same, [[same[0]], [same[1]]])
    assert set(corpus) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    assert corpus == pytest.approx({key: 10.0 if key == "cider" else 1.0 for key in corpus}, abs=1e-6)
    assert each["cider"] == pytest.approx([10.0, 10.0])

    corpus, each = coco_caption_scores(same, [["green oven under black fan"], [same[1]]], metrics=("cider", "rouge_l"))
    assert set(corpus) == {"cider", "rouge_l"}
    assert each["cider"] == pytest.approx([0.0, 10.0]) and corpus["cider"] == pytest.approx(5.0)
    assert each["rouge_l"] == pytest.approx([0.0, 1.0])


def test_coco_scores_refuse_bad_input():
    with pytest.raises(ValueError, match="2 predictions for 1 reference lists"):
        coco_caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="unknown caption metrics \\['spice'\\]"):
        coco_caption_scores(["a"], [["a"]], metrics=("spice",))
    with pytest.raises(ValueError, match="at least one reference"):
        coco_caption_scores(["a"], [[]])


def test_distinct_n_and_diversity_exact():
    captions = ["a b a b", "A b c.", "a b a b"]
    # lower-cased words a b a b | a b c. | a b a b: 3 distinct ("c." is a word) of 11;
    # bigrams (a b) x5, (b a) x2, (b c.): 3 distinct of 8
    assert distinct_n(captions, 1) == pytest.approx(3 / 11)
    assert distinct_n(captions, 2) == pytest.approx(3 / 8)
    scores = diversity(captions, training_captions={"a b c", "x"})
    assert scores["vocabulary_size"] == 3  # a, b, c once normalised
    assert scores["unique_captions_pct"] == pytest.approx(200 / 3)  # "a b a b" twice
    assert scores["novel_captions_pct"] == pytest.approx(200 / 3)  # "A b c." is a training caption
    assert scores["mean_length"] == pytest.approx(11 / 3)
    assert "novel_captions_pct" not in diversity(captions)


def test_semantic_accuracy_counts_every_error_type():
    """ROW: a red toaster to the left of two blue kettles (3 objects); COLUMN: a white microwave oven above a black
    refrigerator (2 objects)."""
    captions = [
        "a red toaster to the left of two blue kettles",  # right
        "a green toaster to the left of two blue kettles",  # wrong colour
        "a red oven to the left of two blue kettles",  # wrong kind, so the toaster is missing
        "a red toaster to the left of a blue kettle",  # wrong count
        "a black refrigerator above a white microwave oven",  # wrong relation
    ]
    scores = semantic_accuracy(captions, [ROW, ROW, ROW, ROW, COLUMN])
    assert scores == {
        "semantic_accuracy": 0.2,
        "semantic_accuracy_2obj": 0.0,
        "semantic_accuracy_3obj": 0.25,
        "errors_wrong_kind": 1,
        "errors_wrong_colour": 1,
        "errors_wrong_count": 1,
        "errors_wrong_relation": 1,
        "errors_missing_object": 1,
        "errors_no_object": 0,
        "errors_dangling_relation": 0,
        "errors_unknown_object": 0,
        "errors_ungrammatical": 0,
        "unparseable_fraction": 0.0,
    }


SCENE_CAPTIONS = [
    "a red toaster to the left of two blue kettles",
    "a green toaster to the left of two blue kettles",
    "a red oven to the left of two blue kettles",
    "a red toaster to the left of a blue kettle",
    "a black refrigerator above a white microwave oven",
]


def test_evaluate_modules_load_from_the_project_and_compute_what_the_functions_do():
    import evaluate

    assert sorted(path.name for path in (ROOT / "clipcap" / "evaluate_modules").iterdir()) == sorted(EVALUATE_MODULES)
    references = [[caption, "a kitchen"] for caption in SCENE_CAPTIONS[::-1]]
    coco = evaluate.load(metric_path("coco_captions"))
    # METEOR (a Java process, slow to start) is left out: the module passes `metrics` through, and
    # test_coco_scores_identical_and_disjoint_captions checks every metric of the function.
    corpus, each = coco_caption_scores(SCENE_CAPTIONS, references, metrics=("bleu", "rouge_l", "cider"))
    computed = coco.compute(
        predictions=SCENE_CAPTIONS, references=references, metrics=("bleu", "rouge_l", "cider"), per_caption=True
    )
    assert computed == {**corpus, "per_caption": each} and corpus["cider"] > 0
    subset = load_metric("coco_captions").compute(predictions=SCENE_CAPTIONS, references=references, metrics=["cider"])
    assert subset == {"cider": corpus["cider"]}

    scenes = [ROW, ROW, ROW, ROW, COLUMN]
    accuracy = load_metric("semantic_accuracy").compute(
        predictions=SCENE_CAPTIONS, references=[scene.to_json() for scene in scenes], per_caption=True
    )
    errors = accuracy.pop("per_caption")["errors"]
    assert accuracy == semantic_accuracy(SCENE_CAPTIONS, scenes) and accuracy["semantic_accuracy"] == 0.2
    assert errors == [synthetic.caption_errors(caption, scene) for caption, scene in zip(SCENE_CAPTIONS, scenes)]
    assert errors[0] == [] and errors[1] == ["wrong_colour"]
    with pytest.raises(ValueError, match="unknown evaluate module 'bleu'"):
        metric_path("bleu")


def test_clip_score_module_equals_clip_s_and_ref_clip_s_of_the_teacher(teacher_checkpoint):
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    images = [synthetic.render_scene(scene, size=48) for scene in (ROW, COLUMN, ROW)]
    captions = SCENE_CAPTIONS[:3]
    references = [["a red toaster", "two kettles"], [], ["a toaster"]]
    image_embeds = teacher.embed_pil_images(images).cpu()
    caption_embeds = teacher.embed_texts(captions).cpu()
    expected_clip_s = clip_score(image_embeds, caption_embeds)
    flat = teacher.embed_texts([text for refs in references for text in refs]).cpu()
    expected_ref = ref_clip_score(expected_clip_s, caption_embeds, list(torch.split(flat, [2, 0, 1])))

    metric = load_metric("clip_score", teacher=teacher)
    result = metric.compute(predictions=captions, references=references, image_embeds=image_embeds, per_caption=True)
    assert (
        result["clip_s"] == float(expected_clip_s.mean())
        and result["per_caption"]["clip_s"] == expected_clip_s.tolist()
    )
    assert result["ref_clip_s"] == float(expected_ref[[0, 2]].mean())
    assert result["per_caption"]["ref_clip_s"][0] == expected_ref[0].item()
    assert math.isnan(result["per_caption"]["ref_clip_s"][1])  # no references, no RefCLIP-S
    assert result["clip_model"] == teacher.identity.describe()

    # The teacher named by its open_clip architecture and weights, embedding the images itself; no references.
    by_name = load_metric("clip_score", clip_model="ClipCap-Test-Teacher", clip_pretrained=str(teacher_checkpoint))
    assert by_name.compute(predictions=captions, images=images) == {
        "clip_s": result["clip_s"],
        "clip_model": result["clip_model"],
    }
    # A caption given for every image (the generic baseline) is embedded once.
    generic = metric.compute(predictions=["a kitchen"] * 3, image_embeds=image_embeds, per_caption=True)
    one = teacher.embed_texts(["a kitchen"]).cpu()
    assert generic["per_caption"]["clip_s"] == clip_score(image_embeds, one.expand(3, -1)).tolist()
    with pytest.raises(ValueError, match="needs the images, or their embeddings"):
        metric.compute(predictions=captions)
    with pytest.raises(ValueError, match="needs a CLIP model"):
        load_metric("clip_score")


EVALUATE_RUN = """
import json, sys
import evaluate
import clipcap
from clipcap.metrics import metric_path
accuracy = evaluate.load(metric_path("semantic_accuracy"))
captions = ["a red toaster to the left of two blue kettles", "a green toaster to the left of two blue kettles"]
result = accuracy.compute(predictions=captions, references=[sys.argv[1]] * 2)
print(json.dumps({"package": clipcap.__file__, "scores": result}))
"""


def test_the_evaluate_modules_load_from_the_installed_project_anywhere(tmp_path):
    """From a directory outside the repository, in a fresh `python -I`: the installed project's module loads by path,
    with no network, and scores as in this process."""
    from clipcap.metrics import load_metric
    from tests.synthetic.scenes import ROW  # a red toaster to the left of two blue kettles

    captions = ["a red toaster to the left of two blue kettles", "a green toaster to the left of two blue kettles"]
    ran = run_isolated(EVALUATE_RUN, ROW.to_json(), tmp_path)
    assert ran["package"] == str(ROOT / "clipcap" / "__init__.py")  # the installed (editable) project
    expected = load_metric("semantic_accuracy").compute(predictions=captions, references=[ROW.to_json()] * 2)
    assert ran["scores"] == expected and expected["semantic_accuracy"] == 0.5
