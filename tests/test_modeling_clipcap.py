"""modeling_clipcap.py (`ClipCapForCaptioning`): the loss is the cross-entropy over caption tokens, gradients reach
the trainable parts only, generation equals a hand-written loop and transformers' own path (the fast paths bench/
measures: batched n-gram blocking, the prefix run once per image, the LM head on the last position, a frozen encoder's
features standing in for the images, channels-last convolutions), saving and loading is exact, weights load from
safetensors only unless pickle is allowed (docs/reliability.md), and a saved model loads through the Auto classes in a
fresh process, as a Hub user would load it."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import DynamicCache, NoRepeatNGramLogitsProcessor

from configuration_clipcap import ClipCapConfig
from modeling_clipcap import ClipCapForCaptioning, NoRepeatNGramBlocker
from processing_clipcap import ClipCapProcessor
from tests.conftest import ROOT, tiny_config, tiny_model
from tests.helpers import run_isolated

EOS = 50256


# (mapper_type, encoder_features, mapper_prefix); the tiny model's 64 px images give a 2x2 grid, its prefix_length 4.
ALL_MAPPERS = [
    ("mlp", "pooled", "queries"),
    ("transformer", "pooled", "queries"),
    ("transformer", "grid", "queries"),
    ("transformer", "grid", "grid"),
]


def caption_batch():
    input_ids = torch.tensor([[64, 2266, 25772, EOS, EOS, EOS], [11545, 284, 7060, 1306, 284, EOS]] * 2)
    attention_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]] * 2)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return input_ids, attention_mask, labels


@pytest.mark.parametrize("mapper_type, features, prefix", ALL_MAPPERS)
def test_loss_is_cross_entropy_over_caption_tokens_only(mapper_type, features, prefix, pixel_values):
    model = tiny_model(mapper_type=mapper_type, encoder_features=features, mapper_prefix=prefix)
    input_ids, attention_mask, labels = caption_batch()
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (4, 4 + 6, 50257)  # every position: the prefix's 4 and the caption's 6

    # By hand: run the decoder on [prefix; caption] and score each real caption token, EOS included, with the logits
    # of the position before it. Prefix positions and padding have no target.
    prefix = model.get_prefix_embeds(pixel_values)
    embeds = torch.cat([prefix, model.decoder.transformer.wte(input_ids)], dim=1)
    mask = torch.cat([torch.ones(4, 4, dtype=torch.long), attention_mask], dim=1)
    full_logits = model.decoder(inputs_embeds=embeds, attention_mask=mask).logits
    terms = []
    for b in range(4):
        for j in range(6):
            if attention_mask[b, j]:
                terms.append(-F.log_softmax(full_logits[b, 4 - 1 + j], dim=-1)[input_ids[b, j]])
    assert len(terms) == 20
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.logits, full_logits)

    # Padding tokens can be anything: they neither count nor change the real positions.
    noisy_ids = input_ids.masked_fill(attention_mask == 0, 123)
    again = model(pixel_values=pixel_values, input_ids=noisy_ids, attention_mask=attention_mask, labels=labels)
    torch.testing.assert_close(again.loss, out.loss)


def test_num_items_in_batch_sums_then_divides(pixel_values):
    model = tiny_model()
    input_ids, attention_mask, labels = caption_batch()
    mean = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    summed = model(
        pixel_values=pixel_values,
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        num_items_in_batch=40,
    ).loss
    torch.testing.assert_close(summed, mean * 20 / 40)


def test_student_embedding_is_normalised_and_optional(pixel_values):
    input_ids, attention_mask, _ = caption_batch()
    out = tiny_model()(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    assert out.loss is None
    assert out.z.shape == (4, 16)
    torch.testing.assert_close(out.z.norm(dim=-1), torch.ones(4))
    no_head = tiny_model(teacher_embed_dim=0)
    assert no_head.teacher_head is None
    assert no_head(pixel_values=pixel_values, input_ids=input_ids).z is None


@pytest.mark.parametrize("freeze", [False, True])
def test_gradients_reach_trainable_parts_only(freeze, pixel_values):
    model = tiny_model(freeze_encoder=freeze).train()
    input_ids, attention_mask, labels = caption_batch()
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    (out.loss + out.z.sum()).backward()
    for part in (model.mapper, model.decoder, model.teacher_head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.requires_grad)
    encoder_grads = [p.grad for p in model.encoder.parameters()]
    if freeze:
        assert all(grad is None for grad in encoder_grads)
        assert not any(m.training for m in model.encoder.modules())  # BatchNorm statistics stay fixed
    else:
        assert sum(grad.abs().sum() for grad in encoder_grads if grad is not None) > 0
        assert model.encoder.training


def manual_greedy(model, pixel_values, max_new_tokens, starts=None):
    """Argmax decoding written out: re-run the decoder over the whole sequence at every step, no cache. `starts`:
    each image's caption start (token ids), which the decoder reads after the prefix."""
    captions = []
    for i, image in enumerate(pixel_values):
        embeds = model.get_prefix_embeds(image[None])
        tokens = list(starts[i]) if starts else []
        if tokens:
            embeds = torch.cat([embeds, model.decoder.transformer.wte(torch.tensor(tokens))[None]], dim=1)
        for _ in range(max_new_tokens):
            token = model.decoder(inputs_embeds=embeds).logits[0, -1].argmax()
            tokens.append(int(token))
            if token == EOS:
                break
            embeds = torch.cat([embeds, model.decoder.transformer.wte(token)[None, None]], dim=1)
        captions.append(tokens)
    return captions


