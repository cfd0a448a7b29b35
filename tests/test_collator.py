"""clipcap/collator.py (`CaptionCollator`): with cached encoder features it passes them on and never reads the
images."""

import torch

from clipcap.collator import CaptionCollator
from clipcap.encoder_cache import add_encoder_features
from processing_clipcap import ClipCapProcessor
from tests.conftest import tiny_dataset, tiny_model


def test_collator_passes_features_and_never_reads_the_images():
    model = tiny_model(freeze_encoder=True)
    processor = ClipCapProcessor.from_config(model.config)
    train = tiny_dataset(num_train=3, num_validation=1)["train"]
    cached = add_encoder_features(train, model, processor).remove_columns("image")
    collator = CaptionCollator(processor, seed=0)
    assert not collator.reads_images(cached.column_names) and collator.reads_images(train.column_names)
    # A teacher that must see the pixels (no cached image embeddings) still needs them decoded.
    assert CaptionCollator(processor, teacher_images=True).reads_images(cached.column_names)
    batch = collator([cached[i] for i in range(3)])
    assert "pixel_values" not in batch and batch["image_features"].dtype == torch.float32
    assert torch.equal(batch["image_features"], torch.tensor(cached["encoder_features"][:]))
