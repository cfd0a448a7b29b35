"""Shared fixtures: tiny random ClipCap models, real GPT-2 tokenizer, and a private MongoDB for FiftyOne.

No test touches the network: Hub and download paths are forced offline here.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402

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


@pytest.fixture
def pixel_values():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 64, 64, generator=generator)


@pytest.fixture(scope="session")
def fiftyone_db(tmp_path_factory):
    """A private mongod for the test session; FiftyOne must be imported only after this fixture runs."""
    from fiftyone_mongod import fiftyone_database

    with fiftyone_database(tmp_path_factory.mktemp("mongod")) as uri:
        yield uri
