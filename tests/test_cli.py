"""clipcap/cli.py: a config file with overriding flags, checked key by key (YAML that is not a mapping, or not YAML,
is one error line: docs/reliability.md), and a model's `config_overrides` read as `ClipCapConfig` fields."""

import pytest

import run_train
from clipcap.cli import build_model_config


def test_config_file_with_overriding_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: out\nlambda_cos: 0.5\nlearning_rate: 0.001\nconfig_overrides: {image_size: 64}\n")
    model_args, _, _, guidance, _, training_args = run_train.parse_args(
        [str(config), "--lambda_cos", "0", "--config_overrides", "image_size=32"]
    )
    image_size = build_model_config(model_args.config_overrides).image_size
    assert guidance.lambda_cos == 0.0 and image_size == 32 and training_args.learning_rate == 0.001
    (tmp_path / "bad.yaml").write_text("output_dir: out\nlambda_cosine: 1\n")
    with pytest.raises(ValueError, match="lambda_cosine"):
        run_train.parse_args([str(tmp_path / "bad.yaml"), "--lambda_cos", "0"])


def test_config_overrides_are_read_as_clipcapconfig_fields():
    """A flag's `key=value,...` and a config file's mapping give the same ClipCapConfig; values take their field's type,
    a dotted key reaches the decoder's GPT2Config, an empty value is null, and a bad key or value is one ConfigError."""
    from clipcap.cli import ConfigError, parse_config_overrides
    from configuration_clipcap import ClipCapConfig

    flag = "image_size=48,encoder_pretrained=false,text_config.n_layer=2,decoder_name_or_path=,mapper_dropout=0.1"
    parsed = parse_config_overrides(flag, ClipCapConfig)
    assert parsed == {
        "image_size": 48,
        "encoder_pretrained": False,
        "text_config": {"n_layer": 2},
        "decoder_name_or_path": None,
        "mapper_dropout": 0.1,
    }
    mapping = {"image_size": "48", "encoder_pretrained": False, "text_config": {"n_layer": 2}, "mapper_dropout": 0.1}
    assert parse_config_overrides({**mapping, "decoder_name_or_path": None}, ClipCapConfig) == parsed
    config = build_model_config(flag, teacher_embed_dim=16)
    assert (config.image_size, config.text_config.n_layer, config.text_config.n_embd) == (48, 2, 768)
    assert config.teacher_embed_dim == 16 and build_model_config("teacher_embed_dim=8", 16).teacher_embed_dim == 8
    assert parse_config_overrides(None, ClipCapConfig) == parse_config_overrides("", ClipCapConfig) == {}
    errors = {
        "imag_size=3": "config_overrides: unknown keys ['imag_size'] (see ClipCapConfig's fields)",
        "text_config.n_lyer=2": "config_overrides: text_config: unknown keys ['n_lyer'] (see GPT2Config's fields)",
        "image_size=big": "config_overrides: image_size must be an integer, not 'big' (str)",
        "mapper_type=rnn": "config_overrides: mapper_type must be one of 'mlp', 'transformer', not 'rnn' (str)",
        "image_size": "config_overrides: 'image_size' is not key=value",
    }
    for overrides, message in errors.items():
        with pytest.raises(ConfigError) as error:
            parse_config_overrides(overrides, ClipCapConfig)
        assert str(error.value) == message


def test_yaml_that_is_not_a_mapping_or_not_yaml_is_one_line(tmp_path, capsys):
    for text, message in (("- a\n- b\n", "must hold a mapping"), ("a: [1,\n", "is not readable YAML")):
        (tmp_path / "bad.yaml").write_text(text)
        assert run_train.main([str(tmp_path / "bad.yaml")]) == 1
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
