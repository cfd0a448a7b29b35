"""clipcap.metrics on hand-checked values, and run_eval.py and caption.py on a tiny trained model."""

import json
import math
import os
import subprocess
import sys

import datasets
import pytest
import torch

import caption
import run_eval
import run_train
from clipcap import inference, synthetic
from clipcap.images import find_images
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
from tests.conftest import ROOT, tiny_dataset, train_argv
from tests.synthetic.scenes import COLUMN, ROW

# ------------------------------------------------------------------------------------------------------------ metrics


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


# ---------------------------------------------------------------------------------------- the evaluate modules

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


# ----------------------------------------------------------------------------------------- a tiny trained captioner


@pytest.fixture(scope="module")
def image_data_dir(tmp_path_factory):
    """The tiny synthetic dataset with its images also on disk (a `filepath` column, as prepare_dataset.py writes)."""
    root = tmp_path_factory.mktemp("eval-data")
    dataset = tiny_dataset()
    for split in dataset:
        paths = []
        for i, image in enumerate(dataset[split]["image"]):
            paths.append(str(root / "images" / split / f"{i:03d}.png"))
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            image.save(paths[-1])
        dataset[split] = dataset[split].add_column("filepath", paths)
    dataset.save_to_disk(str(root / "data"))
    return root


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, image_data_dir, teacher_checkpoint):
    """Two training steps with every CLIP loss on; the directory run_train.py leaves (run_args.json, trainer state)."""
    out = tmp_path_factory.mktemp("model") / "model"
    argv = train_argv(
        image_data_dir / "data",
        out,
        steps=2,
        do_eval="false",
        clip_model="ClipCap-Test-Teacher",
        clip_pretrained=str(teacher_checkpoint),
        lambda_cos=1.0,
        lambda_con=0.1,
        generation_max_new_tokens=8,
    )
    assert run_train.main(argv) == 0
    return out


def reference_captions(model_dir, images, **generate_kwargs) -> list[str]:
    model, processor = inference.load_captioner(str(model_dir), "cpu")
    return inference.caption_images(model, processor, images, **generate_kwargs)


