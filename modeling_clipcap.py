# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""ClipCap captioning model: image encoder -> prefix mapper -> GPT-2 decoder.

Ideas from ClipCap (Mokady et al. 2021): an image feature becomes a prefix of `prefix_length` decoder embeddings,
through an MLP or a small transformer with learned queries. Departures from the reference implementation:
  * the image encoder is a small torchvision/timm backbone; CLIP is only a teacher during training, reached through
    the `z` embedding this model computes (a head into the teacher's space);
  * captions end with EOS, which is a trained target, and padding/prefix positions are ignored with label -100
    (ClipCap padded with token 0 and masked only in attention);
  * generation is transformers' `GenerationMixin.generate` fed with the prefix as `inputs_embeds` (beam search with a
    KV cache), instead of ClipCap's hand-written, cache-less `generate_beam`; the prefix goes through the decoder once
    per image rather than once per beam (`_prefix_cache`), the LM head runs on the last position only
    (`logits_to_keep`), and n-gram blocking is one batched tensor operation per step (`NoRepeatNGramBlocker`);
  * a frozen encoder's features can be computed once and passed as `image_features` (see
    `clipcap.encoder_cache.add_encoder_features`), so training skips the encoder and the image decoding altogether.
Speed figures and what each change bought: docs/benchmarks.md. As in ClipCap, the prefix's last position predicts the
first caption token and `logits` cover the prefix and the caption (GIT and BLIP-2 return theirs so too).

This file holds modules only: every part is built from random weights, and a saved model loads with `from_pretrained`
from its own files. Where pretrained weights come from (downloads, packaged ImageNet weights, a model assembled from
pretrained parts) is `clipcap.pretrained`, which a saved model never needs.
"""

import copy
import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Cache,
    DynamicCache,
    GenerationConfig,
    GenerationMixin,
    GPT2LMHeadModel,
    LogitsProcessor,
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

try:  # imported as a module of a Hub repo (trust_remote_code) ...
    from .configuration_clipcap import ClipCapConfig, resolve_encoder_library
    from .pipeline_clipcap import ClipCapCaptioningPipeline
except ImportError:  # ... or as a top-level module of this project
    from configuration_clipcap import ClipCapConfig, resolve_encoder_library
    from pipeline_clipcap import ClipCapCaptioningPipeline

# The Auto classes that serve a saved model, and the pipeline its config names (its file travels with this one).
AUTO_CLASSES = ("AutoModel", "AutoModelForImageTextToText")
PIPELINE_TASK = "image-text-to-text"


def _strip_last_linear(model: nn.Module) -> int:
    """Replace a classifier's final `nn.Linear` with `nn.Identity`; return its input size (the pooled feature size)."""
    name, last = None, None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name, last = module_name, module
    if last is None:
        raise ValueError(f"{type(model).__name__} has no final nn.Linear classifier to remove.")
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child_name, nn.Identity())
    return last.in_features


def build_backbone(config: ClipCapConfig) -> nn.Module:
    """The image backbone named by `config.encoder_name` (a torchvision classifier, or a timm model without its
    classifier), with the library's own random initialisation. Pretrained weights are loaded by
    `clipcap.pretrained.from_pretrained_parts`, or come with a saved model."""
    library, name = resolve_encoder_library(config.encoder_name)
    if library == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=0)