@pytest.mark.parametrize("mapper_type, features, prefix", ALL_MAPPERS)
def test_greedy_generate_equals_manual_argmax_loop(mapper_type, features, prefix, pixel_values):
    model = tiny_model(mapper_type=mapper_type, encoder_features=features, mapper_prefix=prefix)
    generated = model.generate(pixel_values, num_beams=1, do_sample=False, no_repeat_ngram_size=0, max_new_tokens=8)
    expected = manual_greedy(model, pixel_values, 8)
    assert len({tuple(caption) for caption in expected}) > 1, "captions should differ between images"
    for row, tokens in zip(generated.tolist(), expected):
        assert row[: len(tokens)] == tokens
        assert all(token == EOS for token in row[len(tokens) :])  # padding after EOS


def test_a_text_start_is_continued_as_the_manual_loop_continues_it(pixel_values):
    """`generate(pixel_values, input_ids, attention_mask)` as the processor encodes texts (EOS appended, right
    padding): each caption is its start (without that EOS) followed by the argmax continuation of prefix + start."""
    model = tiny_model()
    starts = [[64, 275], [], [64], [64, 275]]  # two of one length, one empty (the image alone), one of another length
    width = max(len(start) for start in starts) + 1
    input_ids = torch.full((4, width), EOS)
    attention_mask = torch.zeros(4, width, dtype=torch.long)
    for row, start in enumerate(starts):
        input_ids[row, : len(start)] = torch.tensor(start, dtype=torch.long)
        attention_mask[row, : len(start) + 1] = 1
    kwargs = {"num_beams": 1, "do_sample": False, "no_repeat_ngram_size": 0, "max_new_tokens": 6}
    generated = model.generate(pixel_values, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    expected = manual_greedy(model, pixel_values, 6, starts)
    for row, tokens in zip(generated.tolist(), expected):
        assert row[: len(tokens)] == tokens
        assert all(token == EOS for token in row[len(tokens) :])
    assert generated[1].tolist()[:3] == model.generate(pixel_values[1:2], **kwargs)[0].tolist()[:3]
    with pytest.raises(ValueError, match="2 texts for 4 images"):
        model.generate(pixel_values, input_ids=input_ids[:2], attention_mask=attention_mask[:2])


def test_beam_search_returns_num_return_sequences_with_scores(pixel_values):
    model = tiny_model()
    out = model.generate(
        pixel_values,
        num_beams=4,
        num_return_sequences=3,
        max_new_tokens=6,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert out.sequences.shape[0] == 12 and out.sequences.shape[1] <= 6
    assert out.sequences_scores.shape == (12,)
    scores = out.sequences_scores.view(4, 3)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # best first within each image
    assert torch.all(scores < 0)


def test_sampling_is_seeded(pixel_values):
    model = tiny_model()
    torch.manual_seed(3)
    first = model.generate(pixel_values, do_sample=True, num_beams=1, top_k=50, max_new_tokens=6)
    torch.manual_seed(3)
    second = model.generate(pixel_values, do_sample=True, num_beams=1, top_k=50, max_new_tokens=6)
    assert torch.equal(first, second)


def strip_eos(rows):
    return [tuple(token for token in row if token != EOS) for row in rows.tolist()]


@pytest.mark.parametrize("num_beams", [1, 5])
def test_caption_does_not_depend_on_the_batch(num_beams, pixel_values):
    model = tiny_model()
    batched = strip_eos(model.generate(pixel_values, num_beams=num_beams, max_new_tokens=8))
    single = [
        strip_eos(model.generate(image[None], num_beams=num_beams, max_new_tokens=8))[0] for image in pixel_values
    ]
    assert batched == single
    assert len(set(batched)) > 1


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


def test_image_features_stand_in_for_the_images(pixel_values):
    model = tiny_model(freeze_encoder=True)
    ids = torch.tensor([[10, 20, 30, 50256]] * 4)
    features = model.get_encoder_features(pixel_values)
    from_images = model(pixel_values=pixel_values, input_ids=ids, labels=ids)
    from_features = model(image_features=features, input_ids=ids, labels=ids)
    assert torch.equal(from_images.logits, from_features.logits) and torch.equal(from_images.loss, from_features.loss)
    captions = model.generate(pixel_values, max_new_tokens=5)
    assert torch.equal(captions, model.generate(image_features=features, max_new_tokens=5))


def test_generation_defaults_are_saved_with_the_model(tmp_path):
    model = tiny_model()
    model.generation_config.num_beams = 3
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert (saved["num_beams"], saved["max_new_tokens"], saved["eos_token_id"], saved["pad_token_id"]) == (
        3,
        30,
        EOS,
        EOS,
    )
    assert ClipCapForCaptioning.from_pretrained(tmp_path).generation_config.num_beams == 3


@pytest.mark.parametrize("mapper_type, features, prefix", ALL_MAPPERS)
def test_save_load_round_trip_is_exact(mapper_type, features, prefix, pixel_values, tmp_path):
    model = tiny_model(mapper_type=mapper_type, encoder_features=features, mapper_prefix=prefix, freeze_encoder=True)
    input_ids, attention_mask, labels = caption_batch()
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    captions = model.generate(pixel_values, num_beams=3, max_new_tokens=8)
    model.save_pretrained(tmp_path)

    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").is_file()
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert "decoder.transformer.wte.weight" in keys and "decoder.lm_head.weight" not in keys  # tied, stored once
    assert any(key.endswith("running_mean") for key in keys)  # BatchNorm statistics travel too

    loaded = ClipCapForCaptioning.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.decoder.lm_head.weight.data_ptr() == loaded.decoder.transformer.wte.weight.data_ptr()
    again = loaded(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert torch.equal(again.logits, out.logits) and torch.equal(again.z, out.z)
    assert torch.equal(loaded.generate(pixel_values, num_beams=3, max_new_tokens=8), captions)
    assert loaded.config.freeze_encoder and not any(p.requires_grad for p in loaded.encoder.parameters())


def test_model_weights_load_from_safetensors_only_unless_pickle_is_allowed(tmp_path):
    from modeling_clipcap import ClipCapForCaptioning
    from processing_clipcap import ClipCapProcessor
    from tests.conftest import tiny_model

    model = tiny_model()
    model.save_pretrained(tmp_path)
    ClipCapProcessor.from_config(model.config).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")

    with pytest.raises(OSError, match=r"has its weights only as a pickle \(pytorch_model.bin\).*allow_pickle=True"):
        ClipCapForCaptioning.from_pretrained(tmp_path)
    from modeling_clipcap import pickle_only_weights

    (tmp_path / "optimizer.pt").write_bytes(b"")  # the Trainer's state in a checkpoint is not named as weights
    assert pickle_only_weights(tmp_path) == ["pytorch_model.bin"]
    loaded = ClipCapForCaptioning.from_pretrained(tmp_path, allow_pickle=True)
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in state.items())

    # The command-line tools say the same in one line and exit non-zero; --allow_pickle opts in.
    import caption

    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(image)
    process = subprocess.run(
        [sys.executable, "caption.py", str(tmp_path), str(image)], cwd=ROOT, capture_output=True, text=True
    )
    assert process.returncode == caption.EXIT_FAILED
    assert process.stderr.strip().splitlines()[-1].startswith("caption.py: cannot load the model ")
    assert "pickle" in process.stderr and "--allow_pickle" in process.stderr
    assert caption.main([str(tmp_path), str(image), "--allow_pickle", "--progress", "false"]) == caption.EXIT_OK


AUTO_LOAD = """
import json, sys, torch
from transformers import AutoConfig, AutoModel, AutoProcessor
path = sys.argv[1]
config = AutoConfig.from_pretrained(path, trust_remote_code=True)
model = AutoModel.from_pretrained(path, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
pixel_values = torch.load(path + "/pixels.pt")
captions = model.generate(pixel_values, num_beams=3, max_new_tokens=6)
project_modules = [m for m in ("configuration_clipcap", "modeling_clipcap", "processing_clipcap") if m in sys.modules]
print(json.dumps({
    "classes": [type(config).__module__, type(model).__module__, type(processor).__module__],
    "names": [type(config).__name__, type(model).__name__, type(processor).__name__],
    "captions": captions.tolist(),
    "decoded": processor.batch_decode(captions),
    "project_modules": project_modules,
}))
"""


def test_auto_classes_load_with_trust_remote_code_in_a_fresh_process(tmp_path, pixel_values):
    model = tiny_model()
    processor = ClipCapProcessor.from_config(model.config)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    torch.save(pixel_values, tmp_path / "pixels.pt")
    expected = model.generate(pixel_values, num_beams=3, max_new_tokens=6)

    loaded = run_isolated(AUTO_LOAD, tmp_path, tmp_path)
    assert loaded["names"] == ["ClipCapConfig", "ClipCapForCaptioning", "ClipCapProcessor"]
    assert all(module.startswith("transformers_modules.") for module in loaded["classes"])
    assert loaded["project_modules"] == []
    assert loaded["captions"] == expected.tolist()
    assert loaded["decoded"] == processor.batch_decode(expected)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_clipcap.ClipCapConfig",
        "AutoModel": "modeling_clipcap.ClipCapForCaptioning",
        "AutoModelForImageTextToText": "modeling_clipcap.ClipCapForCaptioning",
    }
    assert saved["custom_pipelines"] == {
        "image-text-to-text": {
            "impl": "pipeline_clipcap.ClipCapCaptioningPipeline",
            "pt": ["AutoModelForImageTextToText"],
            "type": "multimodal",
        }
    }


def test_default_model_parameter_count():
    model = ClipCapForCaptioning(ClipCapConfig())
    parts = ("encoder", "mapper", "decoder", "teacher_head")
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in parts}
    assert counts["encoder"] == 2_223_872  # torchvision mobilenet_v2 without its classifier
    assert (
        counts["mapper"] == 1280 * 768 + 768 + 768 * 7680 + 7680
    )  # Linear(1280, 768) -> Tanh -> Linear(768, 10 x 768)
    assert counts["decoder"] == 81_912_576  # DistilGPT2 (lm_head tied to wte)
    assert counts["teacher_head"] == 2 * 768 + 768 * 512 + 512
    assert model.num_parameters() == sum(counts.values())
    assert model.config.encoder_hidden_size == 1280


