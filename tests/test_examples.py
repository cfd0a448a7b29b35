"""examples/overfit_smoke.py, the smoke example: a small model learns to caption four images, end to end (training,
saving, reloading, beam search); demo.sh, its three stages timed on a named CPU (a stub python records the calls)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import overfit_smoke

from tests.conftest import ROOT
from tests.helpers import needs_packaged_weights


@pytest.mark.slow
def test_small_model_learns_to_caption_four_images(tmp_path):
    """Training, saving, reloading and beam search end to end: every image gets exactly its caption back.

    Beam search must return the most likely caption: with `early_stopping=True` in the default generation config,
    a beam ending at once with EOS once finished the search before 'a red round microwave oven' (6 tokens) was
    complete, and a shorter caption of another image won.
    """
    pairs = overfit_smoke.main(output_dir=str(tmp_path / "smoke"))
    assert [caption for caption, _ in pairs] == [reference for _, reference in pairs]
    assert (tmp_path / "smoke" / "model.safetensors").is_file()


def test_probe_oracle_puts_each_object_in_its_slot_left_to_right_or_top_to_bottom():
    """The oracle "grid" of examples/frozen_tower_probe.py: object j (in reading order) is slot j, with its colour,
    kind and layout one-hot and its box; the rest of the slots are empty."""
    import frozen_tower_probe

    from clipcap.synthetic.scene import COLOURS, KINDS, LAYOUTS

    def obj(colour, kind, x, y):
        return {"colour": colour, "kind": kind, "bounding_box": [x, y, 0.2, 0.2], "unit": 0}

    row = {"layout": "row", "objects": [obj("red", "Kettle", 0.6, 0.1), obj("blue", "Toaster", 0.1, 0.5)]}
    column = {"layout": "column", "objects": [obj("green", "Oven", 0.1, 0.7), obj("red", "Kettle", 0.5, 0.2)]}
    grid = frozen_tower_probe.oracle([row, column], slots=3)
    colours, kinds, layouts = list(COLOURS), list(KINDS), list(LAYOUTS)
    assert grid.shape == (2, len(colours) + len(kinds) + len(layouts) + 4, 1, 3)

    def slot(i, j):
        cell = grid[i, :, 0, j]
        hot = cell[:-4].nonzero().flatten().tolist()
        names = [colours[hot[0]], kinds[hot[1] - len(colours)], layouts[hot[2] - len(colours) - len(kinds)]]
        return names, cell[-4:].tolist()

    # the toaster (x 0.1) is left of the kettle (x 0.6); in the column the kettle (y 0.2) is above the oven
    assert slot(0, 0) == (["blue", "Toaster", "row"], pytest.approx([0.1, 0.5, 0.2, 0.2]))
    assert slot(0, 1)[0] == ["red", "Kettle", "row"]
    assert slot(1, 0)[0] == ["red", "Kettle", "column"] and slot(1, 1)[0] == ["green", "Oven", "column"]
    assert grid[:, :, 0, 2].abs().sum() == 0


@pytest.mark.slow
@needs_packaged_weights
def test_probe_caches_the_locked_towers_and_trains_heads_on_them(data_dir, tmp_path, capsys):
    """The cache holds each split's trunk grid and oracle, two captions per training scene with their negatives (each
    false by the checker); training on it prints the compositional test at steps 0 and 2."""
    import frozen_tower_probe

    from clipcap.hard_negatives import scene_judge

    cache_dir = tmp_path / "probe"
    frozen_tower_probe.main(["cache", "--dataset_dir", str(data_dir), "--cache_dir", str(cache_dir)])
    train, validation = (torch.load(cache_dir / f"{split}.pt") for split in ("train", "validation"))
    assert train["grid"].shape == (12, 1280, 4, 4) and validation["grid"].shape == (4, 1280, 4, 4)
    assert train["oracle"].shape[0] == 12
    texts = torch.load(cache_dir / "texts.pt", weights_only=False)
    data = datasets.load_from_disk(str(data_dir))["train"]
    assert texts["rows"].bincount().tolist() == [min(2, len(c)) for c in data["captions"]]
    assert texts["embeds"].shape == (len(texts["texts"]), 384)
    assert len(texts["owners"]) == len(texts["negatives"]) > 0
    for text, row in zip(texts["texts"], texts["rows"].tolist(), strict=True):
        assert text in data["captions"][row]
    for negative, owner in zip(texts["negative_texts"], texts["owners"].tolist(), strict=True):
        row = int(texts["rows"][owner])
        assert scene_judge(data["scene"][row])(negative), (negative, data["scene"][row])
        assert negative != texts["texts"][owner]
    assert texts["owners"].bincount().max() <= len(frozen_tower_probe.NEGATIVE_KINDS)  # one per kind at most
    capsys.readouterr()
    frozen_tower_probe.main(["train", "--cache_dir", str(cache_dir), "--steps", "2", "--batch_size", "8"])
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["0", "2"]
    assert "'swap_colours'" in printed[-1] and "'R@1'" in printed[-1]


OUTPUTS = [
    "data/demo/dataset_dict.json",
    "outputs/demo-teacher/open_clip_model.safetensors",
    "outputs/demo/model.safetensors",
]


def run_demo(root):
    result = subprocess.run(["bash", str(root / "demo.sh")], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    return result.stdout, [
        line.split()[0] for line in lines if line.startswith("   ") and (" min " in line or "skipped" in line)
    ]


def test_demo_sh_times_each_stage_and_names_the_cpu(tmp_path):
    shutil.copy(ROOT / "demo.sh", tmp_path / "demo.sh")
    stub = tmp_path / ".venv" / "bin" / "python"  # the python demo.sh takes when there is a .venv
    stub.parent.mkdir(parents=True)
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path / "calls"}\n'
        'if [ "$1" = -c ]; then echo "Some CPU, 2 cores, torch AVX2, native bf16: none (emulated)"; fi\n'
    )
    stub.chmod(0o755)
    out, stages = run_demo(tmp_path)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [call.split()[0] for call in calls[1:]] == ["prepare_dataset.py", "train_clip_teacher.py", "-m"]
    assert calls[-1].endswith("run_train.py configs/demo.yaml")
    assert "== machine: Some CPU, 2 cores, torch AVX2, native bf16: none (emulated)" in out
    assert "== stage timings on Some CPU, 2 cores, torch AVX2, native bf16: none (emulated):" in out
    assert stages == ["data", "teacher", "captioner", "total"]
    assert re.search(r"^   captioner  0 min \d\d s$", out, re.MULTILINE)
    for output in OUTPUTS:  # a second run finds every output and skips every stage
        (tmp_path / output).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / output).touch()
    out, stages = run_demo(tmp_path)
    assert stages == ["data", "teacher", "captioner", "total"]
    assert f"captioner  skipped ({OUTPUTS[2]} exists)" in out
    assert len((tmp_path / "calls").read_text().splitlines()) == len(calls) + 1  # only the machine's description
