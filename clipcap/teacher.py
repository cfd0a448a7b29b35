# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The frozen CLIP teacher (open_clip): its arguments, loading it, its identity, embedding images and captions with it,
and its retrieval recall.

The teacher is only ever used without gradients, in eval mode. It is identified by its architecture and weights (the
open_clip tag, or the SHA-256 of a local checkpoint), so that embeddings cached in a dataset (`clipcap.teacher_cache`)
are never mixed with another teacher's at training time.

CLIP: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision";
open_clip: Ilharco et al. 2021 (github.com/mlfoundations/open_clip).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from clipcap.files import file_sha256
from clipcap.matching import Matcher, encode_image_grid, has_matcher, score_captions, without_padding_columns
from clipcap.precision import resolve_bf16
from configuration_clipcap import register_timm_models

logger = logging.getLogger(__name__)

# The weights file train_clip_teacher.py writes; a directory holding it is accepted as `pretrained`.
TEACHER_CHECKPOINT_NAME = "open_clip_model.safetensors"

# The project's own open_clip architectures (the offline demo's domain teacher), registered on first use.
MODEL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "open_clip"


@dataclass
class TeacherArguments:
    """The CLIP teacher: an open_clip architecture and its weights (every script that uses a teacher takes these)."""

    clip_model: str | None = field(
        default=None, metadata={"help": "open_clip architecture of the teacher (ViT-B-32 for the real run)."}
    )
    clip_pretrained: str | None = field(
        default=None,
        metadata={
            "help": "Teacher weights: an open_clip tag ('openai'), a checkpoint file, or a train_clip_teacher.py dir."
        },
    )
    clip_precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto",
        metadata={
            "help": "The teacher's text tower under bfloat16 autocast or not. auto: bf16 where the hardware has it "
            "natively (a CPU with AMX or AVX-512 BF16: twice as fast, embeddings within 1e-5 cosine of fp32's; a GPU "
            "from Ampere on), else fp32. bf16: the same, with a warning where it falls back (an emulated bf16 is 8x "
            "slower than fp32 on an AVX2 CPU; CLIPCAP_FORCE_BF16=1 forces it). The image tower stays fp32: in bf16 "
            "its convolutions were no faster and moved embeddings by up to 0.02."
        },
    )


def register_model_configs(path: str | os.PathLike = MODEL_CONFIG_DIR) -> None:
    """Make open_clip know the architectures in `path` (a directory of `<name>.json` files, or one file).

    A Hugging Face text tower named by a relative path (`"hf_model_name": "text_tower"`, as `train_clip_teacher.py`
    writes next to a teacher's weights) is read relative to the file's folder, so a teacher directory can move."""
    register_timm_models()  # timm image trunks this project names (tf_mobilenetv2_100)
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path] if path.is_file() else []
    for file in files:
        try:
            config = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= config.keys():
            continue  # not an architecture (teacher.json, ...)
        text = config["text_cfg"]
        for key in ("hf_model_name", "hf_tokenizer_name"):
            if isinstance(text.get(key), str) and (file.parent / text[key]).is_dir():
                text[key] = str((file.parent / text[key]).resolve())
        add_model_config(file.stem, config)


def add_model_config(name: str, config: dict) -> None:
    """Register the architecture `config` with open_clip as `name` (open_clip reads its configs from files)."""
    import open_clip

    with tempfile.TemporaryDirectory() as scratch:
        file = Path(scratch, f"{name}.json")
        file.write_text(json.dumps(config))
        open_clip.add_model_config(file)


@dataclasses.dataclass(frozen=True)
class TeacherIdentity:
    arch: str
    pretrained: str  # an open_clip tag ("openai") or the checkpoint path it was loaded from
    sha256: str | None = None  # of the checkpoint file, when `pretrained` is a local file
    embed_dim: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TeacherIdentity:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})

    def same_teacher(self, other: TeacherIdentity) -> bool:
        """Same architecture and same weights: the checkpoint checksum when both have one, else the tag."""
        if self.arch != other.arch:
            return False
        if self.sha256 or other.sha256:
            return self.sha256 == other.sha256
        return self.pretrained == other.pretrained

    def describe(self) -> str:
        weights = f"sha256 {self.sha256[:12]}" if self.sha256 else f"'{self.pretrained}'"
        return f"{self.arch} ({weights})"


