# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The arguments of CLIP-guided training: the loss weights, the self-critical stage, and `TrainingArguments` plus how
evaluation captions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from transformers.integrations import is_tensorboard_available
from transformers.utils import is_torch_xla_available

from clipcap.hard_negatives import NEGATIVE_KINDS
from clipcap.precision import resolve_bf16

logger = logging.getLogger(__name__)


@dataclass
class CLIPGuidanceArguments:
    """The weights of the CLIP-guided loss terms and where the teacher's embeddings come from (the teacher itself:
    `clipcap.teacher.TeacherArguments`)."""

    lambda_cos: float = field(default=1.0, metadata={"help": "Weight of L_cos, 1 - cos(z, CLIP image embedding)."})
    lambda_con: float = field(default=0.1, metadata={"help": "Weight of L_con, InfoNCE between z and CLIP captions."})
    lambda_div: float = field(
        default=0.01, metadata={"help": "Weight of L_div, repetition unlikelihood + cross-image."}
    )
    contrastive_logit_scale: float = field(
        default=1 / 0.07, metadata={"help": "Fixed logit scale (inverse temperature) of L_con; CLIP starts at 1/0.07."}
    )
    gather_negatives: bool = field(
        default=True, metadata={"help": "L_con uses every process's batch as negatives (open_clip's gather_features)."}
    )
    use_teacher_cache: bool = field(
        default=True, metadata={"help": "Use the dataset's teacher embeddings when they were made by this teacher."}
    )
    cache_teacher_embeddings: bool = field(
        default=True,
        metadata={"help": "Without a cache, embed every image and caption with the teacher once before training."},
    )
    con_hard_negatives: str = field(
        default="",
        metadata={
            "help": "Comma-separated kinds of hard negative captions (clipcap.hard_negatives.NEGATIVE_KINDS) that join "
            "L_con's softmax over captions for z (NegCLIP on the student), embedded by the teacher at each step."
        },
    )
    con_hard_negatives_per_caption: int = field(
        default=1, metadata={"help": "Hard negatives drawn per caption of the batch for L_con."}
    )

    def __post_init__(self):
        for name in ("lambda_cos", "lambda_con", "lambda_div"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if unknown := [kind for kind in self.hard_negative_kinds if kind not in NEGATIVE_KINDS]:
            raise ValueError(f"unknown con_hard_negatives {unknown}; known: {', '.join(NEGATIVE_KINDS)}")

    @property
    def hard_negative_kinds(self) -> tuple[str, ...]:
        return tuple(kind.strip() for kind in self.con_hard_negatives.split(",") if kind.strip())

    @property
    def needs_teacher_images(self) -> bool:
        return self.lambda_cos > 0

    @property
    def needs_teacher_texts(self) -> bool:
        return self.lambda_con > 0

    @property
    def uses_student_embedding(self) -> bool:
        return self.lambda_cos > 0 or self.lambda_con > 0


SCST_BASELINES = ("mean_of_others", "greedy")
MATCHER_REWARDS = ("probability", "relation_contrast")  # clipcap.rewards: matcher_reward, relation_contrast_reward


@dataclass
class SCSTArguments:
    """The self-critical stage (`clipcap.scst.SCSTTrainer`): after a captioner is trained, sample captions and raise
    the probability of those the reward prefers to their baseline (Rennie et al. 2017; Cho et al. 2022 with CLIP-S)."""

    scst: bool = field(
        default=False,
        metadata={
            "help": "Train with self-critical sequence training instead of the CLIP-guided loss; starts from "
            "a trained model (model_name_or_path)."
        },
    )
    scst_num_samples: int = field(default=5, metadata={"help": "Captions sampled per image at each step (K)."})
    scst_baseline: str = field(
        default="mean_of_others",
        metadata={
            "help": "Each sample's baseline: 'mean_of_others' (the mean reward of the other K-1 samples of its "
            "image) or 'greedy' (the reward of the image's greedy caption)."
        },
    )
    scst_clip_weight: float = field(default=1.0, metadata={"help": "Weight of the teacher's CLIP-S in the reward."})
    scst_cider_weight: float = field(
        default=0.0, metadata={"help": "Weight of CIDEr-D against the references in the reward."}
    )
    scst_matcher_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the teacher's image-text matcher in the reward: the probability it gives the caption "
            "of being true of the image (clipcap.matching; a teacher trained with --matcher_layers)."
        },
    )
    scst_matcher_reward: str = field(
        default="probability",
        metadata={
            "help": "What the matcher rewards: `probability`, of the caption being true (clipcap.rewards."
            "matcher_reward), or `relation_contrast`, of the caption rather than its relation reversed "
            "(relation_contrast_reward)."
        },
    )
    scst_ce_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the guard: cross-entropy of one reference caption per image (keeps the "
            "language of the references against reward hacking)."
        },
    )
    scst_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    scst_top_k: int = field(default=0, metadata={"help": "Sample from the top k tokens only (0: from all)."})

    def __post_init__(self):
        if self.scst_baseline not in SCST_BASELINES:
            raise ValueError(f"scst_baseline={self.scst_baseline!r}: choose one of {', '.join(SCST_BASELINES)}")
        if self.scst_num_samples < 1 or (self.scst_baseline == "mean_of_others" and self.scst_num_samples < 2):
            raise ValueError(
                f"scst_num_samples={self.scst_num_samples}: the mean_of_others baseline needs at least 2 samples"
            )
        for name in ("scst_clip_weight", "scst_cider_weight", "scst_matcher_weight", "scst_ce_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.scst and self.scst_clip_weight == 0 and self.scst_cider_weight == 0 and self.scst_matcher_weight == 0:
            raise ValueError(
                "scst needs a reward: set scst_clip_weight, scst_cider_weight or scst_matcher_weight above 0"
            )
        if self.scst_matcher_reward not in MATCHER_REWARDS:
            raise ValueError(
                f"scst_matcher_reward={self.scst_matcher_reward!r}: choose one of {', '.join(MATCHER_REWARDS)}"
            )
        if self.scst_temperature <= 0:
            raise ValueError(f"scst_temperature={self.scst_temperature} must be > 0")

    @property
    def needs_teacher_images(self) -> bool:
        """The stage's CLIP-S reward reads the teacher's embeddings of the images."""
        return self.scst and self.scst_clip_weight > 0

    @property
    def needs_teacher_pixels(self) -> bool:
        """The stage's matcher reward reads the teacher's image grids: its pixels, even where embeddings are cached."""
        return self.scst and self.scst_matcher_weight > 0

    @property
    def needs_references(self) -> bool:
        """The stage's CIDEr-D reward reads every reference caption of the batch."""
        return self.scst and self.scst_cider_weight > 0


@dataclass
class ClipCapTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus how evaluation captions the validation split."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh in output_dir instead of resuming from its last checkpoint."}
    )
    generation_num_beams: int = field(default=5, metadata={"help": "Beam size of the evaluation captions."})
    generation_max_new_tokens: int = field(default=40, metadata={"help": "Longest evaluation caption in tokens."})
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "Block repeated n-grams when captioning (0: off; captions may repeat a phrase)."}
    )
    eval_captions: bool = field(
        default=True, metadata={"help": "Caption the evaluation split at every evaluation and score the captions."}
    )
    eval_caption_batch_size: int = field(default=50, metadata={"help": "Images per generate() call in evaluation."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs the image and caption columns."}
    )
    report_to: None | str | list[str] = field(
        default="auto",
        metadata={"help": "Integrations to log to; 'auto': TensorBoard when it is installed, else none."},
    )

    def __getstate__(self):
        """Pickled without tokens: the Trainer saves these arguments as training_args.bin in every checkpoint and in
        the model directory that `push_to_hub` uploads. `to_dict` (logs, TensorBoard) already masks them."""
        return {key: None if key.endswith("_token") else value for key, value in self.__dict__.items()}

    def _precision_device(self) -> str:
        """The device type training will run on, known before `TrainingArguments.__post_init__` sets `device` up."""
        if self.use_cpu:
            return "cpu"
        if is_torch_xla_available():
            return "xla"
        if torch.backends.mps.is_available():
            return "mps"
        return "cuda" if torch.cuda.is_available() else "cpu"

    def __post_init__(self):
        if self.report_to == "auto":
            self.report_to = "tensorboard" if is_tensorboard_available() else "none"
        if self.bf16:  # bf16 only where it is native (clipcap.precision): a GPU without it is refused by the
            device = self._precision_device()  # Trainer, a CPU without it emulates it, 8x slower than fp32
            self.bf16 = resolve_bf16(True, device, "training (--bf16)")
            if self.bf16 and device == "cpu":  # transformers takes bf16 on a CPU only with use_cpu; there is no GPU
                self.use_cpu = True
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if self.dataloader_num_workers > cpus:  # more workers than CPUs only compete with the training process
            logger.warning(
                "dataloader_num_workers=%d is more than the %d CPUs this process may use: %d workers",
                self.dataloader_num_workers,
                cpus,
                cpus,
            )
            self.dataloader_num_workers = cpus
        super().__post_init__()
