"""caption.py on a tiny trained model: every good file captioned, unreadable ones skipped and counted, the exit
statuses, and an `--output` file replaced only when the run finishes (docs/reliability.md)."""

import json
import os
import subprocess
import sys

import datasets
import pytest

import caption
from tests.conftest import ROOT
from tests.helpers import reference_captions


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


def test_caption_output_file_is_replaced_only_when_the_run_finishes(tmp_path):
    import caption
    from processing_clipcap import ClipCapProcessor
    from tests.conftest import tiny_model

    model_dir = tmp_path / "model"
    model = tiny_model()
    model.save_pretrained(model_dir)
    ClipCapProcessor.from_config(model.config).save_pretrained(model_dir)
    from PIL import Image

    Image.new("RGB", (64, 64), "blue").save(tmp_path / "a.png")
    output = tmp_path / "captions.txt"
    output.write_text("earlier captions\n")
    # The model does not load: the earlier output is untouched.
    assert caption.main([str(tmp_path / "no-model"), str(tmp_path / "a.png"), "--output", str(output)]) == 2
    assert output.read_text() == "earlier captions\n"
    # Captioning stops halfway (the model fails): the earlier output is untouched, the new lines are in .partial.
    Image.new("RGB", (64, 64), "red").save(tmp_path / "b.png")
    calls = {"n": 0}
    real = caption.caption_batches

    def fail_on_second_batch(*args, **kwargs):
        for batch in real(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            yield batch

    argv = [str(model_dir), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--batch_size", "1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(caption, "caption_batches", fail_on_second_batch)
        with pytest.raises(KeyboardInterrupt):
            caption.main([*argv, "--output", str(output), "--progress", "false", "--max_new_tokens", "3"])
    assert output.read_text() == "earlier captions\n"
    assert (tmp_path / "captions.txt.partial").read_text().startswith(f"{tmp_path / 'a.png'}\t")
    assert caption.main([*argv, "--output", str(output), "--progress", "false", "--max_new_tokens", "3"]) == 0
    assert [line.split("\t")[0] for line in output.read_text().splitlines()] == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
    ]
    assert not (tmp_path / "captions.txt.partial").exists()


def test_caption_py_with_the_onnx_backend_writes_what_the_pytorch_model_writes(onnx_export_dir, tmp_path, capsys):
    from PIL import Image

    for i, color in enumerate(["red", "navy", "olive"]):
        Image.new("RGB", (64, 64), color).save(tmp_path / f"{i}.png")
    outputs = {}
    for name, argv in {
        "pytorch": [str(onnx_export_dir / "model")],
        "onnx": [str(onnx_export_dir / "export"), "--backend", "onnx"],
    }.items():
        output = tmp_path / f"{name}.jsonl"
        argv += [str(tmp_path / "*.png"), "--format", "jsonl", "--output", str(output), "--num_beams", "2"]
        assert caption.main(argv + ["--progress", "false", "--max_new_tokens", "8"]) == caption.EXIT_OK
        outputs[name] = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(outputs["onnx"]) == 3 and outputs["onnx"] == outputs["pytorch"]
    int8 = [str(onnx_export_dir / "export"), str(tmp_path / "0.png"), "--onnx_dtype", "int8", "--progress", "false"]
    assert caption.main(int8) == caption.EXIT_OK
