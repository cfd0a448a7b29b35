"""Shared fixtures: tiny random ClipCap models, real GPT-2 tokenizer, a private MongoDB for FiftyOne, and the tiny
data, teacher and trained models that several test files share (built once a session).

No test touches the network: Hub and download paths are forced offline here.
"""

import json
import os
import sys
from pathlib import Path

# Before anything imports huggingface_hub or datasets: both read these once, when first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clipcap.precision  # noqa: E402
import run_train  # noqa: E402
from clipcap import synthetic  # noqa: E402
from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402
from processing_clipcap import ClipCapProcessor  # noqa: E402

# A 2-layer, 32-wide GPT-2 with the real GPT-2 vocabulary (so the real tokenizer fits).
TINY_DECODER = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64}


def tiny_config(**overrides) -> ClipCapConfig:
    kwargs = {
        "text_config": dict(TINY_DECODER),
        "prefix_length": 4,
        "mapper_num_layers": 1,
        "mapper_num_heads": 2,
        "teacher_embed_dim": 16,
        "image_size": 64,
        "encoder_pretrained": False,
        "decoder_name_or_path": None,
    }
    kwargs.update(overrides)
    return ClipCapConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> ClipCapForCaptioning:
    """A tiny random model in eval mode whose captions differ between images.

    A freshly initialised torchvision MobileNetV2 in eval mode (BatchNorm running statistics mean 0, variance 1)
    shrinks every image to features of about 1e-10, and at GPT-2's initialisation scale a random prefix barely moves
    the decoder, so every image would get the same caption and batch tests could not fail. So the BatchNorm
    statistics are calibrated on one batch of random images, and the mapper's weights are made larger.
    """
    torch.manual_seed(seed)
    model = ClipCapForCaptioning(tiny_config(**overrides))
    with torch.no_grad():
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one batch sets the statistics
        torch.nn.Module.train(model.encoder, True)  # even a frozen encoder: this is calibration, not training
        model.encoder(torch.randn(8, 3, 64, 64))
        for module in model.mapper.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(std=0.5)
    return model.eval()


TRANSFORMERS_VERBOSITY = transformers_logging.get_verbosity()


@pytest.fixture(autouse=True)
def transformers_verbosity():
    """The scripts set transformers' log level from their training arguments, as transformers' examples do (info in
    the main process), and so do the session fixtures that run them; the level is global, so every test starts and
    ends at transformers' own (transformers' common tests check what its loggers print)."""
    transformers_logging.set_verbosity(TRANSFORMERS_VERBOSITY)
    yield
    transformers_logging.set_verbosity(TRANSFORMERS_VERBOSITY)


@pytest.fixture(autouse=True)
def precision_log():
    """`clipcap.precision` says each precision choice once per process; every test may see it said."""
    clipcap.precision._logged.clear()
    yield


@pytest.fixture
def pixel_values():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 64, 64, generator=generator)


@pytest.fixture(scope="session")
def fiftyone_db(tmp_path_factory):
    """A private mongod for the test session; FiftyOne must be imported only after this fixture runs."""
    from clipcap.mongod import fiftyone_database

    with fiftyone_database(tmp_path_factory.mktemp("mongod")) as uri:
        yield uri


# ---------------------------------------------------------------------------------------------------------------------
# Tiny synthetic data, a tiny open_clip teacher and tiny training runs, built once a session and shared by the
# test files of the trainer, the scripts and the modules under them
# ---------------------------------------------------------------------------------------------------------------------