def test_grid_prefix_is_the_mappers_output_at_each_grid_token_with_its_row_and_column(pixel_values):
    """mapper_prefix='grid': no queries; the prefix is the transformer's output at the 4 grid tokens, which carry the
    learned position plus the fixed sine-cosine code of their row (first half) and column (second half)."""
    from modeling_clipcap import sincos_2d

    model = tiny_model(mapper_type="transformer", encoder_features="grid", mapper_prefix="grid")
    mapper = model.mapper
    assert not hasattr(mapper, "queries") and mapper.image_position.shape == (4, 32)
    features = model.encoder(pixel_values)
    tokens = mapper.input_projection(features) + mapper.image_position + sincos_2d(2, 2, 32)
    torch.testing.assert_close(mapper(features), mapper.transformer(tokens))
    assert model.get_prefix_embeds(pixel_values).shape == (4, 4, 32)

    # cell (row 1, column 2) of a 2x3 grid, 8 wide: [sin, sin, cos, cos] of the row at frequencies 1 and 1/100,
    # then the same of the column
    codes = sincos_2d(2, 3, 8)
    expected = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]
    expected += [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)]
    torch.testing.assert_close(codes[5], torch.tensor(expected))
    assert torch.equal(codes[3, :4], codes[5, :4]) and torch.equal(codes[2, 4:], codes[5, 4:])  # same row / column
    assert sincos_2d(2, 2, 10)[:, 8:].abs().sum() == 0  # a width not divisible by 4: zero-padded

    with pytest.raises(ValueError, match="makes the 4 grid tokens the prefix: set prefix_length=4"):
        tiny_model(mapper_type="transformer", encoder_features="grid", mapper_prefix="grid", prefix_length=6)


