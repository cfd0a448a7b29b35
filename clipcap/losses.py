# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The CLIP-guided loss terms next to the caption cross-entropy (`CLIPGuidedTrainer.compute_loss` adds them up).

z: the student's unit-norm embeddings (B, D); v, t: the teacher's unit-norm image and caption embeddings (B, D).
Every loss returns a scalar mean over the batch.

| term | function |
| --- | --- |
| `L_cos` | `cosine_alignment_loss`: distils the teacher's image embedding into the student |
| `L_con` | `contrastive_loss`: CLIP's symmetric InfoNCE between z and t, identical captions not negatives, hard negative captions (NegCLIP) as extra negatives; `hard_negative_pair_loss`: each hard negative against its own caption |
| `L_div` | `repetition_unlikelihood_loss` (Welleck et al. 2019) + `cross_image_similarity_loss` |
"""

from __future__ import annotations

import hashlib

import torch


def caption_id(caption: str) -> int:
    """A stable 63-bit id of a caption's text: rows with equal ids are positives of each other in `L_con`."""
    return int.from_bytes(hashlib.blake2b(caption.encode(), digest_size=8).digest(), "little") >> 1


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
    z: torch.Tensor,
    t: torch.Tensor,
    logit_scale: float | torch.Tensor,
    caption_ids: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between image embeddings `z` and caption embeddings `t` (CLIP's loss), with NegCLIP's hard
    negatives when given.

    Row i's positive is caption i. With `caption_ids` (an integer per row identifying the caption text), a row whose
    caption is identical to row i's is not a negative of row i: it is left out of row i's softmax, in both directions
    (image -> text and text -> image). Without that, identical captions would be pushed apart from images they
    describe, and the loss could not fall below log(number of duplicates).

    `negatives` (K, D) are embeddings of captions that describe no image of the batch (hard negatives: a caption
    with one fact made false, `clipcap.hard_negatives`): as in NegCLIP (Yuksekgonul et al. 2023) they join every
    image's softmax over captions, and not the text -> image direction, which has no image for them.
    """
    logits = logit_scale * z.float() @ t.float().T
    targets = torch.arange(len(z), device=z.device)
    if caption_ids is not None:
        duplicates = positive_mask(caption_ids).bool()
        duplicates.fill_diagonal_(False)
        logits = logits.masked_fill(duplicates, float("-inf"))
    text_to_image = torch.nn.functional.cross_entropy(logits.T, targets)
    if negatives is not None and len(negatives):
        logits = torch.cat([logits, logit_scale * z.float() @ negatives.float().T], dim=1)
    image_to_text = torch.nn.functional.cross_entropy(logits, targets)
    return (image_to_text + text_to_image) / 2


def hard_negative_pair_loss(
    z: torch.Tensor, t: torch.Tensor, negatives: torch.Tensor, owners: torch.Tensor, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """Each hard negative against its own image's true caption alone: the mean over negatives k of
    `-log sigmoid(s * (cos(z_o, t_o) - cos(z_o, n_k)))`, o = `owners[k]` the row whose caption negative k was made
    from (a two-way softmax, so that a fine difference is not drowned by the batch's easy negatives). 0 without
    negatives."""
    if not len(negatives):
        return z.new_zeros(())
    owners = owners.to(z.device)
    positive = (z[owners].float() * t[owners].float()).sum(-1)
    negative = (z[owners].float() * negatives.float()).sum(-1)
    return torch.nn.functional.softplus(logit_scale * (negative - positive)).mean()


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
