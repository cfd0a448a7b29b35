# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""An image-text matcher over the teacher's own tokens: a scorer that sees where things are.

One pooled vector per side cannot tell "a red cup left of a blue kettle" from "a blue kettle left of a red cup"
(docs/results.md: the contrastive teacher is at chance on both kinds of relation negative; ARO, Yuksekgonul et al.
2023, found the same of CLIP). Image-text matching heads that let each caption token meet the image's spatial tokens
do see order: ALBEF's and BLIP's ITM (Li et al. 2021, 2022), here as one stream as in ViLT (Kim et al. 2021). The
teacher's image trunk gives its last grid of cells (with fixed 2-D sine-cosine positions, MAE's, He et al. 2022) and
its text tower the caption's token states; a learned [CLS] token and both sequences go through `layers` transformer
layers, and a linear map of [CLS] is the logit that the caption is true of the image.

`train_clip_teacher.py --matcher_layers N` trains it beside the contrastive loss, with binary cross-entropy on each
caption (true), its hard negatives (`clipcap.hard_negatives`: the converse relation, swapped phrases, colours, kinds,
counts) and the batch's hardest other caption and image (ALBEF's in-batch negatives, drawn by the contrastive
similarity), the gradients reaching both towers. The teacher directory then holds `matcher.safetensors` and
`matcher_config.json`; `clipcap.teacher.CLIPTeacher` loads them as `teacher.matcher`.

It needs an open_clip model with a timm image trunk (its `forward_features` grid) and a Hugging Face text tower (its
token states): the LiT teachers of `configs/open_clip/`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from modeling_clipcap import sincos_2d

MATCHER_KINDS = ("itm", "generative")
MATCHER_WEIGHTS_NAME = "matcher.safetensors"
MATCHER_CONFIG_NAME = "matcher_config.json"


@dataclass
class MatcherConfig:
    """`image_channels`: the trunk's last grid's channels; `text_dim`: the text tower's hidden size; `width`, `layers`,
    `heads`: the matching transformer's."""

    image_channels: int
    text_dim: int
    width: int = 256
    layers: int = 2
    heads: int = 4
    kind: str = "itm"  # or "generative" (CaptionLikelihoodScorer)
    vocab_size: int = 0  # the text tower's, for "generative"
    vocabulary: list[int] | None = None  # "generative": the token ids it predicts (the others share one slot)
    grid_level: int | None = None  # which of the trunk's feature maps it reads (timm's feature_info); None: the last

    def __post_init__(self):
        if self.kind not in MATCHER_KINDS:
            raise ValueError(f"matcher kind {self.kind!r}: choose one of {', '.join(MATCHER_KINDS)}")
        if self.kind == "generative" and (self.vocab_size < 1 or not self.vocabulary):
            raise ValueError("a generative matcher needs the text tower's vocab_size and the vocabulary it predicts")

    def save(self, directory: str | os.PathLike) -> None:
        Path(directory, MATCHER_CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> MatcherConfig:
        return cls(**json.loads(Path(directory, MATCHER_CONFIG_NAME).read_text()))


def image_cells(proj: nn.Module, grid: torch.Tensor, width: int) -> torch.Tensor:
    """`(batch, channels, height, width)` grid -> `(batch, cells, width)`: each cell mapped by `proj`, plus its fixed
    2-D sine-cosine position (row-major; the captioner's grid prefix uses the same positions)."""
    _, _, rows, columns = grid.shape
    cells = proj(grid.flatten(2).transpose(1, 2))
    return cells + sincos_2d(rows, columns, width).to(cells)


class Matcher(nn.Module):
    """What both kinds share: `forward(grid, text_states, text_mask, input_ids)` -> one score per (image, caption)
    pair, higher for a caption more likely true; building one for a model's towers, saving and loading it.

    Args:
        grid: `(batch, channels, height, width)`, the image trunk's last feature map.
        text_states: `(batch, length, text_dim)`, the text tower's last hidden states.
        text_mask: `(batch, length)`, 1 on tokens, 0 on padding.
        input_ids: `(batch, length)`, the caption's token ids.
    """

    config: MatcherConfig

    @classmethod
    def for_model(
        cls,
        model,
        layers: int,
        width: int = 256,
        kind: str = "itm",
        vocabulary: list[int] | None = None,
        grid_level: int | None = None,
    ) -> Matcher:
        """A new matcher of `kind` sized for the open_clip `model`'s towers (the generative kind predicts the token
        ids of `vocabulary`, e.g. those of the training captions), reading the trunk's feature map `grid_level`
        (an index into timm's `feature_info`: for MobileNetV2 at 128 px, 3 is the 8x8 map of stride 16; None: its
        last, 4x4)."""
        check_towers(model)
        text = model.text.config
        trunk = model.visual.trunk
        if grid_level is not None and not 0 <= grid_level < len(trunk.feature_info):
            raise ValueError(
                f"grid_level {grid_level}: the image trunk has feature maps 0-{len(trunk.feature_info) - 1}"
            )
        config = MatcherConfig(
            trunk.num_features if grid_level is None else trunk.feature_info[grid_level]["num_chs"],
            text.hidden_size,
            width=width,
            layers=layers,
            kind=kind,
            vocab_size=text.vocab_size if kind == "generative" else 0,
            vocabulary=sorted(set(vocabulary)) if kind == "generative" and vocabulary else None,
            grid_level=grid_level,
        )
        return MATCHER_CLASSES[kind](config)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """`matcher_config.json`, then the weights (written beside the target and renamed)."""
        self.config.save(directory)
        target = Path(directory, MATCHER_WEIGHTS_NAME)
        partial = target.with_suffix(".partial")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(partial))
        os.replace(partial, target)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> Matcher:
        """The matcher saved in `directory`, of the kind its config names, in eval mode."""
        config = MatcherConfig.load(directory)
        matcher = MATCHER_CLASSES[config.kind](config)
        matcher.load_state_dict(load_file(str(Path(directory, MATCHER_WEIGHTS_NAME))))
        return matcher.eval()