def encoder_stages(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone's stages from the input on, as `encoder_frozen_stages` counts them: for timm's EfficientNet and
    MobileNet family the stem, then each stage of `blocks`; for a torchvision trunk each module of `features`."""
    if hasattr(backbone, "conv_stem") and isinstance(getattr(backbone, "blocks", None), nn.Sequential):
        return [[backbone.conv_stem, backbone.bn1], *[[stage] for stage in backbone.blocks]]
    features = getattr(backbone, "features", backbone)
    if isinstance(features, nn.Sequential):
        return [[module] for module in features]
    raise ValueError(f"{type(backbone).__name__} has no stages that encoder_frozen_stages can count")


class ImageEncoder(nn.Module):
    """A classification backbone without its classifier.

    Returns `(batch, hidden)` pooled features, or `(batch, tokens, hidden)` for `encoder_features="grid"` (the last
    feature map, flattened over space). A frozen encoder gets no gradients and keeps its BatchNorm statistics in eval
    mode whatever mode the model is put in.
    """

    def __init__(self, config: ClipCapConfig, backbone: nn.Module | None = None):
        super().__init__()
        if backbone is None:
            backbone = build_backbone(config)
        else:  # weights from elsewhere (ImageNet): `post_init` and `init_weights` leave them as they are
            for tensor in (*backbone.parameters(), *backbone.buffers()):
                tensor._is_hf_initialized = True
        library, _ = resolve_encoder_library(config.encoder_name)
        self.library, self.features = library, config.encoder_features
        if library == "timm":
            self.backbone = backbone
            # timm: `num_features` is the width of forward_features; the pooled output may pass a wider head conv.
            pooled_size = getattr(backbone, "head_hidden_size", None) or backbone.num_features
            hidden_size = pooled_size if self.features == "pooled" else backbone.num_features
        elif self.features == "pooled":
            self.backbone = backbone
            hidden_size = _strip_last_linear(backbone)
        elif hasattr(backbone, "features"):  # mobilenet, efficientnet, convnext, vgg, ...: a convolutional trunk
            self.backbone = backbone.features
            hidden_size = probed(
                ("channels", config.encoder_name), lambda: self.backbone(torch.zeros(1, 3, 64, 64)).shape[1]
            )
        else:
            raise ValueError(
                f"encoder_features='grid' needs a torchvision model with a `.features` trunk; {config.encoder_name!r} "
                "has none. Use a timm model name, or encoder_features='pooled'."
            )
        if config.encoder_hidden_size is None:
            config.encoder_hidden_size = hidden_size
        elif config.encoder_hidden_size != hidden_size:
            raise ValueError(
                f"encoder_hidden_size={config.encoder_hidden_size} does not match {config.encoder_name!r}, "
                f"whose features have {hidden_size} channels."
            )
        self.frozen = config.freeze_encoder
        self.num_frozen_stages = config.encoder_frozen_stages
        if self.num_frozen_stages:
            encoder_stages(self.backbone)  # a backbone without countable stages is an error now, not at training
        self.apply_freezing()

    def _frozen_stages(self) -> list[nn.Module]:
        if not self.num_frozen_stages:
            return []
        return [module for stage in encoder_stages(self.backbone)[: self.num_frozen_stages] for module in stage]

    def apply_freezing(self):
        """Set `requires_grad` from the config's `freeze_encoder` and `encoder_frozen_stages` (loading resets it)."""
        self.backbone.requires_grad_(not self.frozen)
        for module in self._frozen_stages():
            module.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode and not self.frozen)
        for module in self._frozen_stages():  # frozen stages keep their ImageNet BatchNorm statistics
            module.eval()
        return self

    def frozen_stage_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The output of the frozen first `encoder_frozen_stages` stages: what `forward(frozen_stage_features=...)`
        continues from, and what `clipcap.encoder_cache` computes once per training image."""
        features = pixel_values.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            for module in self._frozen_stages():
                features = module(features)
        return features

    def _from_frozen_stages(self, features: torch.Tensor) -> torch.Tensor:
        """Run the trainable rest of the backbone on `frozen_stage_features`."""
        features = features.contiguous(memory_format=torch.channels_last)
        for stage in encoder_stages(self.backbone)[self.num_frozen_stages :]:
            for module in stage:
                features = module(features)
        if self.library == "timm":
            features = self.backbone.bn2(self.backbone.conv_head(features))
            if self.features == "pooled":
                return self.backbone.forward_head(features)
        elif self.features == "pooled":
            raise ValueError("frozen_stage_features: torchvision backbones continue from them with grid features only")
        return features

    def forward(self, pixel_values: torch.Tensor | None = None, frozen_stage_features: torch.Tensor | None = None):
        if frozen_stage_features is not None:
            features = self._from_frozen_stages(frozen_stage_features)
            if features.ndim == 4:
                features = features.flatten(2).transpose(1, 2)
            return features.contiguous()
        # oneDNN (CPU) and cuDNN run convolutions fastest on NHWC tensors; the result is the same up to rounding.
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        if self.library == "timm":
            if self.features == "pooled":
                return self.backbone(pixel_values)
            features = self.backbone.forward_features(pixel_values)
        else:
            features = self.backbone(pixel_values)
        if features.ndim == 4:  # (batch, channels, height, width) -> (batch, height * width, channels)
            features = features.flatten(2).transpose(1, 2)
        return features.contiguous()


# Shapes an encoder's architecture fixes, measured by a forward pass once per process: `from_pretrained` builds the
# model on the meta device, where such a probe costs about half a second for MobileNetV2.
_PROBED: dict[tuple, int] = {}


def probed(key: tuple, measure) -> int:
    if key not in _PROBED:
        with torch.no_grad():
            _PROBED[key] = measure()
    return _PROBED[key]


def grid_tokens(encoder: ImageEncoder, config: ClipCapConfig) -> int:
    """How many feature-grid tokens `encoder` makes of a `config.image_size` image."""

    def measure():
        was_training = encoder.training
        encoder.eval()
        tokens = encoder(torch.zeros(1, 3, config.image_size, config.image_size)).shape[1]
        encoder.train(was_training)
        return tokens

    return probed(("tokens", config.encoder_name, config.image_size), measure)


class ImagePrefixMapper(nn.Module):
    """Maps image features to `prefix_length` decoder embeddings (ClipCap's two mappers).

    * `mlp`: pooled feature -> Linear -> Tanh -> Linear -> `(prefix_length, n_embd)`.
    * `transformer`: the image tokens (the grid, or the pooled feature projected to `prefix_length` tokens as in
      ClipCap) are concatenated with `prefix_length` learned queries, a transformer encoder mixes them, and the
      outputs at the query positions are the prefix. With `mapper_prefix="grid"` there are no queries: the outputs
      at the grid tokens are the prefix, one per place in the image, and each grid token gets its row's and
      column's fixed sine-cosine position (`sincos_2d`) on top of its learned one.
    """

    def __init__(self, config: ClipCapConfig, num_image_tokens: int | None = None):
        super().__init__()
        self.mapper_type, self.prefix_length = config.mapper_type, config.prefix_length
        hidden, n_embd = config.encoder_hidden_size, config.text_config.n_embd
        self.n_embd = n_embd
        if self.mapper_type == "mlp":
            self.mlp = nn.Sequential(
                nn.Linear(hidden, config.mapper_hidden_size),
                nn.Tanh(),
                nn.Dropout(config.mapper_dropout),
                nn.Linear(config.mapper_hidden_size, config.prefix_length * n_embd),
            )
            return
        self.pooled = config.encoder_features == "pooled"
        self.grid_prefix = config.mapper_prefix == "grid"
        if self.grid_prefix and num_image_tokens != config.prefix_length:
            raise ValueError(
                f"mapper_prefix='grid' makes the {num_image_tokens} grid tokens the prefix: set prefix_length="
                f"{num_image_tokens} (it is {config.prefix_length})"
            )
        out_tokens = config.prefix_length if self.pooled else 1
        self.input_projection = nn.Linear(hidden, out_tokens * n_embd)
        if not self.grid_prefix:
            self.queries = nn.Parameter(torch.zeros(config.prefix_length, n_embd))
        self.image_position = nn.Parameter(torch.zeros(num_image_tokens or config.prefix_length, n_embd))
        layer = nn.TransformerEncoderLayer(
            n_embd,
            config.mapper_num_heads,
            dim_feedforward=4 * n_embd,
            dropout=config.mapper_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, config.mapper_num_layers, enable_nested_tensor=False)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        batch = image_features.shape[0]
        if self.mapper_type == "mlp":
            return self.mlp(image_features).view(batch, self.prefix_length, self.n_embd)
        tokens = self.input_projection(image_features)
        if self.pooled:
            tokens = tokens.view(batch, self.prefix_length, self.n_embd)
        tokens = tokens + self.image_position
        if self.grid_prefix:
            side = math.isqrt(tokens.shape[1])
            return self.transformer(tokens + sincos_2d(side, side, self.n_embd).to(tokens))
        queries = self.queries.expand(batch, -1, -1)
        return self.transformer(torch.cat([tokens, queries], dim=1))[:, -self.prefix_length :]


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D positions of a `height x width` grid in row-major order, `(height * width, dim)`: the first half of
    each vector the sine-cosine code of the row, the second half that of the column (MAE, He et al. 2022; the
    Transformer's frequencies, Vaswani et al. 2017)."""
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))

    def code(positions: int) -> torch.Tensor:
        angles = torch.arange(positions, dtype=torch.float32)[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (positions, 2 * quarter)

    rows = code(height)[:, None].expand(height, width, -1)
    columns = code(width)[None].expand(height, width, -1)
    grid = torch.cat([rows, columns], dim=-1).reshape(height * width, 4 * quarter)
    return nn.functional.pad(grid, (0, dim - 4 * quarter))


class TeacherHead(nn.Module):
    """Projects the mean prefix embedding into the CLIP teacher's space; returns an L2-normalised `z`."""

    def __init__(self, config: ClipCapConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.text_config.n_embd)
        self.projection = nn.Linear(config.text_config.n_embd, config.teacher_embed_dim)

    def forward(self, prefix_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.norm(prefix_embeds.mean(dim=1))), dim=-1)


