"""The fast paths bench/ measures compute what the plain ones do: batched n-gram blocking, the prefix run once per
image, the LM head on the last position, a frozen encoder's features computed once, the fused GELU, channels-last
convolutions, and a malloc that keeps freed memory."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, NoRepeatNGramLogitsProcessor

import run_train
from clipcap.collator import CaptionCollator
from clipcap.encoder_cache import add_encoder_features
from clipcap.pretrained import from_pretrained_parts
from configuration_clipcap import FAST_GELU
from modeling_clipcap import NoRepeatNGramBlocker
from processing_clipcap import ClipCapProcessor
from tests.conftest import ROOT, TINY_DECODER, tiny_config, tiny_dataset, tiny_model, train_argv

# ----------------------------------------------------------------------------------------------- n-gram blocking


def test_ngram_blocker_bans_what_completes_a_seen_ngram():
    ids = torch.tensor([[5, 6, 7, 5, 6], [1, 2, 3, 4, 1]])
    scores = torch.zeros(2, 10)
    blocked = NoRepeatNGramBlocker(3)(ids, scores)
    # Row 0 ends with (5, 6), which was followed by 7; row 1 ends with (4, 1), never seen before.
    assert blocked[0].isinf().nonzero().flatten().tolist() == [7]
    assert not blocked[1].isinf().any()
    assert blocked.data_ptr() == scores.data_ptr()  # in place
    with pytest.raises(ValueError, match="ngram_size=0"):
        NoRepeatNGramBlocker(0)


@pytest.mark.parametrize("ngram_size", [1, 2, 3, 4])
def test_ngram_blocker_equals_transformers_processor(ngram_size):
    generator = torch.Generator().manual_seed(ngram_size)
    for length in (0, 1, 2, 3, 5, 12, 30):
        ids = torch.randint(0, 6, (40, length), generator=generator)  # a small vocabulary: many repeats
        scores = torch.randn(40, 10, generator=generator)
        expected = NoRepeatNGramLogitsProcessor(ngram_size)(ids, scores.clone())
        assert torch.equal(NoRepeatNGramBlocker(ngram_size)(ids, scores.clone()), expected), length


def test_generate_uses_the_batched_blocker_and_no_ngram_repeats(pixel_values, monkeypatch):
    calls = {"batched": 0, "transformers": 0}

    def counting(cls, name):
        original = cls.__call__

        def call(self, input_ids, scores):
            calls[name] += 1
            return original(self, input_ids, scores)

        monkeypatch.setattr(cls, "__call__", call)

    counting(NoRepeatNGramBlocker, "batched")
    counting(NoRepeatNGramLogitsProcessor, "transformers")
    model = tiny_model()
    captions = model.generate(pixel_values, num_beams=3, max_new_tokens=12, no_repeat_ngram_size=2, eos_token_id=None)
    assert calls == {"batched": 12, "transformers": 0}
    for row in captions.tolist():
        bigrams = list(zip(row, row[1:], strict=False))
        assert len(bigrams) == len(set(bigrams)), row


# ------------------------------------------------------------------------------------------------ generation


def decoder_calls(model):
    """Record the sequence shape of every decoder and LM-head call."""
    calls = {"decoder": [], "lm_head": []}
    hooks = [
        model.decoder.transformer.register_forward_pre_hook(
            lambda module, args, kwargs: calls["decoder"].append(tuple(kwargs["inputs_embeds"].shape[:2])),
            with_kwargs=True,
        ),
        model.decoder.lm_head.register_forward_pre_hook(
            lambda module, args: calls["lm_head"].append(args[0].shape[1])
        ),
    ]
    return calls, hooks


def test_prefix_runs_once_per_image_and_the_lm_head_on_the_last_position(pixel_values):
    model = tiny_model()
    calls, hooks = decoder_calls(model)
    model.generate(pixel_values, num_beams=3, max_new_tokens=4, eos_token_id=None)
    for hook in hooks:
        hook.remove()
    prefix = model.config.prefix_length
    # All but the last prefix position once per image; then per beam the last prefix position, then one token a step.
    assert calls["decoder"] == [(4, prefix - 1), (12, 1), (12, 1), (12, 1), (12, 1)]
    assert calls["lm_head"] == [1, 1, 1, 1]


@pytest.mark.parametrize(
    "options",
    [
        {"num_beams": 1},
        {"num_beams": 4},
        {"num_beams": 3, "num_return_sequences": 2},
        {"do_sample": True, "top_k": 5, "num_return_sequences": 2},
    ],
)
def test_fast_generation_equals_transformers_own_path(pixel_values, options):
    """Prefix once per image, LM head on the last position, batched n-gram blocking: the same captions and scores as
    transformers' own cache (prefix per beam) with the LM head over every position."""
    model = tiny_model()
    common = {"max_new_tokens": 8, "no_repeat_ngram_size": 2, "return_dict_in_generate": True, "output_scores": True}
    torch.manual_seed(3)
    fast = model.generate(pixel_values, **common, **options)
    torch.manual_seed(3)
    plain = model.generate(pixel_values, **common, **options, cache_implementation="dynamic", logits_to_keep=0)
    assert torch.equal(fast.sequences, plain.sequences)
    for fast_scores, plain_scores in zip(fast.scores, plain.scores, strict=True):
        assert torch.allclose(fast_scores, plain_scores, atol=1e-5)


