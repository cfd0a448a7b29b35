# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""CLIP-guided training: the data collator and `CLIPGuidedTrainer`, a `transformers.Trainer` whose loss adds the
CLIP losses of `clip_guidance.py` to the caption cross-entropy:

    L = L_ce + lambda_cos * L_cos + lambda_con * L_con + lambda_div * L_div

Every term is logged on its own (`loss_ce`, `loss_cos`, `loss_con`, `loss_div`, and `eval_` versions). A weight of
0 skips the term and the teacher compute it needs. Teacher embeddings come from the dataset (columns
`teacher_image_embeds`, `teacher_text_embeds`, written by `prepare_dataset.py` or `run_train.py`) when present,
else from the frozen teacher on the fly. The teacher is held by the trainer, never by the model, so it is never
saved in a checkpoint.

Evaluation adds caption metrics to the eval loss: the model captions the evaluation split (batched beam search
through `generate`) and `metrics.py` scores the captions: CLIP-S with the teacher, BLEU-4, CIDEr, distinct-2, and,
when the split carries synthetic scenes, semantic accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging

from cli_utils import atomic_write_text
from clip_guidance import (
    contrastive_loss,
    cosine_alignment_loss,
    cross_image_similarity_loss,
    file_sha256,
    gather_features,
    repetition_unlikelihood_loss,
)

logger = logging.get_logger(__name__)

LOSS_TERMS = ("ce", "cos", "con", "div")


def caption_id(caption: str) -> int:
    """A stable 63-bit id of a caption's text: rows with equal ids are positives of each other in `L_con`."""
    return int.from_bytes(hashlib.blake2b(caption.encode(), digest_size=8).digest(), "little") >> 1


# ------------------------------------------------------------------------------------------------ checkpoints
# The Trainer writes a checkpoint's files one after another, trainer_state.json last. A run killed in between leaves
# a directory that `get_last_checkpoint` would pick and `train(resume_from_checkpoint=...)` would fail on, or worse,
# load half. So every checkpoint this trainer writes gets a manifest (each file's size and SHA-256, written after the
# files are on disk and renamed into place), and a run resumes only from a checkpoint that passes it.