class NoRepeatNGramBlocker(LogitsProcessor):
    """Forbid every token that would repeat an n-gram of size `ngram_size` already in the hypothesis.

    The rule of transformers' `NoRepeatNGramLogitsProcessor` (and fairseq's), computed for all hypotheses at once: the
    last `ngram_size - 1` tokens are compared with every earlier window, and the tokens that followed a matching window
    get -inf, in place. transformers' version walks the hypotheses in Python and rebuilds each one's n-gram table at
    every step: at beam 5 x 32 images, about a tenth of the whole generation on 2 CPU cores (docs/benchmarks.md).
    """

    def __init__(self, ngram_size: int):
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(f"ngram_size={ngram_size!r} must be a positive integer")
        self.ngram_size = ngram_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = self.ngram_size
        if input_ids.shape[1] < n:
            return scores
        windows = input_ids.unfold(1, n, 1)  # (hypotheses, windows, n): every n-gram so far
        tail = input_ids[:, input_ids.shape[1] - n + 1 :]  # the n - 1 tokens a new n-gram would start with
        matches = (windows[:, :, :-1] == tail[:, None, :]).all(dim=-1)
        rows, starts = matches.nonzero(as_tuple=True)
        scores[rows, windows[rows, starts, -1]] = -float("inf")
        return scores


