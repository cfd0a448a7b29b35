"""Stands in for transformers' `tests/utils/test_configuration_utils.py` (not in its sdist): `ConfigTester` reads
`config_common_kwargs` from it, arguments every `PreTrainedConfig` takes, set to values other than their defaults.
`ConfigTester.check_config_arguments_init` uses them for configs without sub-configs only, so ClipCapConfig (which
has `text_config`) never reads them; they are here so that the module imports."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
