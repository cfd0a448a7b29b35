"""`python -m clipcap.synthetic`: the images `render_examples` writes, and a scenes.jsonl that describes them."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from clipcap.synthetic import SCENE_COLUMN, Scene, make_example, render_scene
from clipcap.synthetic import __main__ as cli
from tests.conftest import ROOT


def test_the_cli_writes_the_rendered_examples_and_one_line_per_scene(tmp_path, monkeypatch, capsys):
    calls, render_examples = [], cli.render_examples

    def spy(*args, **kwargs):
        calls.append(args)
        return render_examples(*args, **kwargs)

    monkeypatch.setattr(cli, "render_examples", spy)
    argv = ["--output_dir", str(tmp_path / "out"), "--num_train", "3", "--num_validation", "2", "--seed", "4"]
    cli.main([*argv, "--image_size", "40"])
    assert calls == [((tmp_path / "out").resolve(), 3, 2, 4, 40)]
    assert capsys.readouterr().out == f"wrote 5 scenes to {(tmp_path / 'out').resolve()}\n"

    lines = [json.loads(line) for line in (tmp_path / "out" / "scenes.jsonl").read_text().splitlines()]
    expected = [("train", 0), ("train", 1), ("train", 2), ("validation", 0), ("validation", 1)]
    assert [(line["split"], line["file"]) for line in lines] == [(s, f"{s}/{i:06d}.png") for s, i in expected]
    for line, (split, index) in zip(lines, expected):
        scene, captions = make_example(4, split, index)
        assert line["captions"] == captions and Scene.from_dict(line[SCENE_COLUMN]) == scene
        image = np.asarray(Image.open(tmp_path / "out" / line["file"]))
        assert np.array_equal(image, np.asarray(render_scene(scene, 40)))


def test_python_dash_m_runs_the_cli(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--num_train", "1", "--image_size", "32"]
    command = [sys.executable, "-m", "clipcap.synthetic", *argv]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "train" / "000000.png").is_file()
    assert len((tmp_path / "scenes.jsonl").read_text().splitlines()) == 1