@pytest.mark.parametrize(
    "encoder_name, features, mapper_type, hidden, tokens",
    [
        ("resnet18", "pooled", "mlp", 512, None),  # torchvision, classifier `fc` removed
        ("mobilenet_v3_small", "grid", "transformer", 576, 4),  # torchvision `.features` trunk, 2x2 grid at 64 px
        ("timm/mobilenetv3_small_050", "pooled", "mlp", 1024, None),  # timm, num_classes=0
        ("timm/mobilenetv3_small_050", "grid", "transformer", 288, 4),  # timm forward_features
    ],
)
def test_other_backbones(encoder_name, features, mapper_type, hidden, tokens, pixel_values):
    model = tiny_model(encoder_name=encoder_name, encoder_features=features, mapper_type=mapper_type)
    assert model.config.encoder_hidden_size == hidden
    encoded = model.encoder(pixel_values)
    assert encoded.shape == ((4, hidden) if tokens is None else (4, tokens, hidden))
    input_ids, attention_mask, labels = caption_batch()
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert torch.isfinite(out.loss) and out.prefix_embeds.shape == (4, 4, 32)


def test_grid_needs_a_features_trunk_for_torchvision_models():
    with pytest.raises(ValueError, match="encoder_features='grid' needs a torchvision model with a `.features` trunk"):
        ClipCapForCaptioning(tiny_config(encoder_name="resnet18", encoder_features="grid", mapper_type="transformer"))