CHECKPOINT_MANIFEST = "checkpoint_manifest.json"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def write_checkpoint_manifest(checkpoint: str | os.PathLike) -> None:
    """Flush every file of `checkpoint` to disk, then record its size and SHA-256 in the manifest."""
    checkpoint = Path(checkpoint)
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != CHECKPOINT_MANIFEST):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(checkpoint).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    atomic_write_text(checkpoint / CHECKPOINT_MANIFEST, json.dumps({"files": files}, indent=1))


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it is whole.

    With a manifest every listed file must be there with its size and hash. Without one (a checkpoint written by the
    plain `Trainer`, or a run killed after its last file and before the manifest) trainer_state.json, the file the
    Trainer writes last, must be there and parse.
    """
    checkpoint = Path(checkpoint)
    manifest = checkpoint / CHECKPOINT_MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError):
            return f"its {CHECKPOINT_MANIFEST} is unreadable"
        for name, expected in files.items():
            path = checkpoint / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
                return f"{name} differs from its manifest (truncated or changed)"
        return None
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "it has no trainer_state.json (the run stopped while writing it)"
    except ValueError:
        return "its trainer_state.json is truncated"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike, move_aside: bool = True) -> str | None:
    """The latest checkpoint in `output_dir` that is whole (`checkpoint_problem`), or None.

    Later checkpoints that are not whole are logged and, with `move_aside`, renamed `incomplete-checkpoint-N` (kept
    for inspection; no resume or rotation looks at them), so the resumed run can write checkpoint-N afresh.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = sorted(
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if path.is_dir() and (match := _CHECKPOINT_NAME.match(path.name))
    )
    for _, path in reversed(candidates):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        message = f"Not resuming from {path}: {problem}"
        if move_aside:
            aside = path.with_name(f"incomplete-{path.name}")
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
            message += f"; moved to {aside}"
        logger.warning(message)
    return None


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; raised before the backward pass, so the weights are not touched."""


@dataclass
class CLIPGuidanceArguments:
    """The CLIP teacher and the weights of the CLIP-guided loss terms."""

    clip_model: str | None = field(
        default=None, metadata={"help": "open_clip architecture of the teacher (ViT-B-32 for the real run)."}
    )
    clip_pretrained: str | None = field(
        default=None,
        metadata={
            "help": "Teacher weights: an open_clip tag ('openai'), a checkpoint file, or a train_clip_teacher.py dir."
        },
    )
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

    def __post_init__(self):
        for name in ("lambda_cos", "lambda_con", "lambda_div"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")

    @property
    def needs_teacher_images(self) -> bool:
        return self.lambda_cos > 0

    @property
    def needs_teacher_texts(self) -> bool:
        return self.lambda_con > 0

    @property
    def uses_student_embedding(self) -> bool:
        return self.lambda_cos > 0 or self.lambda_con > 0


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

    def __post_init__(self):
        if self.report_to == "auto":
            from transformers.integrations import is_tensorboard_available

            self.report_to = "tensorboard" if is_tensorboard_available() else "none"
        super().__post_init__()


def _float_tensor(rows: list) -> torch.Tensor:
    """Nested lists of floats (how `datasets` returns a row's vectors) -> one float32 tensor, through numpy (7 times
    as fast as `torch.tensor` on the lists of a batch of 16 x 768)."""
    return torch.from_numpy(np.asarray(rows, dtype=np.float32))


class CaptionCollator:
    """Dataset rows -> a training batch.

    One reference caption (never an empty one) is drawn per image per epoch. With `seed` and a `row_index` column
    the draw is a pure function of (seed, epoch, row), so a resumed run draws exactly what the uninterrupted run drew
    (the data loader collates a batch ahead, so a draw from a global generator would not survive a checkpoint);
    `CLIPGuidedTrainer` sets `epoch`. Otherwise torch's global generator draws. Captions are tokenised with EOS
    and padding labels -100 (`ClipCapProcessor.encode_captions`). Teacher inputs are added only for the terms that
    need them: cached embeddings when the rows have them, else the teacher's own image transform and tokenizer output.
    Rows with `encoder_features` (a frozen encoder's output, `add_encoder_features`) become `image_features`, and their
    images are not even decoded unless the teacher has to see them.
    """

    def __init__(
        self,
        processor,
        caption_column: str = "captions",
        image_column: str = "image",
        teacher=None,
        teacher_images: bool = False,
        teacher_texts: bool = False,
        seed: int | None = None,
    ):
        self.processor, self.caption_column, self.image_column = processor, caption_column, image_column
        self.teacher, self.teacher_images, self.teacher_texts = teacher, teacher_images, teacher_texts
        self.seed, self.epoch = seed, 0

    def reads_images(self, columns) -> bool:
        """Whether rows with these columns have their images decoded: for the model, unless the rows carry a frozen
        encoder's `encoder_features`, and for the teacher, unless they carry its image embeddings."""
        return "encoder_features" not in columns or (self.teacher_images and "teacher_image_embeds" not in columns)

    def draw(self, row: dict, count: int) -> int:
        if self.seed is not None and "row_index" in row:
            return random.Random(f"{self.seed}/{self.epoch}/{row['row_index']}").randrange(count)
        return int(torch.randint(count, ()))

    def __call__(self, rows: list[dict]) -> dict:
        choices, captions = [], []
        for row in rows:
            references = row[self.caption_column]
            if isinstance(references, str):
                references = [references]
            usable = [i for i, caption in enumerate(references) if caption and caption.strip()]
            if not usable:
                raise ValueError("a row has no caption; run_train.py and prepare_dataset.py drop such rows")
            choices.append(usable[self.draw(row, len(usable))])  # the index into all references (teacher cache)
            captions.append(references[choices[-1]])
        features = "encoder_features" in rows[0]
        images = [row[self.image_column].convert("RGB") for row in rows] if self.reads_images(rows[0]) else []
        batch = dict(self.processor(images=None if features else images, text=captions))
        if features:
            batch["image_features"] = _float_tensor([row["encoder_features"] for row in rows])
        batch["caption_ids"] = torch.tensor([caption_id(caption) for caption in captions])
        if self.teacher_images:
            if "teacher_image_embeds" in rows[0]:
                batch["teacher_image_embeds"] = _float_tensor([row["teacher_image_embeds"] for row in rows])
            else:
                batch["teacher_pixel_values"] = torch.stack([self.teacher.preprocess(image) for image in images])
        if self.teacher_texts:
            if "teacher_text_embeds" in rows[0]:
                chosen = [row["teacher_text_embeds"][choice] for row, choice in zip(rows, choices, strict=True)]
                batch["teacher_text_embeds"] = _float_tensor(chosen)
            else:
                batch["teacher_input_ids"] = self.teacher.tokenizer(captions)
        return batch


def add_encoder_features(dataset, model, processor, image_column: str = "image", batch_size: int = 64):
    """Add a frozen encoder's output for every image as the column `encoder_features`, computed once.

    A frozen encoder (eval mode, no gradient) maps an image to the same features at every epoch, and the image
    transform is deterministic, so running it at every step is waste: with the column, `CaptionCollator` passes
    `image_features` and training neither decodes an image nor runs the encoder (bench/bench_teacher_cache.py
    measures the step both ways). The work is a `Dataset.map` named by the encoder's weights and the image
    transform, so a rerun with the same encoder finds it in the datasets cache, and another encoder never does.
    """
    import datasets

    if not model.encoder.frozen:
        raise ValueError("only a frozen encoder's features can be computed once (set freeze_encoder)")
    weights = hashlib.sha256()
    for name, tensor in model.encoder.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    image_transform = processor.image_processor.to_dict()

    @torch.no_grad()
    def compute(batch):
        pixel_values = processor(images=[image.convert("RGB") for image in batch[image_column]])["pixel_values"]
        features = model.get_image_features(pixel_values.to(model.device)).float().cpu().numpy()
        return {"encoder_features": features}

    was_training = model.training
    model.eval()
    try:
        return dataset.map(
            compute,
            batched=True,
            batch_size=batch_size,
            desc="Encoder features",
            new_fingerprint=datasets.fingerprint.Hasher.hash(
                [dataset._fingerprint, weights.hexdigest(), image_transform, image_column, "encoder-features-v1"]
            ),
        )
    finally:
        model.train(was_training)


class _CollatorEpoch(TrainerCallback):
    """Tells the collator which epoch begins (a resumed run starts inside the epoch it was saved in)."""

    def __init__(self, collator: CaptionCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch + 1e-9)


TEACHER_INPUTS = ("teacher_image_embeds", "teacher_pixel_values", "teacher_text_embeds", "teacher_input_ids")


class CLIPGuidedTrainer(Trainer):
    """`Trainer` with the CLIP-guided loss, per-term logging and caption metrics in evaluation.

    Args:
        guidance (`CLIPGuidanceArguments`): loss weights and teacher options.
        teacher (`clip_guidance.CLIPTeacher`, *optional*): the frozen teacher; needed when a term is on and the
            dataset has no cache, and for CLIP-S in evaluation.
        caption_column (`str`): the evaluation split's reference captions.
        All other arguments are the `Trainer`'s; `processing_class` should be the `ClipCapProcessor` (it is saved
        with every checkpoint, so a checkpoint directory loads with `from_pretrained` on its own).
    """

    def __init__(
        self, *args, guidance: CLIPGuidanceArguments, teacher=None, caption_column: str = "captions", **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.guidance, self.teacher, self.caption_column = guidance, teacher, caption_column
        # The CLIP terms are batch means, so the cross-entropy is one too, and every term is divided by the number of
        # accumulation steps alike (the model is not handed `num_items_in_batch`).
        self.model_accepts_loss_kwargs = False
        self._term_sums = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._term_counts = {"train": defaultdict(int), "eval": defaultdict(int)}
        if self.teacher is not None:
            self.teacher.to(self.args.device)
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
            return self.teacher.encode_images(inputs["teacher_pixel_values"])
        return self.teacher.encode_tokens(inputs["teacher_input_ids"])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        caption_ids = inputs.pop("caption_ids", None)
        teacher_inputs = {key: inputs.pop(key) for key in TEACHER_INPUTS if key in inputs}
        guidance = self.guidance
        # Logits of every position are needed only by L_div; otherwise the LM head skips padding.
        outputs = model(**inputs, return_logits=guidance.lambda_div > 0 or return_outputs)
        terms = {"ce": outputs.loss}
        if guidance.lambda_cos > 0:
            with torch.no_grad():
                image_embeds = self._teacher_embeddings(teacher_inputs, "image")
            terms["cos"] = cosine_alignment_loss(outputs.z, image_embeds.to(outputs.z.device))
        if guidance.lambda_con > 0:
            with torch.no_grad():
                text_embeds = self._teacher_embeddings(teacher_inputs, "text").to(outputs.z.device)
            z, ids = outputs.z, caption_ids.to(outputs.z.device)
            if guidance.gather_negatives:
                z, text_embeds, ids = gather_features(z, text_embeds, ids)
            terms["con"] = contrastive_loss(z, text_embeds, guidance.contrastive_logit_scale, ids)
        if guidance.lambda_div > 0:
            labels = inputs["labels"]
            terms["div"] = repetition_unlikelihood_loss(outputs.logits, labels) + cross_image_similarity_loss(
                outputs.logits, labels, caption_ids.to(labels.device) if caption_ids is not None else None
            )
        self._check_finite(terms, model.training)
        weights = {"ce": 1.0, "cos": guidance.lambda_cos, "con": guidance.lambda_con, "div": guidance.lambda_div}
        loss = sum(weights[name] * value for name, value in terms.items())

        mode = "train" if model.training else "eval"
        for name, value in terms.items():  # kept as tensors: no device sync until the terms are logged
            self._term_sums[mode][name] = self._term_sums[mode][name] + value.detach().float()
            self._term_counts[mode][name] += 1
        return (loss, outputs) if return_outputs else loss

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

    def create_model_card(self, *args, **kwargs) -> None:
        """Keep the model card `run_train.py` wrote (data, teacher, loss weights, metrics): `Trainer.push_to_hub`
        would replace it with a generic one. Without a card, the Trainer's."""
        if not Path(self.args.output_dir, "README.md").exists():
            super().create_model_card(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last log (`loss_ce`, ... / `eval_loss_ce`, ...)."""
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        sums, counts = self._term_sums[mode], self._term_counts[mode]
        for name in LOSS_TERMS:
            if counts[name]:
                mean = torch.as_tensor(sums[name] / counts[name], dtype=torch.float32, device=self.args.device)
                if self.accelerator.num_processes > 1:
                    mean = self.accelerator.reduce(mean, reduction="mean")
                logs[f"{prefix}loss_{name}"] = round(float(mean), 6)
        sums.clear()
        counts.clear()
        super().log(logs, start_time)

    # ----------------------------------------------------------------------------------------------- evaluation

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
        from accelerate.utils import gather_object

        from caption import caption_images

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        batch_size = batch_size or self.args.eval_caption_batch_size
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        indices = list(range(rank, len(dataset), world))
        captions = []
        for first in range(0, len(indices), batch_size):
            rows = dataset.select(indices[first : first + batch_size])
            captions.extend(caption_images(model, self.processing_class, rows["image"][:]))
        model.train(was_training)
        pairs = gather_object(list(zip(indices, captions))) if world > 1 else list(zip(indices, captions))
        ordered = dict(pairs)
        return [ordered[i] for i in range(len(dataset))]

    def caption_metrics(self, dataset) -> dict[str, float]:
        """Caption `dataset` and score: CLIP-S (teacher), BLEU-4, CIDEr, distinct-2, semantic accuracy if synthetic."""
        from metrics import clip_score, coco_caption_scores, distinct_n, semantic_accuracy

        predictions = self.caption_dataset(dataset)
        references = dataset[self.caption_column][:]
        scores = {}
        coco, _ = coco_caption_scores(
            predictions, [[r] if isinstance(r, str) else r for r in references], metrics=("bleu", "cider")
        )
        scores["bleu_4"], scores["cider"] = coco["bleu_4"], coco["cider"]
        scores["distinct_2"] = distinct_n(predictions, 2)
        scores["mean_length"] = sum(len(p.split()) for p in predictions) / max(len(predictions), 1)
        if self.teacher is not None:
            if "teacher_image_embeds" in dataset.column_names and self.guidance.use_teacher_cache:
                image_embeds = torch.tensor(dataset["teacher_image_embeds"][:])
            else:
                image_embeds = self.teacher.embed_images(dataset["image"]).cpu()
            caption_embeds = self.teacher.encode_texts(predictions).cpu()
            scores["clip_s"] = float(clip_score(image_embeds, caption_embeds).mean())
        if "scene" in dataset.column_names:
            from synthetic import Scene

            scenes = [Scene.from_json(text) for text in dataset["scene"][:]]
            scores.update(semantic_accuracy(predictions, scenes))
        self._last_captions = predictions
        return {key: round(value, 6) if isinstance(value, float) else value for key, value in scores.items()}
