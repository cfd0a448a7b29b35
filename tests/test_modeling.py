import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel

from clipcap.pretrained import from_pretrained_parts
from configuration_clipcap import ClipCapConfig
from modeling_clipcap import ClipCapForCaptioning
from tests.conftest import TINY_DECODER, tiny_config, tiny_model

EOS = 50256
ALL_MAPPERS = [("mlp", "pooled"), ("transformer", "pooled"), ("transformer", "grid")]


def caption_batch():
    input_ids = torch.tensor([[64, 2266, 25772, EOS, EOS, EOS], [11545, 284, 7060, 1306, 284, EOS]] * 2)
    attention_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]] * 2)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return input_ids, attention_mask, labels


@pytest.mark.parametrize("mapper_type, features", ALL_MAPPERS)
def test_loss_is_cross_entropy_over_caption_tokens_only(mapper_type, features, pixel_values):
    model = tiny_model(mapper_type=mapper_type, encoder_features=features)
    input_ids, attention_mask, labels = caption_batch()
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (4, 6, 50257)

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
    torch.testing.assert_close(out.logits, full_logits[:, 3:-1])

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


@pytest.mark.parametrize("mapper_type, features", ALL_MAPPERS)
def test_greedy_generate_equals_manual_argmax_loop(mapper_type, features, pixel_values):
    model = tiny_model(mapper_type=mapper_type, encoder_features=features)
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


@pytest.mark.parametrize("mapper_type, features", ALL_MAPPERS)
def test_save_load_round_trip_is_exact(mapper_type, features, pixel_values, tmp_path):
    model = tiny_model(mapper_type=mapper_type, encoder_features=features, freeze_encoder=True)
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


def test_a_local_decoder_directory_brings_its_own_tokenizer(tmp_path):
    """A fine-tuned GPT-2 saved with its tokenizer, which has an added token: the processor uses that tokenizer, not
    the packaged GPT-2 BPE; a directory without tokenizer files gets the GPT-2 BPE; a tokenizer larger than the
    decoder's vocabulary is refused."""
    from processing_clipcap import ClipCapProcessor, gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    tokenizer.add_tokens(["<|appliance|>"])
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(**TINY_DECODER))
    gpt2.resize_token_embeddings(len(tokenizer))
    gpt2.save_pretrained(tmp_path / "tuned")
    tokenizer.save_pretrained(tmp_path / "tuned")
    model = from_pretrained_parts(tiny_config(decoder_name_or_path=str(tmp_path / "tuned")))
    processor = ClipCapProcessor.from_config(model.config)
    assert len(processor.tokenizer) == model.config.text_config.vocab_size == 50258
    assert processor.tokenizer("a <|appliance|>").input_ids == [64, 220, 50257]

    (tmp_path / "bare").mkdir()
    gpt2.save_pretrained(tmp_path / "bare")  # weights only
    bare = from_pretrained_parts(tiny_config(decoder_name_or_path=str(tmp_path / "bare")))
    assert len(ClipCapProcessor.from_config(bare.config).tokenizer) == 50257
    small = tiny_config(text_config={**TINY_DECODER, "vocab_size": 50000})
    with pytest.raises(ValueError, match="the tokenizer has 50258 tokens but the decoder's vocabulary only 50000"):
        ClipCapProcessor.from_config(small, tokenizer=tokenizer)


def test_from_pretrained_parts_fails_offline_with_one_clear_line():
    with pytest.raises(OSError) as error:
        from_pretrained_parts(tiny_config(decoder_name_or_path="distilgpt2"))
    message = str(error.value)
    assert message.startswith("Could not load decoder weights from 'distilgpt2'") and "\n" not in message


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


def test_bf16_autocast_training_step_on_cpu(pixel_values):
    model = tiny_model().train()
    input_ids, attention_mask, labels = caption_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32  # the loss is taken in fp32
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad.dtype == torch.float32 for p in model.decoder.parameters() if p.grad is not None)


def test_freezing_a_random_encoder_warns(local_gpt2, caplog):
    config = tiny_config(decoder_name_or_path=local_gpt2[1], freeze_encoder=True)
    with caplog.at_level("WARNING"):
        from_pretrained_parts(config)
    assert "freezes a random encoder" in caplog.text
