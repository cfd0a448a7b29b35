"""A saved model loads through the Auto classes in a fresh process (as a Hub user would), and FiftyOne runs on the
project's own private mongod."""

import json
import os
import subprocess
import sys

import torch
from PIL import Image

from processing_clipcap import ClipCapProcessor
from tests.conftest import ROOT, tiny_model

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


def run_isolated(script: str, model_dir, cwd) -> dict:
    """Run `script` with `model_dir` as its argument in a fresh `python -I` from `cwd`: the project's directory is
    neither the working directory nor on the path, so only the saved files can serve. Returns its last line's JSON."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["HF_MODULES_CACHE"] = str(cwd / "modules")
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(model_dir)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_auto_classes_load_with_trust_remote_code_in_a_fresh_process(tmp_path, pixel_values):
    model = tiny_model()
    processor = ClipCapProcessor.from_config(model.config)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    torch.save(pixel_values, tmp_path / "pixels.pt")
    expected = model.generate(pixel_values, num_beams=3, max_new_tokens=6)

    loaded = run_isolated(AUTO_LOAD, tmp_path, tmp_path)
    assert loaded["names"] == ["ClipCapConfig", "ClipCapForCaptioning", "ClipCapProcessor"]
    assert all(module.startswith("transformers_modules.") for module in loaded["classes"])
    assert loaded["project_modules"] == []
    assert loaded["captions"] == expected.tolist()
    assert loaded["decoded"] == processor.batch_decode(expected)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_clipcap.ClipCapConfig",
        "AutoModel": "modeling_clipcap.ClipCapForCaptioning",
        "AutoModelForImageTextToText": "modeling_clipcap.ClipCapForCaptioning",
    }
    assert saved["custom_pipelines"] == {
        "image-text-to-text": {
            "impl": "pipeline_clipcap.ClipCapCaptioningPipeline",
            "pt": ["AutoModelForImageTextToText"],
            "type": "multimodal",
        }
    }


PIPELINE_RUN = """
import json, sys
from PIL import Image
from transformers import pipeline
path = sys.argv[1]
captioner = pipeline("image-text-to-text", model=path, trust_remote_code=True)
image = Image.open("scene0.png")
outputs = {
    "pil": captioner(image, max_new_tokens=6),
    "path": captioner("scene1.png", max_new_tokens=6),
    "list": captioner([image, "scene1.png", "scene2.png"], max_new_tokens=6),
    "prefix": captioner(["scene0.png", "scene1.png"], text="a photo of", max_new_tokens=6),
    "prefixes": captioner(["scene0.png", "scene1.png", "scene2.png"], text=["a photo of", "", "two"], max_new_tokens=6),
    "new_text": captioner(image, text="a photo of", max_new_tokens=6, return_full_text=False),
    "beams": captioner(image, max_new_tokens=6, num_beams=3, num_return_sequences=2),
    "batched": captioner([image, "scene1.png", "scene2.png"], max_new_tokens=6, batch_size=2),
}
print(json.dumps({"class": type(captioner).__name__, "module": type(captioner).__module__, "outputs": outputs}))
"""


def test_image_text_to_text_pipeline_captions_as_generate_does(tmp_path):
    """`pipeline("image-text-to-text", model=DIR, trust_remote_code=True)` from a working directory outside the
    repository, on a PIL image, a path and lists, with and without a text start: the captions equal `generate`'s."""
    model = tiny_model()
    processor = ClipCapProcessor.from_config(model.config)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    generator = torch.Generator().manual_seed(3)
    images = []
    for i in range(3):
        pixels = torch.randint(0, 256, (72, 72, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"scene{i}.png")
        images.append(Image.open(tmp_path / f"scene{i}.png").convert("RGB"))

    def generate(texts=None, **kwargs):
        inputs = processor(images=images[: len(texts)] if texts else images, text=texts)
        return processor.batch_decode(model.generate(**inputs, max_new_tokens=6, **kwargs))

    plain = generate()
    started = generate(["a photo of", "a photo of"])
    mixed = generate(["a photo of", "", "two"])
    assert all(caption.startswith("a photo of") for caption in started) and mixed[1] == plain[1]
    beams = generate(num_beams=3, num_return_sequences=2)[:2]

    ran = run_isolated(PIPELINE_RUN, tmp_path / "model", tmp_path)
    assert ran["class"] == "ClipCapCaptioningPipeline" and ran["module"].startswith("transformers_modules.")
    out = ran["outputs"]

    def texts(results):
        return [result["generated_text"] for result in results]

    assert texts(out["pil"]) == plain[:1] and texts(out["path"]) == plain[1:2]
    assert [texts(results) for results in out["list"]] == [[caption] for caption in plain]
    assert [texts(results) for results in out["batched"]] == [[caption] for caption in plain]
    assert [texts(results) for results in out["prefix"]] == [[caption] for caption in started]
    assert [texts(results) for results in out["prefixes"]] == [[caption] for caption in mixed]
    assert out["prefix"][0][0]["input_text"] == "a photo of"
    assert texts(out["new_text"]) == [started[0][len("a photo of") :].strip()]
    assert texts(out["beams"]) == beams and len(set(beams)) == 2


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
