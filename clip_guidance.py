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
from pathlib import Path

import torch

# The weights file train_clip_teacher.py writes; a directory holding it is accepted as `pretrained`.
TEACHER_CHECKPOINT_NAME = "open_clip_model.safetensors"

# The project's own open_clip architectures (the offline demo's domain teacher), registered on first use.
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "open_clip"


def register_model_configs(path: str | os.PathLike = MODEL_CONFIG_DIR) -> None:
    """Make open_clip know the architectures in `path` (a directory of `<name>.json` files, or one file)."""
    import open_clip

    if Path(path).exists():
        open_clip.add_model_config(path)


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
    def from_pretrained(
        cls, arch: str, pretrained: str | None, device: str | torch.device = "cpu", allow_pickle: bool = False
    ) -> CLIPTeacher:
        """`open_clip.create_model_and_transforms(arch, pretrained)`; offline, a failed download is one OSError.

        `pretrained` is an open_clip tag, a checkpoint file, or a `train_clip_teacher.py` output directory. A
        checkpoint file must be safetensors unless `allow_pickle` (a pickle can run code when it is loaded; open_clip
        then loads it `weights_only`)."""
        import open_clip

        register_model_configs()
        if pretrained and os.path.isdir(pretrained):  # a train_clip_teacher.py output directory
            register_model_configs(pretrained)
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
        return self.encode_tokens(self.tokenizer(texts))

    @torch.no_grad()
    def encode_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of captions already tokenised by `self.tokenizer`."""
        return torch.nn.functional.normalize(self.model.encode_text(input_ids.to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def embed_images(self, images, batch_size: int = 64) -> torch.Tensor:
        """Unit-norm embeddings of PIL images (any sequence, a `datasets` column included, decoded a batch at a
        time), with the teacher's own preprocessing, `batch_size` images per forward pass."""
        chunks = [
            self.encode_images(
                torch.stack([self.preprocess(image.convert("RGB")) for image in images[i : i + batch_size]])
            )
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, self.identity.embed_dim or 0, device=self.device)

    @torch.no_grad()
    def encode_text_lists(self, texts: list[list[str]]) -> list[torch.Tensor]:
        """Embed lists of captions (each image's references) in one pass: one unit-norm `(len(list), D)` tensor per
        list."""
        flat = [text for group in texts for text in group]
        if not flat:
            return [torch.empty(0, self.identity.embed_dim or 0, device=self.device) for _ in texts]
        return list(torch.split(self.encode_texts(flat), [len(group) for group in texts]))


# ---------------------------------------------------------------------------------------------------------------------
# The CLIP-guided losses. z: the student's unit-norm embeddings (B, D); v, t: the teacher's unit-norm image and
# caption embeddings (B, D). Every function returns a scalar mean over the batch.
# ---------------------------------------------------------------------------------------------------------------------


