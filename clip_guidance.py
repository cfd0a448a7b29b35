"""The frozen CLIP teacher (open_clip) and the checks that keep its cached embeddings honest.

The teacher is only ever used without gradients, in eval mode. It is identified by its architecture and weights (the
open_clip tag, or the SHA-256 of a local checkpoint), so that embeddings cached by `prepare_dataset.py` are never
mixed with another teacher's at training time.

CLIP: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision";
open_clip: Ilharco et al. 2021 (github.com/mlfoundations/open_clip).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import torch


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


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def check_teacher_cache(cached: TeacherIdentity | dict | None, teacher: TeacherIdentity) -> None:
    """Raise a one-line ValueError unless the embeddings in a dataset were made by `teacher`."""
    if cached is None:
        raise ValueError("the dataset has no teacher cache")
    if isinstance(cached, dict):
        cached = TeacherIdentity.from_dict(cached)
    if not cached.same_teacher(teacher):
        raise ValueError(
            f"the dataset's teacher embeddings were made by {cached.describe()}, but the teacher is "
            f"{teacher.describe()}; re-run prepare_dataset.py with this teacher, or train without the cache"
        )


class CLIPTeacher(torch.nn.Module):
    """A frozen open_clip model with its image transform and tokenizer; returns unit-norm embeddings."""

    def __init__(self, model, preprocess, tokenizer, identity: TeacherIdentity):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.identity = identity

    @classmethod
    def from_pretrained(cls, arch: str, pretrained: str | None, device: str | torch.device = "cpu") -> CLIPTeacher:
        """`open_clip.create_model_and_transforms(arch, pretrained)`; offline, a failed download is one OSError line."""
        import open_clip

        if not pretrained:
            raise ValueError(
                "a CLIP teacher needs weights: give clip_pretrained (an open_clip tag or a checkpoint path)"
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        except RuntimeError as error:
            if os.path.exists(pretrained):
                raise
            raise OSError(
                f"could not load CLIP teacher {arch} '{pretrained}' ({str(error).splitlines()[0][:160]}). Offline, "
                "pass a local checkpoint path as clip_pretrained (see train_clip_teacher.py)"
            ) from None
        sha256 = file_sha256(pretrained) if os.path.isfile(pretrained) else None
        embed_dim = model.text_projection.shape[1] if getattr(model, "text_projection", None) is not None else None
        if embed_dim is None:
            embed_dim = getattr(model.visual, "output_dim", None)
        identity = TeacherIdentity(arch, str(pretrained), sha256, embed_dim)
        return cls(model, preprocess, open_clip.get_tokenizer(arch), identity)

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_image(pixel_values.to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """Unit-norm embeddings of PIL images, with the teacher's own preprocessing."""
        return self.encode_images(torch.stack([self.preprocess(image.convert("RGB")) for image in images]))
