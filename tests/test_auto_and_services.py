"""A saved model loads through the Auto classes in a fresh process (as a Hub user would), and FiftyOne runs on the
project's own private mongod."""

import json
import os
import subprocess
import sys

import torch

from processing_clipcap import ClipCapProcessor
from tests.conftest import tiny_model

AUTO_LOAD = """
import json, sys, torch
from transformers import AutoConfig, AutoModel, AutoProcessor
path = sys.argv[1]
config = AutoConfig.from_pretrained(path, trust_remote_code=True)
model = AutoModel.from_pretrained(path, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
pixel_values = torch.load(path + "/pixels.pt")
captions = model.generate(pixel_values, num_beams=3, max_new_tokens=6)
project_modules = [m for m in ("configuration_clipcap", "modeling_clipcap", "processing_clipcap") if m in sys.modules]
print(json.dumps({
    "classes": [type(config).__module__, type(model).__module__, type(processor).__module__],
    "names": [type(config).__name__, type(model).__name__, type(processor).__name__],
    "captions": captions.tolist(),
    "decoded": processor.batch_decode(captions),
    "project_modules": project_modules,
}))
"""


def test_auto_classes_load_with_trust_remote_code_in_a_fresh_process(tmp_path, pixel_values):
    model = tiny_model()
    processor = ClipCapProcessor.from_config(model.config)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    torch.save(pixel_values, tmp_path / "pixels.pt")
    expected = model.generate(pixel_values, num_beams=3, max_new_tokens=6)

    # The project's directory is neither the working directory nor on the path: only the saved files can serve.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run(
        [sys.executable, "-I", "-c", AUTO_LOAD, str(tmp_path)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["names"] == ["ClipCapConfig", "ClipCapForCaptioning", "ClipCapProcessor"]
    assert all(module.startswith("transformers_modules.") for module in loaded["classes"])
    assert loaded["project_modules"] == []
    assert loaded["captions"] == expected.tolist()
    assert loaded["decoded"] == processor.batch_decode(expected)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_clipcap.ClipCapConfig",
        "AutoModel": "modeling_clipcap.ClipCapForCaptioning",
    }


def test_fiftyone_works_on_the_private_mongod(fiftyone_db, tmp_path):
    assert fiftyone_db.startswith("mongodb://127.0.0.1:")
    script = """
import fiftyone as fo
dataset = fo.Dataset("clipcap-smoke")
dataset.add_samples([fo.Sample(filepath=f"/tmp/image{i}.jpg", captions=[f"caption {i}"]) for i in range(3)])
print(len(fo.load_dataset("clipcap-smoke")), fo.config.database_uri)
"""
    environment = dict(os.environ, FIFTYONE_DATABASE_URI=fiftyone_db)
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["3", fiftyone_db]