class ImageTextMatcher(Matcher):
    """The ITM kind: [CLS], the caption's token states and the image's cells in one stream; the score is the logit
    that the caption is true (the token ids are not read)."""

    def __init__(self, config: MatcherConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.image_proj = nn.Sequential(nn.Linear(config.image_channels, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, width), nn.LayerNorm(width))
        self.type_embedding = nn.Parameter(torch.zeros(2, width))  # text, image
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, config.heads, 4 * width, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def forward(
        self, grid: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor, input_ids=None
    ) -> torch.Tensor:
        batch = len(grid)
        cells = image_cells(self.image_proj, grid.to(self.cls.dtype), self.config.width) + self.type_embedding[1]
        text = self.text_proj(text_states.to(self.cls.dtype)) + self.type_embedding[0]
        x = torch.cat([self.cls.expand(batch, -1, -1), text, cells], dim=1)
        keep = torch.cat([text_mask.new_ones(batch, 1), text_mask, text_mask.new_ones(batch, cells.shape[1])], dim=1)
        return self.head(self.encoder(x, src_key_padding_mask=keep == 0)[:, 0]).squeeze(-1)


class CaptionLikelihoodScorer(Matcher):
    """The generative kind (CoCa's captioning head, Yu et al. 2022; scored as VisualGPTScore, Lin et al. 2023): a small
    causal decoder over the caption's token ids that cross-attends to the image's cells; the score of a caption is
    the mean log-probability of its tokens after [CLS] given the image, so that a caption whose words come in the
    wrong order for this image is less likely. `forward` returns that score; `token_log_probs` each token's."""

    def __init__(self, config: MatcherConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.image_proj = nn.Sequential(nn.Linear(config.image_channels, width), nn.LayerNorm(width))
        # The text tower's ids -> the decoder's own: 1.. for the vocabulary, 0 for any other token (one shared slot),
        # so the softmax runs over the captions' few hundred words, not the tower's 30,522.
        lookup = torch.zeros(config.vocab_size, dtype=torch.long)
        lookup[torch.tensor(config.vocabulary)] = torch.arange(1, len(config.vocabulary) + 1)
        self.register_buffer("lookup", lookup, persistent=False)
        self.embed = nn.Embedding(len(config.vocabulary) + 1, width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.positions = nn.Parameter(torch.randn(MAX_CAPTION_TOKENS, width) * 0.02)
        layer = nn.TransformerDecoderLayer(width, config.heads, 4 * width, 0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.layers)
        self.norm = nn.LayerNorm(width)

    def token_log_probs(self, grid: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """`(batch, length - 1)`: log p(token t | tokens < t, image) for t = 1 .. length - 1."""
        length = input_ids.shape[1]
        if length > MAX_CAPTION_TOKENS:
            raise ValueError(f"captions of {length} tokens: the generative matcher reads {MAX_CAPTION_TOKENS}")
        cells = image_cells(self.image_proj, grid.to(self.embed.weight.dtype), self.config.width)
        input_ids = self.lookup[input_ids]
        x = self.embed(input_ids[:, :-1]) + self.positions[: length - 1]
        causal = nn.Transformer.generate_square_subsequent_mask(length - 1, device=x.device, dtype=x.dtype)
        hidden = self.norm(self.decoder(x, cells, tgt_mask=causal, tgt_is_causal=True))
        logits = hidden @ self.embed.weight.T  # tied input and output embeddings
        return logits.log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)

    def forward(
        self, grid: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor, input_ids=None
    ) -> torch.Tensor:
        if input_ids is None:
            raise ValueError("the generative matcher reads the caption's token ids")
        targets = text_mask[:, 1:].to(grid.dtype)
        return (self.token_log_probs(grid, input_ids) * targets).sum(-1) / targets.sum(-1).clamp(min=1)


MAX_CAPTION_TOKENS = 64
MATCHER_CLASSES = {"itm": ImageTextMatcher, "generative": CaptionLikelihoodScorer}


def has_matcher(directory: str | os.PathLike) -> bool:
    return Path(directory, MATCHER_WEIGHTS_NAME).is_file() and Path(directory, MATCHER_CONFIG_NAME).is_file()


def check_towers(model) -> None:
    """A clear error for an open_clip model whose towers do not give the tokens the matcher reads."""
    from open_clip.hf_model import HFTextEncoder
    from open_clip.timm_model import TimmModel

    if not isinstance(getattr(model, "visual", None), TimmModel) or not isinstance(
        getattr(model, "text", None), HFTextEncoder
    ):
        raise ValueError(  # noqa: TRY004 (the architecture the user named, as the scripts report it)
            "the image-text matcher reads a timm image trunk's grid and a Hugging Face text tower's token states: "
            "use a LiT architecture (ClipCap-LiT-S-MobileNetV2, ClipCap-LiT-S)"
        )


def encode_image_grid(
    model, pixel_values: torch.Tensor, level: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(grid, embedding)` of an open_clip LiT model's image tower: the trunk's feature map `level` (timm's
    `feature_info` index; None: the last) and the projected pooled embedding (not normalised), from one pass: the same
    as `model.encode_image` for the second."""
    visual = model.visual
    if level is None:
        grid = last = visual.trunk.forward_features(pixel_values)
    else:
        last, (grid,) = visual.trunk.forward_intermediates(pixel_values, indices=[level])
    return grid, visual.head(visual.trunk.forward_head(last))


def encode_text_tokens(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(token states, attention mask, embedding)` of an open_clip Hugging Face text tower, from one pass: the same
    as `model.encode_text` for the third."""
    text = model.text
    mask = (input_ids != text.config.pad_token_id).long()
    out = text.transformer(input_ids=input_ids, attention_mask=mask)
    return out.last_hidden_state, mask, text.proj(text.pooler(out, mask))


def without_padding_columns(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Token ids without the columns that are padding in every row, for a Hugging Face text tower (which masks
    padding, so its embeddings do not change): the captions are about half the context length, and so is the cost."""
    from open_clip.hf_model import HFTextEncoder

    if not isinstance(getattr(model, "text", None), HFTextEncoder):
        return input_ids
    used = (input_ids != model.text.config.pad_token_id).any(dim=0).nonzero()
    return input_ids[:, : int(used.max()) + 1] if len(used) else input_ids


def encode_text_by_length(model, input_ids: torch.Tensor, groups: int = 1, normalize: bool = True) -> torch.Tensor:
    """`model.encode_text(input_ids, normalize)`, computed in `groups` groups of rows of about one length, each
    without its own padding columns (`without_padding_columns`), the rows returned in their order. A Hugging Face text
    tower masks padding, so the embeddings are the same (dropout's draws aside), for the cost of fewer columns: a
    teacher batch's captions and hard negatives are 14 tokens long on average and 27 at most, so one group computes
    twice the real tokens, four groups 1.3x. Other text towers (which do not mask padding) run in one piece."""
    from open_clip.hf_model import HFTextEncoder

    if groups <= 1 or len(input_ids) < 2 or not isinstance(getattr(model, "text", None), HFTextEncoder):
        return model.encode_text(without_padding_columns(model, input_ids), normalize=normalize)
    order = (input_ids != model.text.config.pad_token_id).sum(dim=1).argsort(stable=True)
    features = torch.cat(
        [
            model.encode_text(without_padding_columns(model, input_ids[rows]), normalize=normalize)
            for rows in order.chunk(groups)
        ]
    )
    return features[order.argsort()]


def score_captions(
    model,
    tokenizer,
    matcher: Matcher,
    grids: torch.Tensor,
    texts: list[str],
    batch_size: int = 256,
    text_context=None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The matcher's score of `texts[k]` with the image whose grid is `grids[k]` (on the CPU), `batch_size` captions
    at a time, each batch's padding columns dropped (`without_padding_columns`: padding is masked, so the scores do
    not change); `text_context()`, when given, wraps the text tower's pass (the teacher's autocast). With
    `reduction="sum"` a generative matcher's score is the sum of the token log-probabilities, log p(caption | image),
    not their mean."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction {reduction!r}: choose mean or sum")
    if reduction == "sum" and matcher.config.kind != "generative":
        raise ValueError(
            "reduction='sum' is for a generative matcher (its score is a mean of token log-probabilities)"
        )
    device = grids.device
    scores = []
    for i in range(0, len(texts), batch_size):
        ids = without_padding_columns(model, tokenizer(texts[i : i + batch_size])).to(device)
        with text_context() if text_context is not None else contextlib.nullcontext():
            states, mask, _ = encode_text_tokens(model, ids)
        score = matcher(grids[i : i + batch_size], states.float(), mask, ids).float()
        if reduction == "sum":  # the forward's mean over the scored tokens (all but the first) times their number
            score = score * mask[:, 1:].sum(-1).clamp(min=1)
        scores.append(score.cpu())
    return torch.cat(scores) if scores else torch.empty(0)


def draw_in_batch_negatives(
    similarity: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each row of `similarity` (images x captions, or captions x images) one column drawn with probability
    softmax(similarity) over the columns `same` does not mark (ALBEF's hard in-batch negatives); -1 where every column
    is marked."""
    weights = similarity.detach().float().masked_fill(same, -math.inf).softmax(dim=-1).nan_to_num(0.0)
    drawn = torch.full((len(similarity),), -1, dtype=torch.long)
    usable = weights.sum(dim=-1) > 0
    if usable.any():
        drawn[usable.cpu()] = torch.multinomial(weights[usable].cpu(), 1, generator=generator).squeeze(1)
    return drawn


def matching_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the match logits, the true pairs weighted to count as much as all the false ones."""
    labels = labels.to(logits)
    positives = labels.sum().clamp(min=1)
    negatives = (1 - labels).sum().clamp(min=1)
    weights = labels / positives + (1 - labels) / negatives
    return (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum() / 2
