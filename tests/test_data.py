"""clipcap/data.py: the prepared dataset and the contract its readers rely on. Images validated split by split, drops
counted by reason; rows without a caption or with a broken image dropped and counted before training
(docs/reliability.md); a caption column of plain strings refused on load with one line."""

import json
import re
from collections import Counter

import datasets
import pytest

import run_train
from clipcap import data
from tests.conftest import train_argv
from tests.helpers import CONVERSIONS, DROPS, make_bad_corpus


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


def bad_rows_dataset(path):
    """A tiny dataset (no prepare_dataset.py card) with rows no one can train on, and one very long caption."""
    import io

    import datasets

    from tests.conftest import tiny_dataset

    data = tiny_dataset()
    png = io.BytesIO()
    data["train"][0]["image"].save(png, format="PNG")
    broken = {
        0: {"captions": []},
        1: {"captions": ["", "   "]},
        2: {"image": {"bytes": b"this is not an image", "path": None}},
        3: {"image": {"bytes": png.getvalue()[:200], "path": None}},  # a truncated PNG
        4: {"captions": ["a photo of " + "a very long caption " * 60]},  # far beyond 40 tokens and the 64 positions
        5: {"captions": ["", "a photo of a kettle"]},  # the empty one is never drawn
    }
    splits = {}
    for split in ("train", "validation"):
        rows = data[split].cast_column("image", datasets.Image(decode=False)).to_list()
        for i, change in broken.items():
            if i < len(rows) and (split == "train" or i < 3):
                rows[i].update(change)
        splits[split] = datasets.Dataset.from_list(rows, features=data[split].features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def test_rows_without_caption_or_with_a_broken_image_are_counted_and_skipped(tmp_path, teacher_checkpoint, caplog):
    import run_eval

    data = bad_rows_dataset(tmp_path / "data")
    output_dir = tmp_path / "model"
    assert run_train.main(train_argv(data, output_dir, steps=3, do_eval="true")) == 0
    err = caplog.text
    assert "Dropped 4 of 12 train rows (no_caption: 2, not_an_image: 1, truncated: 1)" in err
    assert "Dropped 3 of 4 validation rows (no_caption: 2, not_an_image: 1)" in err
    assert "1 training captions are longer than max_caption_length=40 tokens and are truncated to it" in err
    assert (output_dir / "model.safetensors").exists()

    evaluation = tmp_path / "eval"
    teacher = ["--clip_model", "ClipCap-Test-Teacher", "--clip_pretrained", str(teacher_checkpoint)]
    argv = [str(output_dir), "--output_dir", str(evaluation), "--progress", "false", *teacher]
    assert run_eval.main(argv) == 0
    report = json.loads((evaluation / "eval_results.json").read_text())
    assert report["images"] == 1 and report["skipped_rows"] == {"no_caption": 2, "not_an_image": 1}
    assert "Skipped 3 of 4 validation rows" in caplog.text


def test_captions_as_bare_strings_are_refused_on_load_with_one_line(tmp_path, capsys):
    """The data contract: a caption column holds a list of strings per row. A dataset whose captions are plain
    strings is refused by the loader every reader goes through, with one line, before any work."""
    import train_clip_teacher
    from clipcap.data import load_prepared_dataset
    from tests.conftest import tiny_dataset

    path = tmp_path / "strings"
    dataset = tiny_dataset(num_train=4, num_validation=2)
    dataset = dataset.map(lambda row: {"text": row["captions"][0]}, remove_columns=["captions"])
    dataset.rename_column("text", "captions").save_to_disk(str(path))
    with pytest.raises(ValueError, match=r"the column 'captions' of the 'train' split of .* holds Value\('string'\)"):
        load_prepared_dataset(str(path), {"train": ["image", "captions"]})
    assert run_train.main(train_argv(path, tmp_path / "out")) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run_train.py: error: ")]
    assert line.endswith(
        "not lists of captions (list[str]); prepare_dataset.py writes each row's references as a list"
    )
    assert not (tmp_path / "out").exists()
    assert train_clip_teacher.main(["--dataset_dir", str(path), "--output_dir", str(tmp_path / "teacher")]) == 1
    assert "not lists of captions (list[str])" in capsys.readouterr().err


def test_map_images_hands_the_function_decoded_images_and_keeps_the_stored_bytes():
    import io

    from PIL import Image

    def png(colour, size):  # stored uncompressed: any re-encoding makes other bytes
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, format="PNG", compress_level=0)
        return buffer.getvalue()

    stored = [png("red", (5, 3)), png("blue", (2, 7)), png("green", (4, 4))]
    dataset = datasets.Dataset.from_dict(
        {data.IMAGE_COLUMN: [{"bytes": b, "path": None} for b in stored], data.CAPTION_COLUMN: [["a"], ["b"], ["c"]]},
        features=datasets.Features(
            {data.IMAGE_COLUMN: datasets.Image(), data.CAPTION_COLUMN: datasets.List(datasets.Value("string"))}
        ),
    )

    def sizes(batch):
        assert all(isinstance(image, Image.Image) for image in batch[data.IMAGE_COLUMN])
        return {"size": [list(image.size) for image in batch[data.IMAGE_COLUMN]]}

    mapped = data.map_images(dataset, sizes, batch_size=2)
    assert mapped["size"] == [[5, 3], [2, 7], [4, 4]]
    assert mapped.features[data.IMAGE_COLUMN] == datasets.Image()
    assert mapped[1][data.IMAGE_COLUMN].getpixel((0, 0)) == (0, 0, 255)

    def stored_bytes(result):
        return [
            row["bytes"]
            for row in result.cast_column(data.IMAGE_COLUMN, datasets.Image(decode=False))[data.IMAGE_COLUMN]
        ]

    assert stored_bytes(mapped) == stored
    assert stored_bytes(dataset.map(sizes, batched=True, batch_size=2)) != stored  # what a plain map does

    features = datasets.Features({**dataset.features, "size": datasets.List(datasets.Value("int16"))})
    assert data.map_images(dataset, sizes, features=features).features["size"] == features["size"]
    with pytest.raises(ValueError, match="holds Value"):
        data.map_images(datasets.Dataset.from_dict({data.IMAGE_COLUMN: ["photo.png"]}), sizes)
