# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""A frozen encoder's features, computed once per training image instead of at every step."""

from __future__ import annotations

import hashlib

import datasets
import torch


def add_encoder_features(dataset, model, processor, image_column: str = "image", batch_size: int = 64):
    """Add a frozen encoder's output for every image as the column `encoder_features`, computed once.

    A frozen encoder (eval mode, no gradient) maps an image to the same features at every epoch, and the image
    transform is deterministic, so running it at every step is waste: with the column, `CaptionCollator` passes
    `image_features` and training neither decodes an image nor runs the encoder (bench/bench_teacher_cache.py
    measures the step both ways). The work is a `Dataset.map` named by the encoder's weights and the image
    transform, so a rerun with the same encoder finds it in the datasets cache, and another encoder never does.
    """
    if not model.encoder.frozen:
        raise ValueError("only a frozen encoder's features can be computed once (set freeze_encoder)")
    weights = hashlib.sha256()
    for name, tensor in model.encoder.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    image_transform = processor.image_processor.to_dict()

    @torch.no_grad()
    def compute(batch):
        pixel_values = processor(images=[image.convert("RGB") for image in batch[image_column]])["pixel_values"]
        features = model.get_image_features(pixel_values.to(model.device)).float().cpu().numpy()
        return {"encoder_features": features}

    was_training = model.training
    model.eval()
    try:
        return dataset.map(
            compute,
            batched=True,
            batch_size=batch_size,
            desc="Encoder features",
            new_fingerprint=datasets.fingerprint.Hasher.hash(
                [dataset._fingerprint, weights.hexdigest(), image_transform, image_column, "encoder-features-v1"]
            ),
        )
    finally:
        model.train(was_training)