def test_encoder_frozen_stages_get_no_gradient_and_keep_their_statistics(tmp_path):
    from .conftest import tiny_model

    model = tiny_model(encoder_frozen_stages=2).train()
    features = model.encoder.backbone.features
    assert not any(p.requires_grad for p in features[:2].parameters())
    assert all(p.requires_grad for p in features[2:].parameters())
    assert not features[0].training and not features[1].training and features[2].training
    statistics = features[0][1].running_mean.clone()
    pixels = torch.randn(2, 3, 64, 64)
    ids = torch.tensor([[11, 12, 13], [14, 15, 16]])
    outputs = model(pixel_values=pixels, input_ids=ids, labels=ids)
    outputs.loss.backward()
    assert all(p.grad is None for p in features[:2].parameters())
    assert features[2].conv[0][0].weight.grad is not None
    assert torch.equal(features[0][1].running_mean, statistics)  # BatchNorm in eval mode: statistics untouched
    # The state dict is the same as an unfrozen model's (nothing registered twice); loading keeps the freezing.
    assert list(model.state_dict()) == list(tiny_model().state_dict())
    model.save_pretrained(tmp_path / "m")
    loaded = ClipCapForCaptioning.from_pretrained(tmp_path / "m")
    assert not any(p.requires_grad for p in loaded.encoder.backbone.features[:2].parameters())
    with pytest.raises(ValueError, match="encoder_frozen_stages=-1"):
        ClipCapConfig(encoder_frozen_stages=-1)


def test_channels_last_encoder_matches_nchw(pixel_values):
    model = tiny_model()
    nchw = torch.nn.functional.adaptive_avg_pool2d(model.encoder.backbone.features(pixel_values), 1).flatten(1)
    # The same sums in another order: equal to float32 rounding (features up to about 4 here).
    torch.testing.assert_close(model.get_encoder_features(pixel_values), nchw, rtol=1e-5, atol=1e-4)


def test_bf16_autocast_training_step_on_cpu(pixel_values):
    model = tiny_model().train()
    input_ids, attention_mask, labels = caption_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32  # the loss is taken in fp32
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad.dtype == torch.float32 for p in model.decoder.parameters() if p.grad is not None)