@dataclass
class ClipCapOutput(ModelOutput):
    """
    Output of [`ClipCapForCaptioning`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` is given):
            Cross-entropy over the caption tokens (labels -100 ignored); the image prefix predicts the first one.
        logits (`torch.FloatTensor` of shape `(batch, prefix_length + caption_length, vocab_size)`):
            Next-token scores at every position the decoder read, the prefix's included, as GIT and BLIP-2 return
            them: `logits[:, -1]` scores the token after the caption, and `logits[:, prefix_length - 1 : -1]` are
            aligned with `labels`. With `logits_to_keep=k`, only the last `k` positions.
        cache (`Cache`, *optional*, returned when `use_cache=True`):
            The decoder's key/value cache over the prefix and the caption: a forward pass without images continues
            from it.
        hidden_states, attentions: the decoder's, over the prefix and the caption, when asked for.
        z (`torch.FloatTensor` of shape `(batch, teacher_embed_dim)`, *optional*):
            The L2-normalised student image embedding in the teacher's space, for the CLIP losses.
        prefix_embeds (`torch.FloatTensor` of shape `(batch, prefix_length, n_embd)`):
            The image prefix fed to the decoder, one row per image (with `captions_per_image`, each row is read by
            that many captions).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    z: torch.FloatTensor | None = None
    prefix_embeds: torch.FloatTensor | None = None


PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# The Trainer's own state in a checkpoint (loaded by it with `weights_only=True`), not model weights.
TRAINER_STATE_FILES = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")


def pickle_only_weights(path) -> list[str]:
    """The pickled weight files of a local model directory that has no safetensors file ([] otherwise: a Hub name,
    or `None` when the weights come as a `state_dict`)."""
    if path is None or not os.path.isdir(path) or any(name.endswith(".safetensors") for name in os.listdir(path)):
        return []
    return sorted(
        name
        for name in os.listdir(path)
        if name.endswith(PICKLE_WEIGHT_SUFFIXES) and not name.startswith(TRAINER_STATE_FILES)
    )


class ClipCapPreTrainedModel(PreTrainedModel):
    config_class = ClipCapConfig
    config: ClipCapConfig
    base_model_prefix = "clipcap"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT2Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, allow_pickle: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`, from safetensors only unless `allow_pickle=True`.

        A pickled weight file (`pytorch_model.bin`) can run code when it is loaded, and torch's `weights_only` guard
        has had escapes, so a model saved only that way is refused with one clear error. With `allow_pickle=True`
        transformers' own choice applies (safetensors when there are any, else the pickle, loaded `weights_only`).
        """
        if not allow_pickle:
            kwargs.setdefault("use_safetensors", True)
            if kwargs["use_safetensors"] and (pickles := pickle_only_weights(pretrained_model_name_or_path)):
                raise OSError(
                    f"{pretrained_model_name_or_path} has its weights only as a pickle ({', '.join(pickles)}), which "
                    "can run code when loaded; convert it to safetensors, or if you trust the file pass "
                    "allow_pickle=True (--allow_pickle)"
                )
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.encoder.apply_freezing()  # loading materialises fresh parameters, all trainable
        return loaded

    @torch.no_grad()
    def initialize_weights(self):
        """`PreTrainedModel.initialize_weights`: every module, children first, by the `_initialize_weights` of the
        model it belongs to (the decoder's modules by GPT-2's), with one fresh backbone shared by the pass
        (`_fresh_backbone_state`).

        transformers treats a model defined outside it as remote code that may not check `_is_hf_initialized`, and
        then skips every module whose own parameters are all loaded, which also skips the modules that own none:
        GPT-2's attention and MLP, whose `c_proj` its `_init_weights` scales by depth, so a checkpoint that lacks
        them would get unscaled ones. Every initialiser here checks the mark itself, so that shortcut is off."""

        def apply(module: nn.Module, initialize):
            for child in module.children():
                apply(child, child._initialize_weights if isinstance(child, PreTrainedModel) else initialize)
            initialize(module, is_custom_code=False)

        self.__dict__["_init_pass"] = {}
        try:
            apply(self, self._initialize_weights)
        finally:
            self.__dict__.pop("_init_pass", None)

    def _init_pass_cached(self, key: str, make):
        """`make()`, computed once per `initialize_weights` pass (every call outside one)."""
        cache = self.__dict__.get("_init_pass")
        if cache is None:
            return make()
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def _backbone_module_names(self) -> dict[int, str]:
        """This model's backbone modules: their names in its state, by `id`."""
        return self._init_pass_cached(
            "names", lambda: {id(module): name for name, module in self.encoder.backbone.named_modules()}
        )

    def _fresh_backbone_state(self) -> dict[str, torch.Tensor]:
        """The state of a freshly built backbone: torchvision and timm initialise in their constructors, each model
        its own way, so a fresh backbone *is* their initialisation."""
        return self._init_pass_cached("fresh", lambda: ImageEncoder(copy.deepcopy(self.config)).backbone.state_dict())

    @torch.no_grad()
    def _init_weights(self, module):
        """GPT-2's scheme (normal 0.02, zero biases, unit LayerNorms) for the mapper and the teacher head, torch's
        (Xavier) for the mapper's attention input projections, the backbone as its library (torchvision or timm)
        initialises it, buffers included; the decoder is initialised by its own `_init_weights`.

        Called module by module, for a new model (`post_init`) and, after `from_pretrained` built the model on the
        meta device and loaded a checkpoint, for what the checkpoint lacked: `transformers.initialization` sets only
        tensors not yet marked `_is_hf_initialized` (loaded ones, or pretrained weights given to the constructor)."""
        std = self.config.text_config.initializer_range
        if (prefix := self._backbone_module_names().get(id(module))) is not None:
            own = (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
            if all(getattr(tensor, "_is_hf_initialized", False) for _, tensor in own):
                return  # nothing to set (a container, an activation, or loaded)
            fresh = self._fresh_backbone_state()
            for name, tensor in own:
                init.copy_(tensor, fresh[f"{prefix}.{name}" if prefix else name])
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):  # its input projection is a bare parameter
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, ImagePrefixMapper):  # the transformer mapper's queries and positions
            for param in module.parameters(recurse=False):
                init.normal_(param, std=std)