class _DropRecords(logging.Filter):
    """Drops log records whose message starts with `prefix`."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


class CLIPTeacher(torch.nn.Module):
    """A frozen open_clip model with its image transform and tokenizer; returns unit-norm embeddings.

    `precision` ("auto", "fp32" or "bf16") is resolved for the model's device by `clipcap.precision.resolve_bf16`:
    `self.precision` is what the text tower runs in ("bf16" or "fp32")."""

    def __init__(self, model, preprocess, tokenizer, identity: TeacherIdentity, precision: str = "fp32", matcher=None):
        super().__init__()
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"clip_precision={precision!r}: choose auto, fp32 or bf16")
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.identity = identity
        # The image-text matcher trained beside the towers (`clipcap.matching`), when the teacher has one.
        self.matcher = matcher.eval().requires_grad_(False) if matcher is not None else None
        self.precision = (
            "bf16"
            if resolve_bf16(precision, self.device, "the CLIP teacher's text tower (its image tower: fp32)")
            else "fp32"
        )

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @classmethod
    def from_pretrained(
        cls,
        arch: str,
        pretrained: str | None,
        device: str | torch.device = "cpu",
        allow_pickle: bool = False,
        precision: str = "fp32",
    ) -> CLIPTeacher:
        """`open_clip.create_model_and_transforms(arch, pretrained)`; offline, a failed download is one OSError.

        `pretrained` is an open_clip tag, a checkpoint file, or a `train_clip_teacher.py` output directory. A
        checkpoint file must be safetensors unless `allow_pickle` (a pickle can run code when it is loaded; open_clip
        then loads it `weights_only`)."""
        import open_clip

        register_model_configs()
        matcher = None
        if pretrained and os.path.isdir(pretrained):  # a train_clip_teacher.py output directory
            register_model_configs(pretrained)
            if has_matcher(pretrained):
                matcher = Matcher.from_pretrained(pretrained).to(device)
            pretrained = os.path.join(pretrained, TEACHER_CHECKPOINT_NAME)
        if not pretrained:
            raise ValueError(
                "a CLIP teacher needs weights: give clip_pretrained (an open_clip tag or a checkpoint path)"
            )
        if os.path.isfile(pretrained) and not pretrained.endswith(".safetensors") and not allow_pickle:
            raise OSError(
                f"the teacher checkpoint {pretrained} is not safetensors; a pickle can run code when loaded. Convert "
                "it, or if you trust the file pass allow_pickle=True (--allow_pickle)"
            )
        root = logging.getLogger()  # open_clip logs a failed download there before raising it: said once, below
        quiet = _DropRecords("Failed to download weights")
        root.addFilter(quiet)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        except RuntimeError as error:
            if os.path.exists(pretrained):
                raise
            reason = " ".join(str(error).split())
            raise OSError(
                f"could not load CLIP teacher {arch} '{pretrained}': {reason} Offline, pass a local checkpoint path "
                "as clip_pretrained (see train_clip_teacher.py)"
            ) from None
        finally:
            root.removeFilter(quiet)
        sha256 = file_sha256(pretrained) if os.path.isfile(pretrained) else None
        embed_dim = (open_clip.get_model_config(arch) or {}).get("embed_dim")
        if embed_dim is None and getattr(model, "text_projection", None) is not None:
            embed_dim = model.text_projection.shape[1]
        if embed_dim is None:
            embed_dim = getattr(model.visual, "output_dim", None)
        identity = TeacherIdentity(arch, str(pretrained), sha256, embed_dim)
        return cls(model, preprocess, open_clip.get_tokenizer(arch), identity, precision, matcher)

    @classmethod
    def from_arguments(
        cls, args: TeacherArguments, device: str | torch.device | None = None, allow_pickle: bool = False
    ) -> CLIPTeacher:
        """The teacher a script's `TeacherArguments` name, on `device` (default: CUDA when available, else CPU)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls.from_pretrained(args.clip_model, args.clip_pretrained, device, allow_pickle, args.clip_precision)

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of an image batch `(batch, 3, H, W)` already preprocessed by `self.preprocess`."""
        pixel_values = pixel_values.to(self.device).contiguous(memory_format=torch.channels_last)
        return torch.nn.functional.normalize(self.model.encode_image(pixel_values).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings of caption strings."""
        return self.embed_input_ids(self.tokenizer(texts))

    @torch.no_grad()
    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of captions already tokenised by `self.tokenizer` (`(batch, context_length)` ids); the
        columns that are padding in every row are not computed (`without_padding_columns`)."""
        input_ids = without_padding_columns(self.model, input_ids)
        with self._autocast():
            return torch.nn.functional.normalize(self.model.encode_text(input_ids.to(self.device)).float(), dim=-1)

    def _pixel_batches(self, images, batch_size: int):
        """PIL images (any sequence, a `datasets` column included, decoded a batch at a time) -> batches of the
        teacher's input, through its own preprocessing."""
        for i in range(0, len(images), batch_size):
            yield torch.stack([self.preprocess(image.convert("RGB")) for image in images[i : i + batch_size]])

    @torch.no_grad()
    def embed_pil_images(self, images, batch_size: int = 64) -> torch.Tensor:
        """Unit-norm embeddings of PIL images (any sequence, a `datasets` column included, decoded a batch at a
        time), with the teacher's own preprocessing, `batch_size` images per forward pass."""
        chunks = [self.embed_pixel_values(batch) for batch in self._pixel_batches(images, batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, self.identity.embed_dim or 0, device=self.device)

    def _require_matcher(self):
        if self.matcher is None:
            raise ValueError(
                f"the teacher {self.identity.describe()} has no image-text matcher: train one with "
                "train_clip_teacher.py --matcher_layers 2"
            )

    @torch.no_grad()
    def grids_of_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image trunk's feature maps `(batch, channels, height, width)` that the matcher reads (its config's
        `grid_level`; the last by default)."""
        self._require_matcher()
        return encode_image_grid(self.model, pixel_values.to(self.device), self.matcher.config.grid_level)[0].float()

    @torch.no_grad()
    def image_grids(self, images, batch_size: int = 64) -> torch.Tensor:
        """`grids_of_pixel_values` of PIL images, with the teacher's own preprocessing."""
        return torch.cat([self.grids_of_pixel_values(batch) for batch in self._pixel_batches(images, batch_size)])

    @torch.no_grad()
    def match_grids(
        self, grids: torch.Tensor, texts: list[str], batch_size: int = 256, reduction: str = "mean"
    ) -> torch.Tensor:
        """The matcher's score of `texts[k]` with the image whose grid is `grids[k]` (on the CPU): the ITM kind's logit
        that it is true, the generative kind's mean log-probability of its tokens, or with `reduction="sum"` their sum
        (`clipcap.matching.score_captions`, the text tower in the teacher's precision)."""
        self._require_matcher()
        if len(grids) != len(texts):
            raise ValueError(f"{len(grids)} images for {len(texts)} captions")
        return score_captions(
            self.model,
            self.tokenizer,
            self.matcher,
            grids.to(self.device),
            texts,
            batch_size,
            self._autocast,
            reduction,
        )