# transformers' model contract, call by call, as a user of BLIP, GIT or GPT-2 makes the calls: each test below is one
# call that failed before the model kept the contract (`from_pretrained` from a state dict, missing weights
# initialised, `return_dict=False`, caches returned and continued, `main_input_name`, `inputs_embeds` in `forward` and
# `generate`, `logits_to_keep`, the first generation step over the whole prefix, left-padded caption starts, assisted
# decoding). tests/test_transformers_common.py runs transformers' own common model tests on top.

VOCAB = 50257


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def ids():
    return torch.tensor([[40, 2266, 25772, 318, 11, 257, 3797], [11545, 284, 7060, 1306, 284, 262, 1110]])


def greedy(**overrides):
    return {"num_beams": 1, "max_new_tokens": 4, "min_new_tokens": 4, "no_repeat_ngram_size": 0, **overrides}


def test_from_pretrained_takes_a_state_dict_without_a_path(model):
    loaded = ClipCapForCaptioning.from_pretrained(None, config=model.config, state_dict=model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize("encoder_name", ["mobilenet_v2", "timm/test_efficientnet"])
def test_missing_weights_and_buffers_are_initialised_as_a_new_model_is(encoder_name):
    """A checkpoint without the encoder: its weights come out as the library initialises them (torchvision's
    Kaiming fan-out for MobileNetV2's convolutions, timm's for EfficientNet), its BatchNorm buffers as new
    (mean 0, variance 1, no batches seen), not as uninitialised memory; and they are reported missing."""
    config = tiny_config(encoder_name=encoder_name)
    source = ClipCapForCaptioning(config)
    state = {name: value for name, value in source.state_dict().items() if not name.startswith("encoder.")}
    loaded, info = ClipCapForCaptioning.from_pretrained(
        None, config=config, state_dict=state, output_loading_info=True
    )
    assert {name for name in source.state_dict() if name.startswith("encoder.")} == set(info["missing_keys"])
    fresh = ClipCapForCaptioning(config)
    for name, tensor in loaded.encoder.state_dict().items():
        reference = fresh.encoder.state_dict()[name]
        if name.endswith(("running_mean", "num_batches_tracked")):
            assert torch.equal(tensor, torch.zeros_like(tensor)), name
        elif name.endswith("running_var"):
            assert torch.equal(tensor, torch.ones_like(tensor)), name
        elif reference.float().std() > 0 and tensor.numel() > 100:  # random weights: the library's spread
            assert torch.isclose(tensor.float().std(), reference.float().std(), rtol=0.2), name
        elif tensor.numel() > 1:  # constant: BatchNorm's ones and zeros, biases
            assert torch.equal(tensor, reference), name
    # The decoder's and mapper's weights were in the checkpoint: loaded as they were.
    for name, tensor in state.items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_return_dict_false_gives_the_output_as_a_tuple(model, images, ids):
    as_dict = model(pixel_values=images, input_ids=ids, labels=ids)
    as_tuple = model(pixel_values=images, input_ids=ids, labels=ids, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)


def test_use_cache_returns_a_cache_that_the_next_call_continues(model, images, ids):
    whole = model(pixel_values=images, input_ids=ids, use_cache=False)
    assert whole.cache is None
    head = model(pixel_values=images, input_ids=ids[:, :-1], use_cache=True)
    assert isinstance(head.cache, DynamicCache) and head.cache.get_seq_length() == 4 + 6  # prefix + caption so far
    step = model(input_ids=ids[:, -1:], cache=head.cache)
    torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1], rtol=1e-4, atol=1e-5)
    # transformers' old name for the cache is accepted, with its deprecation warning.
    head = model(pixel_values=images, input_ids=ids[:, :-1], use_cache=True)
    with pytest.warns(FutureWarning, match="past_key_values"):
        step = model(input_ids=ids[:, -1:], past_key_values=head.cache)
    torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1], rtol=1e-4, atol=1e-5)


def test_images_and_a_filled_cache_are_refused(model, images, ids):
    head = model(pixel_values=images, input_ids=ids[:, :-1], use_cache=True)
    with pytest.raises(ValueError, match="already holds a prefix"):
        model(pixel_values=images, input_ids=ids[:, -1:], cache=head.cache)


def test_main_input_is_pixel_values_and_token_ids_in_its_place_are_refused(model, ids):
    assert model.main_input_name == "pixel_values"
    with pytest.raises(ValueError, match=r"pixel_values must be a float tensor .* token ids go in input_ids="):
        model.generate(ids)


