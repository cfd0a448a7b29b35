# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""`CLIPGuidedTrainer`: a `transformers.Trainer` whose loss adds the CLIP losses of `clipcap.losses` to the caption
cross-entropy:

    L = L_ce + lambda_cos * L_cos + lambda_con * L_con + lambda_div * L_div

Every term is logged on its own (`loss_ce`, `loss_cos`, `loss_con`, `loss_div`, and `eval_` versions). A weight of
0 skips the term and the teacher compute it needs. Teacher embeddings come from the dataset (columns
`teacher_image_embeds`, `teacher_text_embeds`, written by `prepare_dataset.py` or `run_train.py`) when present,
else from the frozen teacher on the fly. The teacher is held by the trainer, never by the model, so it is never
saved in a checkpoint.

Evaluation adds caption metrics to the eval loss: the model captions the evaluation split (batched beam search
through `clipcap.inference`) and `clipcap.metrics.score_captions` scores the captions: CLIP-S with the teacher,
BLEU-1..4, CIDEr, diversity, and, when the split carries synthetic scenes, semantic accuracy. The captions, scores
and checker errors of the latest evaluation are the public `last_caption_evaluation`. In a multi-process run each
process captions a shard, after every process has taken rank 0's BatchNorm statistics (`clipcap.distributed`): all of
them caption with the model that is saved.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging

from clipcap.checkpoints import write_checkpoint_manifest
from clipcap.collator import TEACHER_INPUTS, CaptionCollator
from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN
from clipcap.distributed import broadcast_buffers, match_gradient_layouts
from clipcap.inference import caption_images
from clipcap.losses import (
    contrastive_loss,
    cosine_alignment_loss,
    cross_image_similarity_loss,
    gather_features,
    repetition_unlikelihood_loss,
)
from clipcap.metrics import load_metric, scenes_of, score_captions
from clipcap.training_args import CLIPGuidanceArguments

logger = logging.get_logger(__name__)

# The COCO metrics of the evaluations during training: METEOR and ROUGE-L are left to run_eval.py (METEOR starts Java).
EVALUATION_COCO_METRICS = ("bleu", "cider")


