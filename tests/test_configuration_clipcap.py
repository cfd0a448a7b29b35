"""configuration_clipcap.py (`ClipCapConfig`): its defaults, a JSON round trip, a partial decoder config read against
DistilGPT2, encoder names of torchvision and timm, and one clear error for each invalid value."""

import pytest
from transformers import GPT2Config

from configuration_clipcap import ClipCapConfig
from tests.conftest import tiny_config


def test_defaults_are_mobilenet_mlp_distilgpt2():
    config = ClipCapConfig()
    assert config.model_type == "clipcap"
    assert (config.encoder_name, config.encoder_features, config.mapper_type) == ("mobilenet_v2", "pooled", "mlp")
    assert config.prefix_length == 10
    assert isinstance(config.text_config, GPT2Config)
    assert (config.text_config.n_layer, config.text_config.n_embd, config.text_config.vocab_size) == (6, 768, 50257)
    assert config.mapper_hidden_size == 768  # defaults to the decoder width
    assert config.decoder_name_or_path == "distilgpt2"
    assert config.teacher_embed_dim == 512


def test_round_trip_through_json(tmp_path):
    config = tiny_config(mapper_type="transformer", encoder_features="grid", freeze_encoder=True)
    config.save_pretrained(tmp_path)
    loaded = ClipCapConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.text_config, GPT2Config) and loaded.text_config.n_layer == 2


def test_partial_decoder_dict_is_read_against_distilgpt2():
    config = ClipCapConfig(text_config={"n_embd": 384})
    assert (config.text_config.n_layer, config.text_config.n_embd, config.mapper_hidden_size) == (6, 384, 384)


def test_timm_names_resolve():
    assert ClipCapConfig(encoder_name="resnet18").encoder_name == "resnet18"  # torchvision
    assert ClipCapConfig(encoder_name="timm/mobilenetv3_small_050").encoder_name == "timm/mobilenetv3_small_050"
    assert ClipCapConfig(encoder_name="efficientnet_lite0").encoder_name == "efficientnet_lite0"  # timm only


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mapper_type": "lstm"}, "mapper_type='lstm' is not supported; choose one of ('mlp', 'transformer')."),
        (
            {"encoder_features": "patches"},
            "encoder_features='patches' is not supported; choose one of ('pooled', 'grid').",
        ),
        ({"prefix_length": 0}, "prefix_length=0 must be a positive integer."),
        ({"prefix_length": 2.5}, "prefix_length=2.5 must be a positive integer."),
        ({"image_size": -1}, "image_size=-1 must be a positive integer."),
        ({"mapper_hidden_size": 0}, "mapper_hidden_size=0 must be a positive integer."),
        ({"mapper_num_layers": 0}, "mapper_num_layers=0 must be a positive integer."),
        ({"mapper_num_heads": True}, "mapper_num_heads=True must be a positive integer."),
        ({"teacher_embed_dim": -1}, "teacher_embed_dim=-1 must be >= 0 (0 disables the head)."),
        ({"teacher_embed_dim": "512"}, "teacher_embed_dim='512' must be an integer >= 0 (0 disables it)."),
        ({"mapper_dropout": 1.0}, "mapper_dropout=1.0 must be in [0, 1)."),
        ({"encoder_features": "grid"}, "encoder_features='grid' gives a sequence of image tokens, which only"),
        ({"mapper_type": "transformer", "mapper_num_heads": 3}, "mapper_num_heads=3 must divide the decoder width"),
        ({"mapper_prefix": "slots"}, "mapper_prefix='slots' is not supported; choose one of ('queries', 'grid')."),
        (
            {"mapper_type": "transformer", "mapper_prefix": "grid"},
            "mapper_prefix='grid' makes the image's grid tokens the prefix: it needs encoder_features='grid' and",
        ),
        ({"prefix_length": 64}, "prefix_length=64 leaves no room for a caption in the decoder's context"),
        ({"encoder_name": None}, "encoder_name=None must be a model name (str)."),
        ({"encoder_name": "not_a_net"}, "encoder_name='not_a_net' is neither a torchvision classification model"),
        ({"encoder_name": "timm/resnet18_nope"}, "encoder_name='timm/resnet18_nope' is neither a torchvision"),
    ],
)
def test_invalid_values_raise_one_clear_error(overrides, message):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    assert str(error.value).startswith(message)