def test_forward_takes_inputs_embeds_in_place_of_input_ids(model, images, ids):
    from_ids = model(pixel_values=images, input_ids=ids, labels=ids)
    embeds = model.get_input_embeddings()(ids)
    from_embeds = model(pixel_values=images, inputs_embeds=embeds, labels=ids)
    assert torch.equal(from_embeds.logits, from_ids.logits) and torch.equal(from_embeds.loss, from_ids.loss)
    with pytest.raises(ValueError, match="exactly one of `input_ids` or `inputs_embeds`"):
        model(pixel_values=images, input_ids=ids, inputs_embeds=embeds)


def test_generate_takes_a_caption_start_as_inputs_embeds(model, images, ids):
    from_ids = model.generate(pixel_values=images, input_ids=ids[:, :3], **greedy())
    embeds = model.get_input_embeddings()(ids[:, :3])
    from_embeds = model.generate(pixel_values=images, inputs_embeds=embeds, **greedy())
    assert torch.equal(from_embeds, from_ids[:, 3:])  # the new tokens only, as transformers returns them


def test_logits_cover_prefix_and_caption_and_logits_to_keep_keeps_the_last(model, images, ids):
    every = model(pixel_values=images, input_ids=ids).logits
    assert every.shape == (2, 4 + 7, VOCAB)
    last = model(pixel_values=images, input_ids=ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, VOCAB)
    torch.testing.assert_close(last, every[:, -1:], rtol=1e-5, atol=1e-5)
    # The loss is the same whichever positions are kept.
    full_loss = model(pixel_values=images, input_ids=ids, labels=ids).loss
    assert torch.equal(model(pixel_values=images, input_ids=ids, labels=ids, logits_to_keep=1).loss, full_loss)


def test_first_generation_step_covers_prefix_and_caption_start(model, images, ids):
    model.set_attn_implementation("eager")  # attentions come from the eager path
    output = model.generate(
        pixel_values=images,
        input_ids=ids[:, :3],
        return_dict_in_generate=True,
        output_attentions=True,
        output_hidden_states=True,
        **greedy(),
    )
    config = model.config.text_config
    assert output.hidden_states[0][0].shape == (2, 4 + 3, config.n_embd)
    assert output.attentions[0][0].shape == (2, config.n_head, 4 + 3, 4 + 3)
    assert output.attentions[1][0].shape == (2, config.n_head, 1, 4 + 3 + 1)
    plain = model.generate(pixel_values=images, input_ids=ids[:, :3], **greedy())
    assert torch.equal(output.sequences, plain)  # with or without the prefix cache


def test_a_left_padded_caption_start_is_read_as_the_unpadded_one(model, images):
    padded = torch.tensor([[98, 8, 9], [5, 6, 7]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    batch = model.generate(pixel_values=images, input_ids=padded, attention_mask=mask, **greedy())
    first = model.generate(pixel_values=images[:1], input_ids=padded[:1, 1:], **greedy())
    second = model.generate(pixel_values=images[1:], input_ids=padded[1:], **greedy())
    assert batch[0, : first.shape[1]].tolist() == first[0].tolist()
    assert batch[1].tolist() == second[0].tolist()


@pytest.mark.parametrize("option", [{"prompt_lookup_num_tokens": 2}, {"assistant_early_exit": 1}, "assistant_model"])
def test_assisted_decoding_is_refused_in_one_line(model, images, option):
    kwargs = {"assistant_model": model} if option == "assistant_model" else option
    with pytest.raises(ValueError, match="does not support assisted decoding"):
        model.generate(pixel_values=images, **greedy(**kwargs))


def test_encoder_features_have_their_own_name(model, images):
    """transformers 5's `get_image_features` returns a `BaseModelOutputWithPooling` of a vision tower; the CNN's raw
    features are `get_encoder_features`, what `forward` takes as `image_features`."""
    assert not hasattr(model, "get_image_features")
    features = model.get_encoder_features(images)
    assert features.shape == (2, model.config.encoder_hidden_size)
    out = model(image_features=features, input_ids=torch.tensor([[1, 2], [3, 4]]))
    assert torch.equal(out.logits, model(pixel_values=images, input_ids=torch.tensor([[1, 2], [3, 4]])).logits)
