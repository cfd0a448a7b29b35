"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) run against ClipCap, as transformers
runs them against GIT or BLIP; with our `GenerationTesterMixin` (tests/transformers_shims/generation.py) in place of
transformers', whose module its sdist lacks. tests/transformers_suite.py says where the upstream files come from.

Three tiny configurations: the MLP mapper on pooled features and the transformer mapper on the feature grid, each
with timm's `test_efficientnet`, and torchvision's MobileNetV2 (the real encoder) with the transformer mapper. Every
test the mixin skips for this model says why in `SKIPS`; pytest's `-ra` summary lists them.
"""

import os
import sys
import unittest
from typing import ClassVar

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from transformers_suite import load

test_modeling_common, test_configuration_common = load()
from transformers_upstream_tests.generation.test_utils import GenerationTesterMixin

from configuration_clipcap import ClipCapConfig
from modeling_clipcap import ClipCapForCaptioning

ModelTesterMixin = test_modeling_common.ModelTesterMixin
ConfigTester = test_configuration_common.ConfigTester
floats_tensor, ids_tensor = test_modeling_common.floats_tensor, test_modeling_common.ids_tensor

pytestmark = pytest.mark.slow

# What the common tests skip for this model, and why. A test named here is skipped with its reason; none is here
# because it fails.
SKIPS = {
    "test_model_base_model_prefix": "ClipCap is an encoder, a mapper and a GPT-2 LM head model side by side, with no "
    "base model under a head (the test's docstring asks such architectures to skip it)",
    "test_resize_position_vector_embeddings": "GPT-2's position embeddings are not resizable (test_resize_position_embeddings is off, as for GPT-2)",
}


class ClipCapModelTester:
    def __init__(
        self,
        parent,
        mapper_type="mlp",
        encoder_features="pooled",
        encoder_name="timm/test_efficientnet",
        batch_size=2,
        text_length=5,
        prefix_length=3,
        image_size=32,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        teacher_embed_dim=16,
        is_training=True,
    ):
        self.parent = parent
        self.mapper_type, self.encoder_features, self.encoder_name = mapper_type, encoder_features, encoder_name
        self.batch_size, self.text_length, self.prefix_length = batch_size, text_length, prefix_length
        self.image_size, self.vocab_size, self.hidden_size = image_size, vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.teacher_embed_dim, self.is_training = teacher_embed_dim, is_training
        # What the decoder reads, and what its attentions and hidden states cover: the prefix, then the caption.
        self.seq_length = prefix_length + text_length
        self.eos_token_id = vocab_size - 1

    def get_config(self) -> ClipCapConfig:
        return ClipCapConfig(
            encoder_name=self.encoder_name,
            encoder_pretrained=False,
            encoder_features=self.encoder_features,
            image_size=self.image_size,
            mapper_type=self.mapper_type,
            prefix_length=self.prefix_length,
            mapper_hidden_size=37,
            mapper_num_layers=1,
            mapper_num_heads=2,
            teacher_embed_dim=self.teacher_embed_dim,
            decoder_name_or_path=None,
            text_config={
                "vocab_size": self.vocab_size,
                "n_embd": self.hidden_size,
                "n_layer": self.num_hidden_layers,
                "n_head": self.num_attention_heads,
                "n_positions": 64,
                "bos_token_id": self.eos_token_id,
                "eos_token_id": self.eos_token_id,
            },
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        # Caption starts without EOS (the processor's trailing EOS is what `generate` drops).
        input_ids = ids_tensor([self.batch_size, self.text_length], self.vocab_size - 1)
        attention_mask = torch.ones_like(input_ids)
        return self.get_config(), pixel_values, input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class ClipCapModelTestBase(ModelTesterMixin, GenerationTesterMixin):
    all_model_classes = (ClipCapForCaptioning,)
    all_generative_model_classes = (ClipCapForCaptioning,)
    tester_kwargs: ClassVar[dict] = {}
    test_resize_embeddings = True
    test_resize_position_embeddings = False  # GPT-2's learned positions, as transformers' GPT-2 tests set it
    additional_model_inputs: ClassVar[list[str]] = [
        "input_ids"
    ]  # next to `pixel_values`, the main input (eager/SDPA comparisons)
    _is_composite = True  # a text sub-config and a GPT-2 sub-model, as VLMs have
    test_torch_exportable = False  # torch.export is not a promise of this project (ExportTesterMixin is empty)

    def setUp(self):
        skip = SKIPS.get(self._testMethodName)
        if skip:
            self.skipTest(skip)
        self.model_tester = ClipCapModelTester(self, **self.tester_kwargs)
        self.config_tester = ConfigTester(
            self, config_class=ClipCapConfig, has_text_modality=False, common_properties=["prefix_length"]
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:  # captions are their own targets; the model shifts them (GIT's tester does the same)
            inputs_dict["labels"] = inputs_dict["input_ids"].clone()
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()


class ClipCapMLPModelTest(ClipCapModelTestBase, unittest.TestCase):
    # No teacher head: then every parameter gets a gradient from forward's loss, and the mixin checks that.
    tester_kwargs: ClassVar[dict] = {"mapper_type": "mlp", "encoder_features": "pooled", "teacher_embed_dim": 0}


class ClipCapTransformerModelTest(ClipCapModelTestBase, unittest.TestCase):
    tester_kwargs: ClassVar[dict] = {"mapper_type": "transformer", "encoder_features": "grid"}
    # The teacher head is trained by the CLIP losses the Trainer adds (clipcap.trainer.compute_loss), not by the
    # caption loss forward returns, so its parameters get no gradient from `loss.backward()` alone.
    test_all_params_have_gradient = False


class ClipCapMobileNetV2ModelTest(ClipCapModelTestBase, unittest.TestCase):
    tester_kwargs: ClassVar[dict] = {
        "mapper_type": "transformer",
        "encoder_features": "grid",
        "encoder_name": "mobilenet_v2",
    }
    test_all_params_have_gradient = False  # the teacher head, as above

    def test_model_is_small(self):
        self.skipTest(
            "the real MobileNetV2 (2.2M parameters) is what this class tests; the two test_efficientnet classes "
            "keep the 1M-parameter check"
        )
