"""clipcap/encoder_cache.py: a frozen encoder's output (or its frozen first stages') computed once per image is what
the encoder computes, named by the frozen weights, and training from it (run_train.py with `cache_encoder_features`)
gives what a run that recomputes it at every step gives."""

import json

import pytest
import torch

import run_train
from clipcap.encoder_cache import add_encoder_features
from processing_clipcap import ClipCapProcessor
from tests.conftest import tiny_dataset, tiny_model, train_argv


def test_add_encoder_features_computes_the_frozen_encoders_output_once():
    model = tiny_model(freeze_encoder=True)
    processor = ClipCapProcessor.from_config(model.config)
    train = tiny_dataset(num_train=5, num_validation=1)["train"]
    cached = add_encoder_features(train, model, processor, batch_size=2)
    assert len(cached) == 5 and cached.column_names == [*train.column_names, "encoder_features"]
    pixel_values = processor(images=[image.convert("RGB") for image in train["image"]])["pixel_values"]
    expected = model.get_encoder_features(pixel_values)
    assert torch.allclose(torch.tensor(cached["encoder_features"][:]), expected, atol=1e-5)
    # Named by the encoder's weights: the same encoder finds it again, another encoder does not.
    assert add_encoder_features(train, model, processor)._fingerprint == cached._fingerprint
    with torch.no_grad():
        model.encoder.backbone.features[0][0].weight.mul_(2)
    assert add_encoder_features(train, model, processor)._fingerprint != cached._fingerprint
    with pytest.raises(ValueError, match="frozen encoder"):
        add_encoder_features(train, tiny_model(), processor)


def test_run_train_with_a_frozen_encoder_trains_the_same_from_cached_features(tmp_path, data_dir):
    losses = {}
    for cache in ("true", "false"):
        out = tmp_path / cache
        argv = train_argv(
            data_dir, out, steps=3, do_eval="false", config={"freeze_encoder": "true"}, cache_encoder_features=cache
        )
        assert run_train.main(argv) == 0
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        losses[cache] = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses["true"]) == 3
    assert losses["true"] == pytest.approx(losses["false"], abs=1e-4)


def test_frozen_stage_cache_trains_as_the_uncached_run(tmp_path, data_dir):
    """encoder_frozen_stages with its output computed once per image gives the weights a run that recomputes the
    frozen stages at every step gives."""
    from safetensors.torch import load_file

    import run_train

    config = {"encoder_frozen_stages": 2, "encoder_features": "grid", "mapper_type": "transformer"}
    config.update({"mapper_num_heads": 2, "mapper_num_layers": 1})
    weights = {}
    for cache in ("true", "false"):
        out = tmp_path / cache
        argv = train_argv(data_dir, out, steps=3, config=config, cache_encoder_features=cache, eval_captions="false")
        assert run_train.main(argv) == 0
        weights[cache] = load_file(out / "model.safetensors")
    assert weights["true"].keys() == weights["false"].keys()
    for key, value in weights["true"].items():
        assert torch.allclose(value, weights["false"][key], atol=1e-5), key
