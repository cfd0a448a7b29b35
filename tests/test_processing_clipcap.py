"""processing_clipcap.py (`ClipCapProcessor`): the real GPT-2 tokenizer (or a decoder directory's own), captions
with EOS, padding and labels, truncation to `max_caption_length`, images of any mode as normalised RGB tensors in the
encoder's transform, and a save/load round trip."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel

from clipcap.pretrained import from_pretrained_parts
from configuration_clipcap import ClipCapConfig
from processing_clipcap import ClipCapProcessor, encoder_image_transform, gpt2_tokenizer
from tests.conftest import TINY_DECODER, tiny_config, tiny_model

EOS = 50256


def test_packaged_tokenizer_is_the_real_gpt2():
    tokenizer = gpt2_tokenizer()
    assert len(tokenizer) == 50257
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == tokenizer.bos_token_id == EOS
    # Token ids of GPT-2's published vocabulary.
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.convert_ids_to_tokens([50256, 257, 2266]) == ["<|endoftext|>", "Ġa", "Ġred"]
    assert tokenizer.convert_tokens_to_ids("Ġrefrigerator") != tokenizer.unk_token_id  # a single token in GPT-2
    assert tokenizer.decode([15496, 995]) == "Hello world"


def test_captions_get_eos_padding_and_labels():
    processor = ClipCapProcessor.from_config(tiny_config())
    batch = processor(text=["a red fridge", "two toasters next to a kettle"])
    assert batch["input_ids"].tolist() == [
        [64, 2266, 25772, EOS, EOS, EOS, EOS, EOS],
        [11545, 284, 7060, 1306, 284, 257, 40231, EOS],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8]
    assert batch["labels"].tolist() == [[64, 2266, 25772, EOS, -100, -100, -100, -100], batch["input_ids"][1].tolist()]
    assert processor(text="one caption")["input_ids"].shape == (1, 3)
    assert processor(text=["a b"], return_tensors=None)["labels"] == [[64, 275, EOS]]


def test_long_captions_are_truncated_to_max_caption_length():
    processor = ClipCapProcessor.from_config(tiny_config(), max_caption_length=5)
    batch = processor(text=["one two three four five six seven"])
    assert batch["input_ids"].shape == (1, 5)
    assert batch["input_ids"][0, -1] == EOS


def test_max_caption_length_must_fit_after_the_prefix():
    with pytest.raises(ValueError, match="max_caption_length=61 does not fit the decoder"):
        ClipCapProcessor.from_config(tiny_config(), max_caption_length=61)


def test_images_of_any_mode_become_normalised_rgb_tensors():
    processor = ClipCapProcessor.from_config(tiny_config())
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    images = [rgb, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"), rgb.convert("CMYK")]
    pixel_values = processor(images=images)["pixel_values"]
    assert pixel_values.shape == (5, 3, 64, 64) and pixel_values.dtype == torch.float32
    # A white image maps to (1 - mean) / std per channel, with the encoder's ImageNet statistics.
    white = processor(images=Image.new("RGB", (70, 70), "white"))["pixel_values"][0]
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(white.mean(dim=(1, 2)), expected)


def test_image_transform_follows_the_encoder_weights():
    mobilenet = encoder_image_transform("mobilenet_v2", 224)
    assert mobilenet["size"] == {"shortest_edge": 232}  # torchvision IMAGENET1K_V2: resize 232, crop 224
    assert mobilenet["crop_size"] == {"height": 224, "width": 224}
    timm_net = encoder_image_transform("timm/mobilenetv2_100", 224)
    assert timm_net["size"] == {"shortest_edge": 256}  # timm crop_pct 0.875


def test_round_trip_and_batch_decode(tmp_path):
    config = tiny_config()
    processor = ClipCapProcessor.from_config(config, max_caption_length=20)
    processor.save_pretrained(tmp_path)
    loaded = ClipCapProcessor.from_pretrained(tmp_path)
    assert loaded.max_caption_length == 20
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (80, 100, 3), dtype=np.uint8))
    original, reloaded = processor(images=image, text="a kettle"), loaded(images=image, text="a kettle")
    for key in ("pixel_values", "input_ids", "attention_mask", "labels"):
        assert torch.equal(original[key], reloaded[key]), key
    assert loaded.batch_decode([[64, 40231, EOS, EOS], [15496, 995, EOS, EOS]]) == ["a kettle", "Hello world"]


def test_processor_output_feeds_the_model():
    model = tiny_model()
    processor = ClipCapProcessor.from_config(model.config)
    image = Image.new("RGB", (64, 64), "red")
    out = model(**processor(images=[image, image], text=["a red oven", "a toaster"]))
    assert out.loss is not None and torch.isfinite(out.loss)
    captions = processor.batch_decode(model.generate(processor(images=[image])["pixel_values"], max_new_tokens=5))
    assert len(captions) == 1 and isinstance(captions[0], str)


def test_needs_images_or_text():
    with pytest.raises(ValueError, match="needs `images`, `text`, or both"):
        ClipCapProcessor.from_config(ClipCapConfig(decoder_name_or_path=None))()


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