# ---------------------------------------------------------------------------------------- frozen encoder cache


def test_image_features_stand_in_for_the_images(pixel_values):
    model = tiny_model(freeze_encoder=True)
    ids = torch.tensor([[10, 20, 30, 50256]] * 4)
    features = model.get_image_features(pixel_values)
    from_images = model(pixel_values=pixel_values, input_ids=ids, labels=ids)
    from_features = model(image_features=features, input_ids=ids, labels=ids)
    assert torch.equal(from_images.logits, from_features.logits) and torch.equal(from_images.loss, from_features.loss)
    captions = model.generate(pixel_values, max_new_tokens=5)
    assert torch.equal(captions, model.generate(image_features=features, max_new_tokens=5))


def test_add_encoder_features_computes_the_frozen_encoders_output_once():
    model = tiny_model(freeze_encoder=True)
    processor = ClipCapProcessor.from_config(model.config)
    train = tiny_dataset(num_train=5, num_validation=1)["train"]
    cached = add_encoder_features(train, model, processor, batch_size=2)
    assert len(cached) == 5 and cached.column_names == [*train.column_names, "encoder_features"]
    pixel_values = processor(images=[image.convert("RGB") for image in train["image"]])["pixel_values"]
    expected = model.get_image_features(pixel_values)
    assert torch.allclose(torch.tensor(cached["encoder_features"][:]), expected, atol=1e-5)
    # Named by the encoder's weights: the same encoder finds it again, another encoder does not.
    assert add_encoder_features(train, model, processor)._fingerprint == cached._fingerprint
    with torch.no_grad():
        model.encoder.backbone.features[0][0].weight.mul_(2)
    assert add_encoder_features(train, model, processor)._fingerprint != cached._fingerprint
    with pytest.raises(ValueError, match="frozen encoder"):
        add_encoder_features(train, tiny_model(), processor)


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


# ------------------------------------------------------------------------------- GELU, channels-last, malloc


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


def test_channels_last_encoder_matches_nchw(pixel_values):
    model = tiny_model()
    nchw = torch.nn.functional.adaptive_avg_pool2d(model.encoder.backbone.features(pixel_values), 1).flatten(1)
    # The same sums in another order: equal to float32 rounding (features up to about 4 here).
    torch.testing.assert_close(model.get_image_features(pixel_values), nchw, rtol=1e-5, atol=1e-4)


PAGE_FAULTS = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from clipcap.memory import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(16 * 2**20)  # 64 MiB, every page written
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
default = faults()
kept = keep_freed_memory()
# The heap grows until freed blocks coalesce into one that fits torch's aligned 64 MiB request: a few rounds, more or
# fewer with what the imports left on the heap (in the scripts, the first training or generation steps).
for _ in range(3):
    faults()
print(default, faults(), kept)
"""


def test_keep_freed_memory_stops_the_page_faults_of_large_tensors():
    code = PAGE_FAULTS.format(root=str(ROOT))
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    default, kept_faults, kept = output.split()
    # glibc's default: each 64 MiB tensor is a fresh mmap, 16,384 pages faulted in, five times over.
    assert int(default) >= 5 * 16384 and kept == "True"
    assert int(kept_faults) < 1000
    env = {"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert output.split()[2] == "False"  # the environment tunes malloc already: left alone