def cosine_alignment_loss(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`L_cos = mean_i (1 - cos(z_i, v_i))`: distils the teacher's image embedding into the student."""
    return (1.0 - torch.nn.functional.cosine_similarity(z.float(), v.float(), dim=-1)).mean()


def gather_features(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor over all processes, keeping gradients for this process's rows.

    As open_clip's `gather_features` (local_loss=False, gather_with_grad=False): the other processes' rows arrive as
    constants and this process's own rows are put back with their autograd history, so each process back-propagates
    through its own rows against every process's negatives. Without torch.distributed (or with one process) the
    tensors come back unchanged.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered = []
    for tensor in tensors:
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.detach().contiguous())
        parts[rank] = tensor
        gathered.append(torch.cat(parts))
    return tuple(gathered)


def positive_mask(caption_ids: torch.Tensor) -> torch.Tensor:
    """`(B, B)` float mask: 1 where two rows carry the same caption (the diagonal included)."""
    return (caption_ids[:, None] == caption_ids[None, :]).float()


def contrastive_loss(
    z: torch.Tensor, t: torch.Tensor, logit_scale: float, caption_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE between student image embeddings `z` and teacher caption embeddings `t` (CLIP's loss).

    Row i's positive is caption i. With `caption_ids` (an integer per row identifying the caption text), a row whose
    caption is identical to row i's is not a negative of row i: it is left out of row i's softmax, in both directions
    (image -> text and text -> image). Without that, identical captions would be pushed apart from images they
    describe, and the loss could not fall below log(number of duplicates).
    """
    logits = logit_scale * z.float() @ t.float().T
    targets = torch.arange(len(z), device=z.device)
    if caption_ids is not None:
        duplicates = positive_mask(caption_ids).bool()
        duplicates.fill_diagonal_(False)
        logits = logits.masked_fill(duplicates, float("-inf"))
    image_to_text = torch.nn.functional.cross_entropy(logits, targets)
    text_to_image = torch.nn.functional.cross_entropy(logits.T, targets)
    return (image_to_text + text_to_image) / 2


def repetition_unlikelihood_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-level unlikelihood of repeating a token already in the caption (Welleck et al. 2019, "Neural Text
    Generation with Unlikelihood Training").

    At caption position t the negative candidates are the distinct tokens among the targets before t, minus the target
    at t itself; the loss is `-sum_c log(1 - p(c | y_<t))` summed over positions and divided by the number of target
    tokens. `logits[:, t]` predicts `labels[:, t]` (the model's alignment); -100 labels are ignored.
    """
    valid = labels != -100
    tokens = labels.clamp(min=0)
    batch, length = labels.shape
    earlier = torch.ones(length, length, dtype=torch.bool, device=labels.device).tril(-1)  # [t, j]: j < t
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, t, j]
    first = valid & ~(same & earlier & valid[:, None, :]).any(dim=2)  # the first occurrence of its token
    candidates = earlier & first[:, None, :] & valid[:, :, None] & ~same  # [b, t, j]
    probs = logits.float().softmax(dim=-1)
    candidate_probs = probs.gather(2, tokens[:, None, :].expand(batch, length, length))  # p(y_j | y_<t) at [b, t, j]
    penalty = -torch.log((1.0 - candidate_probs).clamp(min=1e-5)) * candidates
    return penalty.sum() / valid.sum().clamp(min=1)


def cross_image_similarity_loss(
    logits: torch.Tensor, labels: torch.Tensor, caption_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Penalty on different images getting the same token distributions.

    Each image's distribution is its next-token probabilities averaged over its caption positions; the loss is the
    mean cosine similarity between the distributions of pairs of images whose reference captions differ (pairs with
    identical captions should agree, so they are left out). 0 when no such pair exists.
    """
    valid = (labels != -100).float()
    probs = logits.float().softmax(dim=-1)
    mean_probs = (probs * valid[..., None]).sum(dim=1) / valid.sum(dim=1, keepdim=True).clamp(min=1)
    unit = torch.nn.functional.normalize(mean_probs, dim=-1)
    similarity = unit @ unit.T
    if caption_ids is None:
        caption_ids = torch.arange(len(labels), device=labels.device)
    pairs = 1.0 - positive_mask(caption_ids)
    return (similarity * pairs).sum() / pairs.sum().clamp(min=1)


def embed_dataset(dataset, teacher: CLIPTeacher, caption_column: str = "captions", batch_size: int = 64):
    """Add the teacher's unit-norm `teacher_image_embeds` (D) and `teacher_text_embeds` (one D-vector per reference
    caption) to a `datasets.Dataset` with an `image` column, through `Dataset.map` (cached by fingerprint)."""
    import datasets

    def embed(batch):
        images = teacher.embed_images(batch["image"])
        references = [[c] if isinstance(c, str) else c for c in batch[caption_column]]
        texts = teacher.encode_text_lists(references)
        return {
            "teacher_image_embeds": images.cpu().numpy().tolist(),
            "teacher_text_embeds": [embeds.cpu().numpy().tolist() for embeds in texts],
        }

    features = datasets.Features(
        {
            **dataset.features,
            "teacher_image_embeds": datasets.List(datasets.Value("float32")),
            "teacher_text_embeds": datasets.List(datasets.List(datasets.Value("float32"))),
        }
    )
    return dataset.map(
        embed,
        batched=True,
        batch_size=batch_size,
        features=features,
        desc="Teacher embeddings",
        # The teacher's identity, not a pickle of its weights, names the result (and finds it again on a rerun).
        new_fingerprint=datasets.fingerprint.Hasher.hash(
            [dataset._fingerprint, teacher.identity.to_dict(), caption_column, "teacher-embeddings-v1"]
        ),
    )
