# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""What a frozen encoder (or the frozen first stages of one) computes, once per training image instead of at every
step."""

from __future__ import annotations

import hashlib

import datasets
import torch

from clipcap.data import IMAGE_COLUMN, map_images


def add_encoder_features(dataset, model, processor, batch_size: int = 64):
    """Add what the encoder's frozen part computes for every image, once: a frozen encoder's output as the column
    `encoder_features`, or the output of its frozen first stages (`encoder_frozen_stages`) as
    `frozen_stage_features`.

    A frozen module (eval mode, no gradient) maps an image to the same features at every epoch, and the image
    transform is deterministic, so running it at every step is waste: with the column, `CaptionCollator` passes
    `image_features` (or `frozen_stage_features`) and training neither decodes an image nor runs the frozen part
    (bench/bench_teacher_cache.py measures the step both ways). The work is a `Dataset.map` named by the frozen
    weights and the image transform, so a rerun with the same encoder finds it in the datasets cache, and another
    encoder never does.
    """
    encoder = model.encoder
    if not encoder.frozen and not encoder.num_frozen_stages:
        raise ValueError(
            "only a frozen encoder's features, or its frozen stages', can be computed once (set freeze_encoder or "
            "encoder_frozen_stages)"
        )
    column = "encoder_features" if encoder.frozen else "frozen_stage_features"
    frozen = encoder.state_dict() if encoder.frozen else {
        f"{i}.{name}": tensor for i, module in enumerate(encoder._frozen_stages()) for name, tensor in
        module.state_dict().items()
    }  # fmt: skip
    weights = hashlib.sha256()
    for name, tensor in frozen.items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    image_transform = processor.image_processor.to_dict()

    @torch.no_grad()
    def compute(batch):
        pixel_values = processor(images=[image.convert("RGB") for image in batch[IMAGE_COLUMN]])["pixel_values"]
        pixel_values = pixel_values.to(model.device, model.dtype)
        if encoder.frozen:
            features = model.get_encoder_features(pixel_values)
        else:
            features = encoder.frozen_stage_features(pixel_values)
        return {column: features.float().contiguous().cpu().numpy()}

    was_training = model.training
    model.eval()
    try:
        return map_images(
            dataset,
            compute,
            batch_size=batch_size,
            desc="Encoder features" if encoder.frozen else "Frozen encoder stages",
            new_fingerprint=datasets.fingerprint.Hasher.hash(
                [dataset._fingerprint, weights.hexdigest(), image_transform, IMAGE_COLUMN, column, "encoder-v2"]
            ),
        )
    finally:
        model.train(was_training)