@dataclass
class CaptionEvaluation:
    """The captions of one evaluation (in the evaluation split's order) and their scores, at a training step."""

    step: int
    captions: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    errors: list[list[str]] | None = None  # each caption's errors by the checker, on the synthetic scenes


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; raised before the backward pass, so the weights are not touched."""


class _CollatorEpoch(TrainerCallback):
    """Tells the collator which epoch begins (a resumed run starts inside the epoch it was saved in)."""

    def __init__(self, collator: CaptionCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch + 1e-9)


class CLIPGuidedTrainer(Trainer):
    """`Trainer` with the CLIP-guided loss, per-term logging and caption metrics in evaluation.

    Args:
        guidance (`CLIPGuidanceArguments`): loss weights and teacher options.
        teacher (`clipcap.teacher.CLIPTeacher`, *optional*): the frozen teacher; needed when a term is on and the
            dataset has no cache, and for CLIP-S in evaluation.
        All other arguments are the `Trainer`'s; `processing_class` should be the `ClipCapProcessor` (it is saved
        with every checkpoint, so a checkpoint directory loads with `from_pretrained` on its own).
    """

    training_stage = "CLIP guidance"  # what the model was trained with, for a Hub commit message

    def __init__(
        self,
        *args,
        guidance: CLIPGuidanceArguments,
        teacher=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.guidance, self.teacher = guidance, teacher
        self.last_caption_evaluation: CaptionEvaluation | None = None
        self._clip_metric = None  # the clip_score evaluate module with the teacher, loaded at the first evaluation
        # The CLIP terms are batch means, so the cross-entropy is one too, and every term is divided by the number of
        # accumulation steps alike (the model is not handed `num_items_in_batch`).
        self.model_accepts_loss_kwargs = False
        self._term_sums = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._term_counts = {"train": defaultdict(int), "eval": defaultdict(int)}
        if self.teacher is not None:
            self.teacher.to(self.args.device)
        match_gradient_layouts(self.model)  # before DDP builds its gradient buckets from the parameters' strides
        if isinstance(self.data_collator, CaptionCollator):
            self.add_callback(_CollatorEpoch(self.data_collator))

    # ----------------------------------------------------------------------------------------------------- the loss

    def _teacher_embeddings(self, inputs: dict, kind: str) -> torch.Tensor:
        cached = inputs.get(f"teacher_{kind}_embeds")
        if cached is not None:
            return torch.nn.functional.normalize(cached.float(), dim=-1)
        if self.teacher is None:
            raise ValueError(
                f"loss term needs teacher {kind} embeddings: the dataset has no cache and no teacher is set"
            )
        if kind == "image":
            return self.teacher.embed_pixel_values(inputs["teacher_pixel_values"])
        return self.teacher.embed_input_ids(inputs["teacher_input_ids"])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        caption_ids = inputs.pop("caption_ids", None)
        teacher_inputs = {key: inputs.pop(key) for key in TEACHER_INPUTS if key in inputs}
        guidance = self.guidance
        # Logits of every caption position are needed only by L_div; otherwise the LM head skips padding. Kept: the
        # caption's positions and the one before (the prefix's last), never the rest of the prefix.
        return_logits = guidance.lambda_div > 0 or return_outputs
        caption_length = inputs["labels"].shape[1]
        outputs = model(**inputs, return_logits=return_logits, logits_to_keep=caption_length + 1)
        terms = {"ce": outputs.loss}
        if guidance.lambda_cos > 0:
            with torch.no_grad():
                image_embeds = self._teacher_embeddings(teacher_inputs, "image")
            terms["cos"] = cosine_alignment_loss(outputs.z, image_embeds.to(outputs.z.device))
        if guidance.lambda_con > 0:
            with torch.no_grad():
                text_embeds = self._teacher_embeddings(teacher_inputs, "text").to(outputs.z.device)
                negatives = None
                if "teacher_negative_input_ids" in teacher_inputs:  # NegCLIP's hard negatives, this process's own
                    negatives = self.teacher.embed_input_ids(teacher_inputs["teacher_negative_input_ids"])
            z, ids = outputs.z, caption_ids.to(outputs.z.device)
            if guidance.gather_negatives:
                z, text_embeds, ids = gather_features(z, text_embeds, ids)
            terms["con"] = contrastive_loss(
                z,
                text_embeds,
                guidance.contrastive_logit_scale,
                ids,
                negatives=None if negatives is None else negatives.to(z.device),
            )
        if guidance.lambda_div > 0:
            labels = inputs["labels"]
            label_logits = outputs.logits[:, :-1]  # position j predicts labels[:, j]; the last, the next token
            terms["div"] = repetition_unlikelihood_loss(label_logits, labels) + cross_image_similarity_loss(
                label_logits, labels, caption_ids.to(labels.device) if caption_ids is not None else None
            )
        self._check_finite(terms, model.training)
        weights = {"ce": 1.0, "cos": guidance.lambda_cos, "con": guidance.lambda_con, "div": guidance.lambda_div}
        loss = sum(weights[name] * value for name, value in terms.items())

        mode = "train" if model.training else "eval"
        for name, value in terms.items():
            self.record(mode, f"loss_{name}", value)
        return (loss, outputs) if return_outputs else loss

    def record(self, mode: str, name: str, value: torch.Tensor | float) -> None:
        """Add a value to what the next log averages as `name` (`eval_name` in evaluation); tensors are kept as they
        are, so there is no device sync until the log."""
        value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        self._term_sums[mode][name] = self._term_sums[mode][name] + value
        self._term_counts[mode][name] += 1

    def _check_finite(self, terms: dict[str, torch.Tensor], training: bool) -> None:
        """Stop with `NonFiniteLossError` naming the term and the step when any term is NaN or infinite anywhere.

        This runs before the backward pass, so no NaN reaches a gradient or a weight: the model stays as the last
        step left it, and the last checkpoint is untouched. (Skipping the step instead would still let the
        optimizer's momentum and weight decay move the weights, and a run that diverged would skip forever.) Every
        process takes part, so all of them stop together instead of one waiting forever in the next all-reduce. The
        Trainer already reads the loss on every step, so the check adds no device sync of consequence.
        """
        finite = torch.stack([value.detach().float() for value in terms.values()]).isfinite()
        if self.accelerator.num_processes > 1:
            finite = self.accelerator.gather(finite[None]).all(dim=0)
        if bool(finite.all()):
            return
        name = list(terms)[int((~finite).nonzero()[0])]
        value = float(terms[name].detach())
        where = f"step {self.state.global_step + 1}" if training else f"evaluation at step {self.state.global_step}"
        raise NonFiniteLossError(
            f"L_{name} is {value} at {where}; training stopped before the update, so the weights are those of step "
            f"{self.state.global_step} and the checkpoints are intact. Lower the learning rate, or check the data "
            "(L_cos and L_con read the teacher's embeddings)"
        )

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, then its manifest (`write_checkpoint_manifest`). Older checkpoints are rotated
        out only once the new one is whole, so an interrupted save never costs the last good checkpoint."""
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            write_checkpoint_manifest(os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"))
            rotate_checkpoints(
                run_dir, save_total_limit=limit, best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True
            )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Every process first takes rank 0's BatchNorm statistics (`clipcap.distributed.broadcast_buffers`), so
        the model saved is the one every process holds."""
        broadcast_buffers(self.accelerator.unwrap_model(self.model))
        super().save_model(output_dir, _internal_call)

    def create_model_card(self, *args, **kwargs) -> None:
        """Keep the model card `run_train.py` wrote (data, teacher, loss weights, metrics): `Trainer.push_to_hub`
        would replace it with a generic one. Without a card, the Trainer's."""
        if not Path(self.args.output_dir, "README.md").exists():
            super().create_model_card(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term (and of every other `record`ed value) since the last log (`loss_ce`, ... /
        `eval_loss_ce`, ...), averaged over the processes too (every process records the same names in one order)."""
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        sums, counts = self._term_sums[mode], self._term_counts[mode]
        for name in list(sums):
            if counts[name]:
                mean = torch.as_tensor(sums[name] / counts[name], dtype=torch.float32, device=self.args.device)
                if self.accelerator.num_processes > 1:
                    mean = self.accelerator.reduce(mean, reduction="mean")
                logs[f"{prefix}{name}"] = round(float(mean), 6)
        sums.clear()
        counts.clear()
        super().log(logs, start_time)

    # ----------------------------------------------------------------------------------------------- evaluation

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        """The Trainer's evaluation, after every process takes rank 0's BatchNorm statistics: each process
        captions its shard of the split, and all of them must caption with the same model, the one rank 0 saves."""
        broadcast_buffers(self.accelerator.unwrap_model(self.model))
        return super().evaluate(*args, **kwargs)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.args.eval_captions and self.eval_dataset is not None and metric_key_prefix == "eval":
            scores = self.caption_metrics(self.eval_dataset)
            output.metrics.update({f"{metric_key_prefix}_{key}": value for key, value in scores.items()})
        return output

    @torch.no_grad()
    def caption_dataset(self, dataset, batch_size: int | None = None) -> list[str]:
        """Caption every image of `dataset` with the model's generation settings (each process a shard, gathered)."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        indices = list(range(rank, len(dataset), world))
        images = dataset.select(indices)[IMAGE_COLUMN]
        captions = caption_images(
            model, self.processing_class, images, batch_size or self.args.eval_caption_batch_size
        )
        model.train(was_training)
        pairs = gather_object(list(zip(indices, captions))) if world > 1 else list(zip(indices, captions))
        ordered = dict(pairs)
        return [ordered[i] for i in range(len(dataset))]

    def caption_metrics(self, dataset) -> dict[str, float]:
        """Caption `dataset` and score the captions (`clipcap.metrics.score_captions`): CLIP-S by the teacher,
        BLEU, CIDEr, diversity, and semantic accuracy on the synthetic scenes. The captions, scores and the checker's
        errors become `last_caption_evaluation`."""
        predictions = self.caption_dataset(dataset)
        image_embeds = None
        if self.teacher is not None:
            if "teacher_image_embeds" in dataset.column_names and self.guidance.use_teacher_cache:
                image_embeds = torch.tensor(dataset["teacher_image_embeds"][:])
            else:
                image_embeds = self.teacher.embed_pil_images(dataset[IMAGE_COLUMN]).cpu()
            if self._clip_metric is None:
                self._clip_metric = load_metric("clip_score", teacher=self.teacher)
        corpus, per_image = score_captions(
            predictions,
            dataset[CAPTION_COLUMN][:],
            image_embeds,
            self._clip_metric,
            scenes=scenes_of(dataset),
            coco_metrics=EVALUATION_COCO_METRICS,
            ref_clip_s=False,
        )
        scores = {key: round(value, 6) if isinstance(value, float) else value for key, value in corpus.items()}
        scores = {key: value for key, value in scores.items() if value is not None}  # SPICE: not computed here
        self.last_caption_evaluation = CaptionEvaluation(
            self.state.global_step, predictions, scores, per_image.get("errors")
        )
        return scores

    def final_evaluation(self) -> dict[str, float]:
        """The metrics of the evaluation made at the last training step, so that it is not run twice; otherwise (no
        such evaluation, captions off, or the best model loaded at the end) a new `evaluate()`."""
        evaluation = self.last_caption_evaluation
        if not self.args.load_best_model_at_end and evaluation is not None:
            for entry in reversed(self.state.log_history):
                if "eval_loss" in entry:
                    if entry.get("step") == self.state.global_step:
                        return dict(entry)
                    break
        return self.evaluate()
