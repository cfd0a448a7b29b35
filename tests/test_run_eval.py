"""run_eval.py on a tiny trained model: every report and the FiftyOne fields it writes, its defaults from the
training run, and its errors as one line."""

import json

import datasets
import pytest

import run_eval
from tests.conftest import tiny_dataset
from tests.helpers import reference_captions


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
