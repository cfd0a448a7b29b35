#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Train a ClipCap captioner with CLIP guidance on a dataset prepared by `prepare_dataset.py`.

    accelerate launch run_train.py configs/demo.yaml                       # offline demo, CPU
    accelerate launch run_train.py configs/open_images_home_appliance.yaml  # the real run
    accelerate launch run_train.py configs/demo.yaml --lambda_cos 0 --lambda_con 0 --output_dir outputs/demo-ce
    python run_train.py --dataset_dir data/synthetic --output_dir outputs/x --clip_model ... --clip_pretrained ...

One `.yaml`/`.json` file holds every argument (the model, data, CLIP-guidance and training dataclasses below, plus
all of `transformers.TrainingArguments`), or they come as flags, or flags after the file override it. A run in an
`output_dir` that already has checkpoints resumes from the last one.
"""

import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from transformers import EarlyStoppingCallback, HfArgumentParser, set_seed

from cli_utils import keep_freed_memory, parse_config_and_flags
from clip_guidance import CLIPTeacher, check_teacher_cache, embed_dataset
from configuration_clipcap import ClipCapConfig
from modeling_clipcap import ClipCapForCaptioning, pickle_only_weights
from processing_clipcap import ClipCapProcessor
from trainer_clipcap import (
    CaptionCollator,
    ClipCapTrainingArguments,
    CLIPGuidanceArguments,
    CLIPGuidedTrainer,
    NonFiniteLossError,
    add_encoder_features,
    checkpoint_problem,
    last_complete_checkpoint,
)

logger = logging.getLogger("run_train")


@dataclass
class ModelArguments:
    """The captioner: continue from a saved model, or build one from these fields (`ClipCapConfig`'s)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved ClipCap model (directory or Hub id) to start from."}
    )
    encoder_name: str = field(default="mobilenet_v2", metadata={"help": "torchvision or timm backbone name."})
    encoder_pretrained: bool = field(default=True, metadata={"help": "Start the encoder from ImageNet weights."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Keep the encoder fixed."})
    cache_encoder_features: bool = field(
        default=True,
        metadata={"help": "With freeze_encoder: compute each training image's features once, not at every step."},
    )
    encoder_features: str = field(default="pooled", metadata={"help": "'pooled' or 'grid' (transformer mapper)."})
    image_size: int = field(default=224, metadata={"help": "Side of the square image the encoder sees."})
    image_crop_fraction: float | None = field(
        default=None, metadata={"help": "Centre crop of the resized image; default: the encoder weights' (0.875)."}
    )
    mapper_type: str = field(default="mlp", metadata={"help": "'mlp' or 'transformer'."})
    prefix_length: int = field(default=10, metadata={"help": "Prefix embeddings the decoder reads."})
    mapper_num_layers: int = field(default=8, metadata={"help": "Transformer mapper depth."})
    mapper_num_heads: int = field(default=8, metadata={"help": "Transformer mapper heads."})
    mapper_dropout: float = field(default=0.0, metadata={"help": "Dropout in the mapper."})
    decoder_name_or_path: str | None = field(
        default="distilgpt2", metadata={"help": "Pretrained GPT-2 weights (Hub id or directory); empty for random."}
    )
    decoder_layers: int | None = field(default=None, metadata={"help": "Random decoder: layers (default 6)."})
    decoder_width: int | None = field(default=None, metadata={"help": "Random decoder: n_embd (default 768)."})
    decoder_heads: int | None = field(default=None, metadata={"help": "Random decoder: heads (default 12)."})
    decoder_positions: int | None = field(default=None, metadata={"help": "Random decoder: context (default 1024)."})
    teacher_embed_dim: int | None = field(
        default=None, metadata={"help": "Size of z; default: the teacher's embedding size (0: no head)."}
    )
    max_caption_length: int = field(default=40, metadata={"help": "Longest training caption in tokens, EOS included."})
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Also load pickled weight files (.bin/.pt), which can run code; only for files you trust."},
    )


@dataclass
class DataArguments:
    dataset_dir: str = field(
        default="data/synthetic", metadata={"help": "A DatasetDict from prepare_dataset.py (directory or Hub id)."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split to evaluate on."})
    image_column: str = field(default="image", metadata={"help": "Column of images."})
    caption_column: str = field(default="captions", metadata={"help": "Column of reference captions (a list)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improving metric_for_best_model."}
    )
    save_every_epochs: float | None = field(
        default=None, metadata={"help": "Save (and evaluate) every this many epochs; sets save_steps and eval_steps."}
    )
    num_sample_captions: int = field(default=8, metadata={"help": "Validation captions printed at the end."})


ARGUMENT_CLASSES = (ModelArguments, DataArguments, CLIPGuidanceArguments, ClipCapTrainingArguments)


def parse_args(argv: list[str] | None = None):
    """Flags, or a .yaml/.json config file as the first argument, optionally followed by flags that override it
    (`run_train.py configs/demo.yaml --lambda_cos 0 --output_dir outputs/demo-ce`). Unknown keys and values of the
    wrong type are errors (`cli_utils.parse_config_and_flags`)."""
    return parse_config_and_flags(HfArgumentParser(ARGUMENT_CLASSES), argv)


def load_data(data_args: DataArguments) -> tuple[datasets.DatasetDict, dict]:
    """The prepared DatasetDict and its card metadata (source, teacher of the cached embeddings, ...).

    Rows without a caption are dropped and counted, and so are rows whose image does not decode, unless
    prepare_dataset.py made the dataset (it decoded every image then): a bad row never stops training halfway."""
    from prepare_dataset import describe_counts, drop_unusable_rows, load_prepared_dataset

    columns = [data_args.image_column, data_args.caption_column]
    required = {data_args.train_split: columns, data_args.eval_split: columns}
    dataset, metadata = load_prepared_dataset(data_args.dataset_dir, required)
    limits = {data_args.train_split: data_args.max_train_samples, data_args.eval_split: data_args.max_eval_samples}
    for split, limit in limits.items():
        if limit is not None:
            dataset[split] = dataset[split].select(range(min(limit, len(dataset[split]))))
        total = len(dataset[split])
        name = f"the {split!r} split of {data_args.dataset_dir}"
        columns = (data_args.image_column, data_args.caption_column)
        dataset[split], drops = drop_unusable_rows(dataset[split], *columns, metadata, name)
        if drops:
            kept = len(dataset[split])
            logger.warning("Dropped %d of %d %s rows (%s)", total - kept, total, split, describe_counts(drops))
    return datasets.DatasetDict({split: dataset[split] for split in limits}), metadata


def count_long_captions(dataset: datasets.Dataset, caption_column: str, processor: ClipCapProcessor) -> int:
    """How many reference captions are longer than the processor's `max_caption_length` (EOS included); they are
    truncated when tokenised, so the model learns their beginning only."""
    captions = [c for refs in dataset[caption_column][:] for c in ([refs] if isinstance(refs, str) else refs) if c]
    lengths = map(len, processor.tokenizer(captions, add_special_tokens=False)["input_ids"]) if captions else []
    return sum(length + 1 > processor.max_caption_length for length in lengths)


def build_config(model_args: ModelArguments, teacher: CLIPTeacher | None) -> ClipCapConfig:
    text_config = {
        key: value
        for key, value in {
            "n_layer": model_args.decoder_layers,
            "n_embd": model_args.decoder_width,
            "n_head": model_args.decoder_heads,
            "n_positions": model_args.decoder_positions,
        }.items()
        if value is not None
    }
    teacher_embed_dim = model_args.teacher_embed_dim
    if teacher_embed_dim is None:
        teacher_embed_dim = teacher.identity.embed_dim if teacher is not None else 512
    return ClipCapConfig(
        encoder_name=model_args.encoder_name,
        encoder_pretrained=model_args.encoder_pretrained,
        freeze_encoder=model_args.freeze_encoder,
        encoder_features=model_args.encoder_features,
        image_size=model_args.image_size,
        mapper_type=model_args.mapper_type,
        prefix_length=model_args.prefix_length,
        mapper_num_layers=model_args.mapper_num_layers,
        mapper_num_heads=model_args.mapper_num_heads,
        mapper_dropout=model_args.mapper_dropout,
        decoder_name_or_path=model_args.decoder_name_or_path or None,
        text_config=text_config,
        teacher_embed_dim=teacher_embed_dim,
    )


def prepare_teacher(
    dataset, metadata, guidance: CLIPGuidanceArguments, data_args: DataArguments, allow_pickle: bool = False
):
    """Load the teacher and make sure every split has its embeddings when a term needs them.

    A cache made by another teacher is refused; a missing cache is computed once here (`cache_teacher_embeddings`)
    or left to the trainer, which then runs the teacher on every batch.
    """
    needs_teacher = guidance.needs_teacher_images or guidance.needs_teacher_texts
    if not guidance.clip_model:
        if needs_teacher:
            raise ValueError(
                "lambda_cos / lambda_con need a teacher: set clip_model and clip_pretrained (or set both to 0)"
            )
        return dataset, None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = CLIPTeacher.from_pretrained(
        guidance.clip_model, guidance.clip_pretrained, device=device, allow_pickle=allow_pickle
    )
    cached = "teacher_image_embeds" in dataset[data_args.train_split].column_names
    if cached and guidance.use_teacher_cache:
        check_teacher_cache(metadata.get("teacher"), teacher.identity)
        logger.info("Using the dataset's cached embeddings of %s", teacher.identity.describe())
    elif cached:
        dataset = dataset.remove_columns(["teacher_image_embeds", "teacher_text_embeds"])
    if (not cached or not guidance.use_teacher_cache) and guidance.cache_teacher_embeddings:
        logger.info("Embedding every image and caption with %s once", teacher.identity.describe())
        for split in dataset:
            dataset[split] = embed_dataset(dataset[split], teacher, caption_column=data_args.caption_column)
    return dataset, teacher


def add_caption_lengths(dataset: datasets.Dataset, data_args: DataArguments, column: str) -> datasets.Dataset:
    """A `column` with each row's mean reference length in GPT-2 tokens, for `group_by_length` batching (batches of
    similar lengths waste little compute on padding)."""
    if column in dataset.column_names:
        return dataset
    from processing_clipcap import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    lengths = []
    for references in dataset[data_args.caption_column][:]:
        references = [references] if isinstance(references, str) else references
        ids = tokenizer(references, add_special_tokens=False)["input_ids"]
        lengths.append(round(sum(map(len, ids)) / max(len(ids), 1)) + 1)
    return dataset.add_column(column, lengths)


def last_evaluation(trainer: CLIPGuidedTrainer) -> dict:
    """The metrics of an evaluation made at the final step of training (so it is not run twice), or {}."""
    if trainer.args.load_best_model_at_end or not getattr(trainer, "_last_captions", None):
        return {}
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            return dict(entry) if entry.get("step") == trainer.state.global_step else {}
    return {}


def write_model_card(output_dir: str, summary: dict, args_by_group: dict, metadata: dict, teacher, config) -> None:
    """A model card naming the data, the teacher, the loss weights and the final metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    guidance = args_by_group["guidance"]
    eval_rows = "\n".join(
        f"| {key[len('eval_') :]} | {value:.4g} |"
        for key, value in summary.items()
        if key.startswith("eval_")
        and isinstance(value, (int, float))
        and "runtime" not in key
        and "per_second" not in key
    )
    teacher_line = teacher.identity.describe() if teacher is not None else "none (cross-entropy only)"
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-to-text",
        tags=["image-captioning", "clipcap", "clip-guided"],
        license="apache-2.0",
    )
    body = f"""
# ClipCap captioner (CLIP-guided)

`{config.encoder_name}` encoder ({config.encoder_features} features, {config.image_size} px) ->
{config.mapper_type} prefix mapper ({config.prefix_length} tokens) -> GPT-2 decoder
({config.text_config.n_layer} layers, width {config.text_config.n_embd}), trained by `run_train.py` with CLIP as the
teacher (training only; the teacher is not part of this model).

- Data: `{args_by_group["data"]["dataset_dir"]}` ({metadata.get("source", "unknown source")}), captions from
  `{args_by_group["data"]["caption_column"]}`.
- Teacher: {teacher_line}
- Loss: L_ce + {guidance["lambda_cos"]} L_cos + {guidance["lambda_con"]} L_con + {guidance["lambda_div"]} L_div
- Trained for {summary.get("epoch", 0):.3g} epochs, {summary.get("step", summary.get("global_step", 0))} steps.

## Evaluation ({args_by_group["data"]["eval_split"]} split)

| metric | value |
| --- | ---: |
{eval_rows}

## Use

```python
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("{output_dir}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{output_dir}", trust_remote_code=True)
captions = processor.batch_decode(model.generate(**processor(images=[image])))
```
"""
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}").save(Path(output_dir, "README.md"))


def main(argv: list[str] | None = None) -> int:
    """Train; a bad argument, file or dataset, or a loss that stops being finite, ends with one line and status 1."""
    try:
        return train(*parse_args(argv))
    except (OSError, ValueError, NonFiniteLossError) as error:
        print(f"run_train.py: error: {error}", file=sys.stderr)
        return 1


def find_checkpoint(training_args: ClipCapTrainingArguments, allow_pickle: bool = False) -> str | None:
    """The checkpoint to resume from: `resume_from_checkpoint`, else the last whole checkpoint in `output_dir`.
    Its model weights must be safetensors unless `allow_pickle`."""
    checkpoint = None
    if training_args.resume_from_checkpoint:
        checkpoint = training_args.resume_from_checkpoint
        if not os.path.isdir(checkpoint):
            raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint directory {checkpoint}")
        if problem := checkpoint_problem(checkpoint):
            raise ValueError(f"cannot resume from {checkpoint}: {problem}")
    elif not training_args.overwrite_output_dir and os.path.isdir(training_args.output_dir):
        with training_args.main_process_first(desc="finding the last whole checkpoint"):
            checkpoint = last_complete_checkpoint(training_args.output_dir, move_aside=training_args.should_save)
        if checkpoint is None and Path(training_args.output_dir, "model.safetensors").exists():
            raise FileExistsError(
                f"{training_args.output_dir} holds a trained model and no checkpoint to resume; "
                "pass --overwrite_output_dir to train again"
            )
    if checkpoint is not None:
        if not allow_pickle and (pickles := pickle_only_weights(checkpoint)):
            raise OSError(
                f"the checkpoint {checkpoint} has its model weights only as a pickle ({', '.join(pickles)}), which "
                "can run code when loaded; pass --allow_pickle if you trust it"
            )
        logger.info("Resuming from %s", checkpoint)
    return checkpoint


def train(model_args, data_args, guidance, training_args) -> int:
    # 1. Logging, seed, and the checkpoint to resume from.
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    if training_args.should_log:  # as transformers' examples: INFO on the main process unless --log_level says
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(
        "Process %d of %d, device %s", training_args.process_index, training_args.world_size, training_args.device
    )
    checkpoint = find_checkpoint(training_args, model_args.allow_pickle)
    set_seed(training_args.seed)

    # 2. Data, and the teacher with its embeddings.
    dataset, metadata = load_data(data_args)
    dataset, teacher = prepare_teacher(dataset, metadata, guidance, data_args, model_args.allow_pickle)
    train_dataset, eval_dataset = dataset[data_args.train_split], dataset[data_args.eval_split]
    if "row_index" not in train_dataset.column_names:  # the collator's caption draws are keyed by row
        train_dataset = train_dataset.add_column("row_index", list(range(len(train_dataset))))
    if training_args.train_sampling_strategy == "group_by_length":
        train_dataset = add_caption_lengths(train_dataset, data_args, training_args.length_column_name)
    logger.info("Data: %d training and %d evaluation images", len(train_dataset), len(eval_dataset))

    # 3. Model and processor.
    if model_args.model_name_or_path:
        model = ClipCapForCaptioning.from_pretrained(
            model_args.model_name_or_path, allow_pickle=model_args.allow_pickle
        )
        processor = ClipCapProcessor.from_pretrained(model_args.model_name_or_path)
    else:
        config = build_config(model_args, teacher)
        model = ClipCapForCaptioning.from_pretrained_parts(config)
        processor = ClipCapProcessor.from_config(
            model.config,
            max_caption_length=model_args.max_caption_length,
            crop_fraction=model_args.image_crop_fraction,
        )
    if long_captions := count_long_captions(train_dataset, data_args.caption_column, processor):
        logger.warning(
            "%d training captions are longer than max_caption_length=%d tokens and are truncated to it",
            long_captions,
            processor.max_caption_length,
        )
    if guidance.uses_student_embedding and model.teacher_head is None:
        raise ValueError("lambda_cos / lambda_con need the model's teacher head (teacher_embed_dim > 0)")
    if (
        teacher is not None
        and model.teacher_head is not None
        and teacher.identity.embed_dim not in (None, model.config.teacher_embed_dim)
    ):
        raise ValueError(
            f"the model's teacher_embed_dim={model.config.teacher_embed_dim} differs from the teacher's "
            f"embedding size {teacher.identity.embed_dim}"
        )
    model.generation_config.num_beams = training_args.generation_num_beams
    model.generation_config.max_new_tokens = training_args.generation_max_new_tokens
    model.generation_config.no_repeat_ngram_size = training_args.no_repeat_ngram_size
    logger.info("Model: %.1fM parameters", model.num_parameters() / 1e6)
    if training_args.ddp_find_unused_parameters is None and not guidance.uses_student_embedding:
        training_args.ddp_find_unused_parameters = True  # the teacher head gets no gradient

    # 4. Trainer: checkpoints every N epochs, early stopping on an evaluation metric.
    if data_args.save_every_epochs:
        steps_per_epoch = math.ceil(
            len(train_dataset)
            / (
                training_args.per_device_train_batch_size
                * training_args.world_size
                * training_args.gradient_accumulation_steps
            )
        )
        every = max(1, round(data_args.save_every_epochs * steps_per_epoch))
        training_args.save_strategy = training_args.eval_strategy = "steps"
        training_args.save_steps = training_args.eval_steps = every
    save, log = training_args.save_steps, training_args.logging_steps
    if training_args.save_strategy == "steps" and training_args.logging_strategy == "steps" and save % log:
        logger.warning(
            "logging_steps=%s does not divide save_steps=%s: after a resume the first logged loss averages fewer "
            "steps than the uninterrupted run's (the training itself is the same)",
            log,
            save,
        )
    callbacks = []
    if data_args.early_stopping_patience and not (
        training_args.metric_for_best_model and training_args.load_best_model_at_end
    ):
        raise ValueError(
            "early_stopping_patience needs metric_for_best_model (e.g. clip_s, cider, semantic_accuracy) and "
            "load_best_model_at_end: true"
        )
    if data_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    collator = CaptionCollator(
        processor,
        caption_column=data_args.caption_column,
        image_column=data_args.image_column,
        teacher=teacher,
        teacher_images=guidance.needs_teacher_images,
        teacher_texts=guidance.needs_teacher_texts,
        seed=training_args.seed,
    )
    if model.config.freeze_encoder and model_args.cache_encoder_features and training_args.do_train:
        logger.info("Computing the frozen encoder's features of the %d training images once", len(train_dataset))
        with training_args.main_process_first(desc="encoder features"):
            train_dataset = add_encoder_features(
                train_dataset, model.to(training_args.device), processor, data_args.image_column
            )
        if not collator.reads_images(train_dataset.column_names):
            train_dataset = train_dataset.remove_columns(data_args.image_column)
    trainer = CLIPGuidedTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=callbacks,
        guidance=guidance,
        teacher=teacher,
        caption_column=data_args.caption_column,
    )

    # 5. Train (resuming when there is a checkpoint) and save the model with its processor.
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()

    # 6. Evaluate: losses and caption metrics; show a few captions next to their references.
    metrics = {}
    if training_args.do_eval:
        metrics = last_evaluation(trainer) or trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        trainer.save_state()  # trainer_state.json's log history now ends with this evaluation
        if trainer.is_world_process_zero() and getattr(trainer, "_last_captions", None):
            references = eval_dataset[data_args.caption_column][:]
            print("\nSample captions (generated | reference):")
            for caption, refs in list(zip(trainer._last_captions, references, strict=True))[
                : data_args.num_sample_captions
            ]:
                print(f"  {caption!r:60} | {refs[0] if isinstance(refs, list) else refs!r}")

    # 7. Model card, and the Hub.
    if trainer.is_world_process_zero():
        groups = {"model": asdict(model_args), "data": asdict(data_args), "guidance": asdict(guidance)}
        summary = {**{k: v for e in trainer.state.log_history for k, v in e.items()}, **metrics}
        write_model_card(training_args.output_dir, summary, groups, metadata, teacher, model.config)
        Path(training_args.output_dir, "run_args.json").write_text(
            json.dumps(
                {
                    **groups,
                    "teacher": teacher.identity.to_dict() if teacher else None,
                    "world_size": training_args.world_size,
                    "device": str(training_args.device),
                },
                indent=2,
                default=str,
            )
        )
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="ClipCap captioner trained with CLIP guidance")
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