class ClipCapGenerationMixin(GenerationMixin):
    """What generating after an image prefix changes in `GenerationMixin`, for `ClipCapForCaptioning` and for any
    runtime of its exported graphs (`clipcap.onnx_runtime`): a prefix cache computed once per image (marked
    `per_image_prefix`) is widened to the beams rather than computed per beam, and n-gram blocking is
    `NoRepeatNGramBlocker`."""

    def _expand_inputs_for_generation(self, expand_size: int = 1, *args, **model_kwargs):
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, *args, **model_kwargs)
        cache = model_kwargs.get("cache")
        if expand_size > 1 and getattr(cache, "per_image_prefix", False):
            cache.batch_repeat_interleave(expand_size)
        return input_ids, model_kwargs

    def _get_logits_processor(self, *args, **kwargs) -> LogitsProcessorList:
        """transformers' logits processors, with its n-gram blocking replaced by `NoRepeatNGramBlocker` (the same
        rule, batched) at the same place in the list, so the order of the processors is unchanged."""
        processors = super()._get_logits_processor(*args, **kwargs)
        return LogitsProcessorList(
            NoRepeatNGramBlocker(p.ngram_size) if type(p) is NoRepeatNGramLogitsProcessor else p for p in processors
        )


class ClipCapForCaptioning(ClipCapPreTrainedModel, ClipCapGenerationMixin):
    """ClipCap captioner. `forward` trains it; `generate(pixel_values, **generation_kwargs)` writes captions."""

    def __init__(self, config: ClipCapConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.encoder = ImageEncoder(config, backbone)
        num_image_tokens = grid_tokens(self.encoder, config) if config.encoder_features == "grid" else None
        self.mapper = ImagePrefixMapper(config, num_image_tokens)
        self.decoder = GPT2LMHeadModel(config.text_config)
        self.teacher_head = TeacherHead(config) if config.teacher_embed_dim else None
        self.generation_config = GenerationConfig(
            max_new_tokens=30,
            num_beams=5,
            no_repeat_ngram_size=3,
            bos_token_id=config.text_config.bos_token_id,
            eos_token_id=config.text_config.eos_token_id,
            pad_token_id=config.text_config.eos_token_id,
        )
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with the config's `auto_map` naming every Auto class that serves the
        model (`AUTO_CLASSES`) and `custom_pipelines` naming its `image-text-to-text` pipeline, so that
        `pipeline("image-text-to-text", model=DIR, trust_remote_code=True)` works from the saved files alone."""
        name = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **dict.fromkeys(AUTO_CLASSES, name)}
        pipeline_class = ClipCapCaptioningPipeline
        self.config.custom_pipelines = {
            PIPELINE_TASK: {
                "impl": f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}",
                "pt": ["AutoModelForImageTextToText"],
                "type": "multimodal",
            }
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.decoder.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.decoder.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module):
        self.decoder.set_output_embeddings(value)

    def get_encoder_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image batch `(batch, 3, H, W)` -> the CNN encoder's features `(batch, hidden)` (or `(batch, tokens,
        hidden)` for the grid): what `forward` accepts as `image_features` in place of the images when the encoder is
        frozen. (Not transformers' `get_image_features`, which returns a `BaseModelOutputWithPooling` of a vision
        tower: this encoder has no hidden states or attentions to return.)"""
        if not torch.is_tensor(pixel_values) or pixel_values.ndim != 4 or not pixel_values.is_floating_point():
            shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise ValueError(
                f"pixel_values must be a float tensor of shape (batch, 3, height, width), not {shape}"
                + (f" of {pixel_values.dtype}" if torch.is_tensor(pixel_values) else "")
                + "; token ids go in input_ids="
            )
        return self.encoder(pixel_values.to(self.dtype))

    def get_prefix_embeds(
        self,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        frozen_stage_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images `(batch, 3, H, W)`, their precomputed `image_features`, or the output of the encoder's frozen
        stages (`frozen_stage_features`) -> decoder prefix `(batch, prefix_length, n_embd)`."""
        if image_features is None and frozen_stage_features is not None:
            image_features = self.encoder(frozen_stage_features=frozen_stage_features.to(self.dtype))
        elif image_features is None:
            image_features = self.get_encoder_features(pixel_values)
        return self.mapper(image_features.to(self.dtype))

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # transformers' old name, as GPT-2's
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        image_features: torch.FloatTensor | None = None,
        frozen_stage_features: torch.FloatTensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        captions_per_image: int = 1,
        return_logits: bool = True,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> ClipCapOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, H, W)`):
                Images from [`ClipCapProcessor`]. They become the prefix the decoder reads before the caption.
                Without them (and without `image_features`) the call is a plain decoder step over `input_ids` or
                `inputs_embeds`, continuing `cache` if given: how `generate` continues a caption.
            input_ids (`torch.LongTensor` of shape `(batch, caption_length)`):
                Caption tokens, EOS included, right-padded.
            attention_mask (`torch.Tensor` of shape `(batch, caption_length)`):
                1 for caption tokens, 0 for padding. The prefix is always attended to. Without images: the mask of
                the whole sequence so far (cache included), as for GPT-2.
            labels (`torch.LongTensor` of shape `(batch, caption_length)`):
                Targets aligned with `input_ids` (usually `input_ids` with padding set to -100); the model shifts
                them: the prefix's last position predicts `labels[:, 0]`, caption position `j` predicts
                `labels[:, j + 1]`. Without images, as for GPT-2: `labels[:, 0]` has no position before it.
            inputs_embeds (`torch.FloatTensor` of shape `(batch, caption_length, n_embd)`, *optional*):
                The caption's token embeddings in place of `input_ids` (one of the two).
            cache (`Cache`, *optional*; `past_key_values`, its old name, is accepted):
                A cache returned with `use_cache=True`; only a call without images continues one.
            use_cache (`bool`, *optional*):
                Return the decoder's cache in `cache`. Defaults to the decoder config's `use_cache`
                outside training, `False` in training.
            image_features (`torch.FloatTensor` of shape `(batch, hidden)` or `(batch, tokens, hidden)`, *optional*):
                The encoder's output for the images (`get_encoder_features`), instead of `pixel_values`: a frozen
                encoder's features are computed once for the whole dataset and the encoder is skipped.
            frozen_stage_features (`torch.FloatTensor` of shape `(batch, channels, h, w)`, *optional*):
                The output of the encoder's frozen first stages (`encoder.frozen_stage_features`), instead of
                `pixel_values`: computed once per image, and a step runs only the trainable stages.
            num_items_in_batch (`int`, *optional*):
                Number of target tokens in the whole (accumulated) batch; the loss is then summed over this batch and
                divided by it, as the `Trainer` does for exact gradient accumulation.
            captions_per_image (`int`, *optional*, defaults to 1):
                `input_ids` holds this many captions of each image, image by image (`batch * captions_per_image`
                rows): each image's prefix is computed once and read by all of its captions (self-critical training
                scores several sampled captions per image). `z` stays one row per image.
            return_logits (`bool`, *optional*, defaults to `True`):
                With `labels` and `return_logits=False` the LM head runs only on the positions that have a target
                (not on padding or the prefix), which is cheaper with GPT-2's 50k-token vocabulary, and `logits` is
                `None`.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Score only the last `logits_to_keep` positions (0: all), or the positions a 1-D tensor lists, as in
                transformers' causal LMs: `generate` asks for 1; `caption_length + 1` gives the label-aligned
                scores and the next token's without scoring the prefix.
        """
        if use_cache is None:
            use_cache = self.config.text_config.use_cache and not self.training
        if pixel_values is None and image_features is None and frozen_stage_features is None:
            return self._decoder_step(
                input_ids, attention_mask, inputs_embeds, labels, cache, use_cache, logits_to_keep, **kwargs
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "forward takes the caption as exactly one of `input_ids` or `inputs_embeds` next to the images; "
                "to caption images, use generate()"
            )
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError(
                "the cache already holds a prefix: continue a cached caption without pixel_values or "
                "image_features (only the new tokens)"
            )
        image_prefix_embeds = self.get_prefix_embeds(pixel_values, image_features, frozen_stage_features)
        if inputs_embeds is None:
            inputs_embeds = self.decoder.get_input_embeddings()(input_ids)
        outputs = self._decode_captions(
            image_prefix_embeds,
            inputs_embeds,
            attention_mask,
            captions_per_image,
            cache,
            use_cache,
            **kwargs,
        )
        logits, loss = self._logits_and_loss(
            outputs.last_hidden_state, labels, return_logits, logits_to_keep, num_items_in_batch
        )
        z = self.teacher_head(image_prefix_embeds) if self.teacher_head is not None else None
        return ClipCapOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            z=z,
            prefix_embeds=image_prefix_embeds,
        )

    def _decoder_step(
        self, input_ids, attention_mask, inputs_embeds, labels, cache, use_cache, logits_to_keep, **kwargs
    ) -> ClipCapOutput:
        """The decoder alone: a step of `GenerationMixin.generate` (the prefix arrives as `inputs_embeds`, then the
        tokens with a cache), or a continuation of a cache a forward pass with images returned."""
        if input_ids is not None and inputs_embeds is None and attention_mask is None:
            # generate() drops an all-ones mask; GPT-2 would then warn about padding when a finished caption's
            # EOS (its pad token) comes in. Embedding the tokens here is the same computation without the warning.
            input_ids, inputs_embeds = None, self.decoder.get_input_embeddings()(input_ids)
        outputs = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            return_dict=True,
            **kwargs,
        )
        return ClipCapOutput(
            loss=outputs.loss,
            logits=outputs.logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _decode_captions(
        self,
        image_prefix_embeds,
        caption_embeds,
        attention_mask,
        captions_per_image: int,
        cache,
        use_cache,
        **kwargs,
    ):
        """The decoder's transformer over `[prefix, caption]` for every caption."""
        if caption_embeds.shape[0] != image_prefix_embeds.shape[0] * captions_per_image:
            raise ValueError(
                f"{caption_embeds.shape[0]} captions for {image_prefix_embeds.shape[0]} images: captions_per_image="
                f"{captions_per_image} needs {image_prefix_embeds.shape[0] * captions_per_image}"
            )
        prefix_embeds = image_prefix_embeds.repeat_interleave(captions_per_image, dim=0)
        batch, prefix_length = caption_embeds.shape[0], prefix_embeds.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones(caption_embeds.shape[:2], dtype=torch.long, device=caption_embeds.device)
        prefix_mask = attention_mask.new_ones(batch, prefix_length)
        return self.decoder.transformer(
            inputs_embeds=torch.cat([prefix_embeds, caption_embeds.to(prefix_embeds.dtype)], dim=1),
            attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )

    def _logits_and_loss(self, hidden, labels, return_logits: bool, logits_to_keep, num_items_in_batch):
        """The LM head on the kept positions (only on those with a target when `return_logits=False`), and the
        cross-entropy against `labels` (summed and divided by `num_items_in_batch` when given).

        The hidden state at position p predicts token p + 1: the last prefix position predicts the first caption
        token, and the last caption position predicts the token after the caption, which no label covers."""
        caption_length = labels.shape[1] if labels is not None else None
        logits = None
        if labels is None or return_logits:
            kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.decoder.lm_head(hidden[:, kept])
        if labels is None:
            return logits, None
        scoring = hidden[:, -caption_length - 1 : -1]  # the positions that predict the labels
        if not return_logits:
            targets = labels != -100
            scored_logits, scored_labels = self.decoder.lm_head(scoring[targets]), labels[targets]
        else:
            covered = isinstance(logits_to_keep, int) and (logits_to_keep == 0 or logits_to_keep > caption_length)
            caption_logits = logits[:, -caption_length - 1 : -1] if covered else self.decoder.lm_head(scoring)
            scored_logits, scored_labels = caption_logits.flatten(0, 1), labels.flatten()
        if num_items_in_batch is None:
            return logits, F.cross_entropy(scored_logits.float(), scored_labels, ignore_index=-100)
        loss = F.cross_entropy(scored_logits.float(), scored_labels, ignore_index=-100, reduction="sum")
        return logits, loss / torch.as_tensor(num_items_in_batch, device=scored_logits.device)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_features: torch.FloatTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ):
        """Caption images (or their precomputed `image_features`): the prefix goes to `GenerationMixin.generate` as
        `inputs_embeds`, as BLIP-2 hands its query tokens to its language model.

        Every generation option of `GenerationMixin` that needs no second model works (greedy, `num_beams`,
        `do_sample`, `num_return_sequences`, `no_repeat_ngram_size`, dict outputs with scores, attentions and hidden
        states, a `GenerationConfig`, ...); defaults come from `model.generation_config`. Returns the generated tokens
        (or a `GenerateOutput` with `return_dict_in_generate=True`). Assisted decoding is refused: a draft model, or
        prompt lookup, would have to see the image prefix.

        `input_ids` (with its `attention_mask`, padded on either side), as `ClipCapProcessor(images=..., text=...)`
        encodes them, are the start of each caption: the caption continues them, and the returned sequences begin
        with them, as BLIP's conditional captioning does ("a photo of" -> "a photo of a red fridge"). The EOS the
        processor appends to each text is dropped first (BLIP's `generate` drops its trailing [SEP] alike); an empty
        text leaves only the image. Rows whose texts have different lengths are captioned in one `generate` call per
        length. `inputs_embeds` `(batch, length, n_embd)` are such a start given as embeddings, one length for all
        rows; the sequences then hold the new tokens only (as transformers returns them for `inputs_embeds`).

        Without images the call is `GenerationMixin.generate` on the decoder alone (text continuation).
        """
        config = kwargs.get("generation_config") or self.generation_config
        assistant = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")
        if any(kwargs.get(key) is not None or getattr(config, key, None) is not None for key in assistant):
            raise ValueError(
                "ClipCap does not support assisted decoding (assistant_model, prompt_lookup_num_tokens, "
                "assistant_early_exit): the candidates would be drafted without the image prefix"
            )
        if pixel_values is None and image_features is None:
            return super().generate(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        kwargs.pop("labels", None)  # what the processor adds for training: `generate(**processor(...))` ignores it
        prefix_embeds = self.get_prefix_embeds(pixel_values, image_features)
        if inputs_embeds is not None:
            if input_ids is not None or (attention_mask is not None and not bool(attention_mask.all())):
                raise ValueError(
                    "generate takes a caption start as input_ids (with any padding) or as unpadded inputs_embeds, "
                    "not both"
                )
            if inputs_embeds.shape[0] != prefix_embeds.shape[0]:
                raise ValueError(f"{inputs_embeds.shape[0]} starts for {prefix_embeds.shape[0]} images")
            embeds = torch.cat([prefix_embeds, inputs_embeds.to(prefix_embeds.dtype)], dim=1)
            return self._generate_from_prefix(embeds, **kwargs)
        if input_ids is None:
            return self._generate_from_prefix(prefix_embeds, **kwargs)
        prompts = self._caption_starts(input_ids, attention_mask)
        if len(prompts) != len(prefix_embeds):
            raise ValueError(f"{len(prompts)} texts for {len(prefix_embeds)} images: give one text per image")
        by_length: dict[int, list[int]] = {}
        for row, prompt in enumerate(prompts):
            by_length.setdefault(len(prompt), []).append(row)
        if len(by_length) > 1 and kwargs.get("return_dict_in_generate", config.return_dict_in_generate):
            raise ValueError(
                "return_dict_in_generate=True needs texts of one length in the batch: caption the others separately"
            )
        copies = kwargs.get("num_return_sequences", config.num_return_sequences) or 1
        sequences: dict[int, torch.Tensor] = {}
        for length, rows in by_length.items():
            starts = torch.stack([prompts[row] for row in rows]) if length else input_ids.new_zeros(len(rows), 0)
            embeds = torch.cat([prefix_embeds[rows], self.decoder.get_input_embeddings()(starts)], dim=1)
            output = self._generate_from_prefix(embeds, **kwargs)
            generated = output if torch.is_tensor(output) else output.sequences
            full = torch.cat([starts.repeat_interleave(copies, dim=0), generated], dim=1)
            if not torch.is_tensor(output):
                output.sequences = full
                return output
            for i, row in enumerate(rows):
                sequences[row] = full[i * copies : (i + 1) * copies]
        width = max(sequence.shape[1] for sequence in sequences.values())
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        return torch.cat(
            [F.pad(sequences[row], (0, width - sequences[row].shape[1]), value=pad) for row in range(len(prompts))]
        )

    def _caption_starts(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Each row's tokens (where `attention_mask` is 1, padding on either side), without the EOS that ends an
        encoded text."""
        keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        eos = self.config.text_config.eos_token_id
        starts = []
        for row, row_keep in zip(input_ids, keep):
            tokens = row[row_keep]
            starts.append(tokens[:-1] if len(tokens) and tokens[-1] == eos else tokens)
        return starts

    def _generate_from_prefix(self, prefix_embeds: torch.Tensor, **kwargs):
        attention_mask = torch.ones(prefix_embeds.shape[:2], dtype=torch.long, device=prefix_embeds.device)
        config = kwargs.get("generation_config") or self.generation_config
        own_cache = not any(
            kwargs.get(key) is not None for key in ("cache", "past_key_values", "cache_implementation")
        )
        # The first step's attentions and hidden states must cover the whole prefix: then it runs in that step.
        per_step_outputs = any(
            kwargs.get(key, getattr(config, key)) for key in ("output_attentions", "output_hidden_states")
        )
        wants_cache = kwargs.get("use_cache", config.use_cache) is not False and not config.cache_implementation
        if own_cache and wants_cache and not per_step_outputs:
            kwargs["cache"] = self._prefix_cache(prefix_embeds)
        with warnings.catch_warnings():
            # The prefix is not text, so n-gram blocking applying to generated tokens only is what we want.
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            return super().generate(inputs_embeds=prefix_embeds, attention_mask=attention_mask, **kwargs)

    def _prepare_model_inputs(self, inputs=None, bos_token_id=None, model_kwargs=None):
        """What `GenerationMixin` prepares is the decoder's input: `generate` has made the images into the prefix
        (`inputs_embeds`) before, so here the main input is text, `input_ids`, as for GPT-2 (and as BLIP-2 hands its
        prefix to its language model's `generate`)."""
        return self.decoder._prepare_model_inputs(inputs, bos_token_id, model_kwargs)

    def _prefix_cache(self, prefix_embeds: torch.Tensor) -> DynamicCache:
        """The decoder's KV cache of every prefix position but the last, computed once per image.

        Every beam (and every returned sequence) of an image starts from the same prefix, but `generate` widens its
        inputs to one row per beam before its first forward pass. With this cache it runs only the last prefix
        position per beam, and `_expand_inputs_for_generation` widens the cache instead.
        """
        cache = DynamicCache(config=self.decoder.config)
        if prefix_embeds.shape[1] > 1:
            self.decoder.transformer(inputs_embeds=prefix_embeds[:, :-1], cache=cache, use_cache=True)
        cache.per_image_prefix = True
        return cache


ClipCapForCaptioning.register_for_auto_class("AutoModel")

__all__ = [
    "ClipCapForCaptioning",
    "ClipCapGenerationMixin",
    "ClipCapPreTrainedModel",
    "ImageEncoder",
    "ImagePrefixMapper",
    "NoRepeatNGramBlocker",
]