@pytest.mark.slow
def test_run_eval_writes_every_report_and_fiftyone_fields(tmp_path, trained_model, image_data_dir, fiftyone_db):
    out = tmp_path / "eval"
    argv = [str(trained_model), "--output_dir", str(out), "--num_beams", "2", "--progress", "false"]
    assert run_eval.main([*argv, "--fiftyone_dataset", "clipcap-eval-test"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "captions_grid.png",  # the scenes with their captions, marked by the checker
        "eval_results.json",
        "eval_summary.md",
        "predictions.jsonl",
        "report.html",
        "training_curves.png",
    ]
    report = json.loads((out / "eval_results.json").read_text())
    assert report["teacher"].startswith("ClipCap-Test-Teacher (sha256 ")
    assert report["images"] == 4 and report["generation"]["num_beams"] == 2
    results = report["results"]
    assert set(results) == {"model", "baseline", "references"}
    # The references are true of their scenes; the generic caption names no object and is 1 caption of 4.
    assert results["references"]["semantic_accuracy"] == 1.0
    assert results["baseline"]["errors_no_object"] == 4 and results["baseline"]["unique_captions_pct"] == 25.0
    assert results["baseline"]["novel_captions_pct"] == 100.0 and results["model"]["spice"] is None
    for system in results.values():
        assert {"clip_s", "ref_clip_s", "bleu_4", "meteor", "rouge_l", "cider", "distinct_2"} <= set(system)

    validation = datasets.load_from_disk(str(image_data_dir / "data"))["validation"]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    expected = reference_captions(trained_model, validation["image"][:], num_beams=2)
    assert [row["caption"] for row in predictions] == expected
    assert [row["filepath"] for row in predictions] == validation["filepath"][:]
    assert [row["references"] for row in predictions] == validation["captions"][:]

    page = (out / "report.html").read_text()
    for i, row in enumerate(predictions):  # every image is in the gallery, named, with its caption
        assert f'data-index="{i}"' in page and row["filepath"] in page
    assert "ClipCap-Test-Teacher" in page and "<script>" in page
    assert 'src="http' not in page and 'href="http' not in page  # self-contained: nothing to fetch
    summary = (out / "eval_summary.md").read_text()
    assert "| metric | model | baseline | references |" in summary and "| SPICE | n/a | n/a | n/a |" in summary

    import fiftyone as fo

    dataset = fo.load_dataset("clipcap-eval-test")  # made from the split's files, persistent
    assert dataset.persistent and len(dataset) == 4
    by_path = dict(zip(dataset.values("filepath"), dataset.values("clipcap_caption"), strict=True))
    assert [by_path[row["filepath"]] for row in predictions] == expected
    assert dataset.values("clipcap_clip_s") == pytest.approx([row["clip_s"] for row in predictions])
    # A second run writes into the existing dataset, matched by file path, under another prefix.
    argv = [str(trained_model), "--output_dir", str(tmp_path / "greedy"), "--num_beams", "1", "--progress", "false"]
    assert run_eval.main([*argv, "--fiftyone_dataset", "clipcap-eval-test", "--fiftyone_field_prefix", "greedy"]) == 0
    dataset.reload()
    greedy = dict(zip(dataset.values("filepath"), dataset.values("greedy_caption"), strict=True))
    assert [greedy[path] for path in validation["filepath"]] == reference_captions(
        trained_model, validation["image"][:], num_beams=1
    )
    assert len(dataset) == 4
    dataset.delete()


def test_run_eval_errors_are_one_line(tmp_path, trained_model, capsys):
    assert run_eval.main([str(trained_model), "--dataset_dir", str(tmp_path / "nowhere"), "--progress", "false"]) == 1
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == f"run_eval.py: error: no dataset directory {tmp_path / 'nowhere'}; make one with prepare_dataset.py"
    )
    (tmp_path / "not-data").mkdir()
    assert run_eval.main([str(trained_model), "--dataset_dir", str(tmp_path / "not-data"), "--split", "test"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"run_eval.py: error: {tmp_path / 'not-data'} is not a saved DatasetDict; make one with prepare_dataset.py"
    )
    assert run_eval.main([str(tmp_path / "no-model")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"run_eval.py: error: {tmp_path / 'no-model'} has no run_args.json naming its data: pass --dataset_dir"
    )
    tiny_dataset().remove_columns("captions").save_to_disk(str(tmp_path / "no-captions"))
    argv = [str(trained_model), "--dataset_dir", str(tmp_path / "no-captions"), "--training_split", ""]
    assert run_eval.main(argv) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"run_eval.py: error: the 'validation' split of {tmp_path / 'no-captions'} lacks the columns ['captions']"
    )


# ---------------------------------------------------------------------------------------------------------- caption.py


def test_find_images_expands_folders_globs_and_reports_what_matches_nothing(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.png", "a/deep/2.JPG", "a/notes.txt", "b.png"):
        (tmp_path / name).write_bytes(b"")
    paths, problems = find_images(
        [str(tmp_path / "a"), str(tmp_path / "*.png"), str(tmp_path / "a" / "1.png"), str(tmp_path / "none*.jpg")]
    )
    assert paths == [str(tmp_path / "a" / "1.png"), str(tmp_path / "a" / "deep" / "2.JPG"), str(tmp_path / "b.png")]
    assert problems == [f"{tmp_path / 'none*.jpg'}: the pattern matches no file"]


def test_generation_arguments_pass_only_what_was_set():
    assert inference.GenerationArguments().generate_kwargs() == {}
    assert inference.GenerationArguments(num_beams=5, max_new_tokens=9).generate_kwargs() == {
        "num_beams": 5,
        "max_new_tokens": 9,
    }
    sampling = inference.GenerationArguments(do_sample=True, top_p=0.9, temperature=0.7)
    assert sampling.generate_kwargs() == {"do_sample": True, "num_beams": 1, "top_p": 0.9, "temperature": 0.7}


def run_caption(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "caption.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )


def test_caption_folder_with_a_corrupt_file(tmp_path, trained_model, image_data_dir):
    """Every good file is captioned (batched); the corrupt file, the empty file and a path that does not exist are
    reported and counted as skipped; exit status 1."""
    folder = tmp_path / "images"
    folder.mkdir()
    validation = datasets.load_from_disk(str(image_data_dir / "data"))["validation"]
    for i, image in enumerate(validation["image"][:]):
        image.save(folder / f"{i}.png")
    (folder / "2.png").write_bytes((folder / "2.png").read_bytes()[:60])  # truncated
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("not searched for")
    missing = tmp_path / "gone.png"
    result = run_caption(trained_model, folder, missing, "--format", "jsonl", "--batch_size", "2", "--num_beams", "1")
    assert result.returncode == caption.EXIT_SKIPPED, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    good = [0, 1, 3]
    assert [row["path"] for row in rows] == [str(folder / f"{i}.png") for i in good]
    expected = reference_captions(trained_model, [validation[i]["image"] for i in good], num_beams=1)
    assert [row["caption"] for row in rows] == expected
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line and "caption.py:" in line]
    assert len(skipped) == 4  # three input lines and the summary
    assert f"skipped {folder / '2.png'}: unreadable" in result.stderr
    assert f"skipped {folder / 'empty.jpg'}: empty file" in result.stderr
    assert f"skipped {missing}: no such file or folder" in result.stderr
    assert "captioned 3 images" in result.stderr
    assert "skipped 3 (2 unreadable files, 1 inputs that match no file)" in result.stderr

    result = run_caption(trained_model, folder / "0.png", "--format", "csv", "--output", tmp_path / "out.csv")
    assert result.returncode == caption.EXIT_OK, result.stderr[-2000:]
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "path,caption"


def test_caption_exit_status_when_nothing_can_be_done(tmp_path, trained_model):
    (tmp_path / "empty").mkdir()
    result = run_caption(trained_model, tmp_path / "empty")
    assert result.returncode == caption.EXIT_FAILED
    assert result.stderr.splitlines()[-1] == "caption.py: no image to caption"
    assert caption.main([str(tmp_path / "no-model"), str(ROOT / "configs")]) == caption.EXIT_FAILED  # no image
    (tmp_path / "x.png").write_bytes(b"")
    assert caption.main([str(tmp_path / "no-model"), str(tmp_path / "x.png")]) == caption.EXIT_FAILED  # no model
    assert caption.main([str(trained_model), str(tmp_path / "x.png"), "--format", "xml"]) == caption.EXIT_FAILED
    # The model loads, but not one input can be captioned (an empty file, a path that does not exist): 2, not 1.
    argv = [str(trained_model), str(tmp_path / "x.png"), str(tmp_path / "gone.png"), "--progress", "false"]
    assert caption.main(argv) == caption.EXIT_FAILED


def test_run_eval_defaults_come_from_the_training_run(tmp_path):
    """run_eval.py scores with the model's training data, columns and teacher unless told otherwise, whether
    run_args.json keeps the teacher in its own group or (models trained before the layout change) in `guidance`."""
    data = {"dataset_dir": "data/demo", "image_column": "picture", "caption_column": "texts"}
    teacher = {"clip_model": "ClipCap-Domain-S", "clip_pretrained": "outputs/demo-teacher"}
    for run_args in ({"data": data, "teacher_args": teacher}, {"data": data, "guidance": teacher}):
        args, teacher_args, _ = run_eval.parse_args([str(tmp_path)])
        run_eval.resolve_defaults(args, teacher_args, run_args)
        assert (args.dataset_dir, args.image_column, args.caption_column) == ("data/demo", "picture", "texts")
        assert (teacher_args.clip_model, teacher_args.clip_pretrained) == ("ClipCap-Domain-S", "outputs/demo-teacher")
        assert args.output_dir == str(tmp_path / "eval")
    args, teacher_args, _ = run_eval.parse_args([str(tmp_path), "--clip_model", "ViT-L-14"])
    run_eval.resolve_defaults(args, teacher_args, {"data": data})
    assert (teacher_args.clip_model, teacher_args.clip_pretrained) == ("ViT-L-14", "openai")


def test_comparison_table_puts_each_run_in_a_column_and_each_score_by_its_scorer():
    from clipcap.report import comparison_table

    results = {
        ("before", "teacher"): {"semantic_accuracy": 0.585, "errors_wrong_kind": 0, "clip_s": 1.7918},
        ("after", "teacher"): {"semantic_accuracy": 0.48, "errors_wrong_kind": 4, "clip_s": 1.7828},
        ("before", "held out"): {"clip_s": 1.8},
        ("after", "held out"): {},
    }
    rows = [
        ("semantic accuracy", "semantic_accuracy", "teacher"),
        ("  errors: wrong_kind", "errors_wrong_kind", "teacher"),
        ("CLIP-S (held out)", "clip_s", "held out"),
    ]
    assert comparison_table(results, ["before", "after"], rows) == (
        "| on the validation scenes | before | after |\n"
        "| --- | ---: | ---: |\n"
        "| semantic accuracy | 0.585 | 0.480 |\n"
        "|   errors: wrong_kind | 0 | 4 |\n"
        "| CLIP-S (held out) | 1.800 | - |\n"
    )