@torch.no_grad()
def encode_images(model, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Unit-norm embeddings of preprocessed `images` by an open_clip `model`, `batch_size` at a time."""
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.encode_image(
                images[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last), normalize=True
            )
            for i in range(0, len(images), batch_size)
        ]
    )


def encode_texts(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-norm embeddings of `texts` by an open_clip `model` and its tokenizer, `batch_size` at a time."""
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.encode_text(
                without_padding_columns(model, tokenizer(texts[i : i + batch_size])).to(device), normalize=True
            )
            for i in range(0, len(texts), batch_size)
        ]
    )


def retrieval_recall(model, images: torch.Tensor, captions: list[list[str]], tokenizer, batch_size: int = 64) -> dict:
    """Image->text and text->image recall@1 of an open_clip `model` over a split, every reference caption included.

    A retrieved caption counts as right when its text is one of the image's references (the synthetic data has
    identical captions for identical scenes, which are equally right), and a retrieved image when the caption's
    text is among its references.
    """
    model.eval()
    texts = [caption for references in captions for caption in references]
    image_embeds = encode_images(model, images, batch_size)
    text_embeds = encode_texts(model, tokenizer, texts, batch_size)
    similarity = (image_embeds @ text_embeds.T).float().cpu()
    reference_sets = [set(references) for references in captions]
    best_text = similarity.argmax(dim=1).tolist()
    best_image = similarity.argmax(dim=0).tolist()
    image_to_text = sum(texts[j] in reference_sets[i] for i, j in enumerate(best_text)) / len(captions)
    text_to_image = sum(texts[j] in reference_sets[i] for j, i in enumerate(best_image)) / len(texts)
    return {"image_to_text_R@1": image_to_text, "text_to_image_R@1": text_to_image}