TINY_TEACHER = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 40, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_dataset(num_train: int = 12, num_validation: int = 4, size: int = 48) -> datasets.DatasetDict:
    """Rendered synthetic scenes in the columns prepare_dataset.py writes (image, captions, scene)."""
    splits = {}
    for split, count in (("train", num_train), ("validation", num_validation)):
        rows = {"image": [], "captions": [], "scene": []}
        for index in range(count):
            scene, captions = synthetic.make_example(0, split, index)
            rows["image"].append(synthetic.render_scene(scene, size=size))
            rows["captions"].append(captions)
            rows["scene"].append(scene.to_json())
        splits[split] = datasets.Dataset.from_dict(
            rows,
            features=datasets.Features(
                {
                    "image": datasets.Image(),
                    "captions": datasets.List(datasets.Value("string")),
                    "scene": datasets.Value("string"),
                }
            ),
        )
    return datasets.DatasetDict(splits)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synthetic"
    tiny_dataset().save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory):
    """A random tiny open_clip teacher saved as a checkpoint; its architecture registered with open_clip."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("teacher")
    (root / "ClipCap-Test-Teacher.json").write_text(json.dumps(TINY_TEACHER))
    open_clip.add_model_config(root / "ClipCap-Test-Teacher.json")
    torch.manual_seed(0)
    model = open_clip.create_model("ClipCap-Test-Teacher", pretrained=None)
    save_file(model.state_dict(), str(root / "open_clip_model.safetensors"))
    return root


@pytest.fixture(scope="session")
def matcher_teacher(tmp_path_factory):
    """A LiT teacher (the packaged EfficientNet-Lite0 and MiniLM towers) trained 2 steps with a 1-layer image-text
    matcher and hard negatives, then the matcher 2 steps alone on the frozen towers, on a tiny synthetic dataset of
    64 px scenes: `(teacher directory, dataset directory)`.
    Needs the offline-weights extra (tests using it are marked `needs_packaged_weights`)."""
    import train_clip_teacher
    from tests.helpers import PACKAGED

    root = tmp_path_factory.mktemp("matcher-teacher")
    data, out = root / "data", root / "teacher"
    tiny_dataset(num_train=8, num_validation=4, size=64).save_to_disk(str(data))
    argv = ["--dataset_dir", str(data), "--output_dir", str(out), "--model", "ClipCap-LiT-S"]
    argv += ["--image_tower_pretrained", PACKAGED, "--text_tower_pretrained", "all_minilm_l6_v2"]
    argv += ["--max_steps", "2", "--batch_size", "4", "--warmup_steps", "1", "--matcher_layers", "1"]
    argv += ["--matcher_steps", "2", "--matcher_learning_rate", "1e-3"]
    argv += ["--hard_negatives", "swap_colours,swap_phrases,converse_relation", "--counterfactual_images", "0.5"]
    assert train_clip_teacher.main(argv) == 0
    return out, data


def train_argv(data_dir, output_dir, steps: int = 2, config: dict | None = None, **overrides) -> list[str]:
    """Flags for a tiny run: random 32-wide decoder, MobileNetV2 at 48 px, no downloads. `config` changes more
    `ClipCapConfig` fields (`config_overrides`), `overrides` any other argument."""
    model = {
        "encoder_pretrained": "false",
        "decoder_name_or_path": "",
        **{f"text_config.{key}": value for key, value in TINY_DECODER.items()},
        "prefix_length": 4,
        "image_size": 48,
        **(config or {}),
    }
    arguments = {
        "dataset_dir": str(data_dir),
        "output_dir": str(output_dir),
        "config_overrides": ",".join(f"{key}={value}" for key, value in model.items()),
        "image_crop_fraction": 1.0,
        "max_caption_length": 40,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "max_steps": steps,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 1000,
        "report_to": "none",
        "do_train": "true",
        "do_eval": "true",
        "generation_num_beams": 1,
        "generation_max_new_tokens": 6,
        "lambda_cos": 0,
        "lambda_con": 0,
        "lambda_div": 0,
        "seed": 0,
        "use_cpu": "true",
    }
    arguments.update(overrides)
    argv = []
    for key, value in arguments.items():
        argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="session")
def stage_one(tmp_path_factory, data_dir):
    """A tiny captioner after two steps of the first stage: where the self-critical stage starts."""
    out = tmp_path_factory.mktemp("stage_one") / "model"
    assert run_train.main(train_argv(data_dir, out, do_eval="false")) == 0
    return out


@pytest.fixture(scope="session")
def image_data_dir(tmp_path_factory):
    """The tiny synthetic dataset with its images also on disk (a `filepath` column, as prepare_dataset.py writes)."""
    root = tmp_path_factory.mktemp("eval-data")
    dataset = tiny_dataset()
    for split in dataset:
        paths = []
        for i, image in enumerate(dataset[split]["image"]):
            paths.append(str(root / "images" / split / f"{i:03d}.png"))
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            image.save(paths[-1])
        dataset[split] = dataset[split].add_column("filepath", paths)
    dataset.save_to_disk(str(root / "data"))
    return root


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, image_data_dir, teacher_checkpoint):
    """Two training steps with every CLIP loss on; the directory run_train.py leaves (run_args.json, trainer state)."""
    out = tmp_path_factory.mktemp("model") / "model"
    argv = train_argv(
        image_data_dir / "data",
        out,
        steps=2,
        do_eval="false",
        clip_model="ClipCap-Test-Teacher",
        clip_pretrained=str(teacher_checkpoint),
        lambda_cos=1.0,
        lambda_con=0.1,
        generation_max_new_tokens=8,
    )
    assert run_train.main(argv) == 0
    return out


@pytest.fixture(scope="session")
def app_dirs(tmp_path_factory, teacher_checkpoint):
    """A tiny model and the tiny synthetic dataset on disk, for app.py."""
    root = tmp_path_factory.mktemp("app")
    model = tiny_model()
    model.save_pretrained(root / "model")
    ClipCapProcessor.from_config(model.config).save_pretrained(root / "model")
    tiny_dataset().save_to_disk(str(root / "data"))
    return root


@pytest.fixture(scope="session")
def onnx_export_dir(tmp_path_factory, data_dir):
    """`tiny_model()` saved with its processor (`model/`) and exported by export_onnx.py with its int8 graphs, the
    image graph calibrated on the tiny dataset's training images (`export/`); the script's output in `export.log`."""
    import contextlib
    import io

    import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    model = tiny_model()
    model.save_pretrained(root / "model")
    ClipCapProcessor.from_config(model.config).save_pretrained(root / "model")
    argv = [str(root / "model"), str(root / "export"), "--quantize", "int8", "--calibration_dataset", str(data_dir)]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert export_onnx.main(argv) == 0
    (root / "export.log").write_text(output.getvalue())
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCAP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
