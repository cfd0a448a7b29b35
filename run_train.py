#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Train a ClipCap captioner with CLIP guidance on a dataset prepared by `prepare_dataset.py`.

    accelerate launch run_train.py configs/demo.yaml                       # offline demo, CPU
    accelerate launch run_train.py configs/open_images_home_appliance.yaml  # the real run
    accelerate launch run_train.py configs/demo.yaml --lambda_cos 0 --lambda_con 0 --output_dir outputs/demo-ce
    accelerate launch run_train.py configs/demo_scst.yaml     # second stage: self-critical, CLIP-S reward
    python run_train.py --dataset_dir data/synthetic --output_dir outputs/x --config_overrides image_size=128 ...

One `.yaml`/`.json` file holds every argument (the model, data, teacher, CLIP-guidance and training dataclasses below,
plus all of `transformers.TrainingArguments`), or they come as flags, or flags after the file override it. A new
model's architecture is `ClipCapConfig` with `config_overrides` (a mapping in the file, `key=value,...` as a flag).
A run in an `output_dir` that already has checkpoints resumes from the last one. With `scst: true` the run is
the self-critical stage (`clipcap.scst`) from the trained model `model_name_or_path`.
"""

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import transformers
from transformers import EarlyStoppingCallback, HfArgumentParser, set_seed

from clipcap.checkpoints import checkpoint_to_resume
from clipcap.cli import build_model_config, parse_config_and_flags
from clipcap.collator import CaptionCollator
from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN, add_caption_lengths, count_long_captions, load_splits
from clipcap.domain_tokenizer import train_domain_tokenizer
from clipcap.encoder_cache import add_encoder_features
from clipcap.memory import keep_freed_memory
from clipcap.model_card import write_model_card
from clipcap.precision import describe_device
from clipcap.preflight import (
    check_downloads,
    dataset_download,
    decoder_download,
    encoder_download,
    model_download,
    teacher_download,
)
from clipcap.pretrained import from_pretrained_parts
from clipcap.report import plot_metric_curves, write_caption_grid
from clipcap.scst import SCSTTrainer
from clipcap.teacher import CLIPTeacher, TeacherArguments
from clipcap.teacher_cache import add_teacher_embeddings
from clipcap.trainer import CLIPGuidedTrainer, NonFiniteLossError
from clipcap.training_args import ClipCapTrainingArguments, CLIPGuidanceArguments, SCSTArguments
from modeling_clipcap import ClipCapForCaptioning
from processing_clipcap import ClipCapProcessor

logger = logging.getLogger("run_train")


@dataclass
class ModelArguments:
    """The captioner: continue from a saved model, or build a new one from `ClipCapConfig` and `config_overrides`."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved ClipCap model (directory or Hub id) to start from."}
    )
    config_overrides: dict | str | None = field(
        default=None,
        metadata={
            "help": "A new model's ClipCapConfig fields that differ from its defaults: a mapping in a config file, or "
            "key=value,... as a flag, e.g. 'image_size=64,encoder_pretrained=false,text_config.n_layer=2'."
        },
    )
    domain_tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "A new model with a random decoder: train GPT-2's byte-level BPE with this many tokens on the "
            "training captions instead of using GPT-2's 50,257 (clipcap.domain_tokenizer)."
        },
    )
    max_caption_length: int = field(default=40, metadata={"help": "Longest training caption in tokens, EOS included."})
    image_crop_fraction: float | None = field(
        default=None, metadata={"help": "Centre crop of the resized image; default: the encoder weights' (0.875)."}
    )
    cache_encoder_features: bool = field(
        default=True,
        metadata={
            "help": "With freeze_encoder (or encoder_frozen_stages): compute the frozen part's output for each "
            "training image once, not at every step."
        },
    )
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Also load pickled weight files (.bin/.pt), which can run code; only for files you trust."},
    )


@dataclass
class DataArguments:
    """The prepared dataset (`prepare_dataset.py`'s output) and how much of it to use."""

    dataset_dir: str = field(
        default="data/synthetic", metadata={"help": "A DatasetDict from prepare_dataset.py (directory or Hub id)."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split to evaluate on."})
    image_column: str = field(default=IMAGE_COLUMN, metadata={"help": "Column of images."})
    caption_column: str = field(default=CAPTION_COLUMN, metadata={"help": "Column of reference captions (a list)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improving metric_for_best_model."}
    )
    save_every_epochs: float | None = field(
        default=None, metadata={"help": "Save (and evaluate) every this many epochs; sets save_steps and eval_steps."}
    )
    num_sample_captions: int = field(default=8, metadata={"help": "Validation captions printed at the end."})


ARGUMENT_CLASSES = (
    ModelArguments,
    DataArguments,
    TeacherArguments,
    CLIPGuidanceArguments,
    SCSTArguments,
    ClipCapTrainingArguments,
)


def parse_args(argv: list[str] | None = None):
    """Flags, or a .yaml/.json config file as the first argument, optionally followed by flags that override it
    (`run_train.py configs/demo.yaml --lambda_cos 0 --output_dir outputs/demo-ce`). Unknown keys and values of the
    wrong type are errors (`clipcap.cli.parse_config_and_flags`)."""
    return parse_config_and_flags(HfArgumentParser(ARGUMENT_CLASSES), argv)


def main(argv: list[str] | None = None) -> int:
    """Train; a bad argument, file or dataset, or a loss that stops being finite, ends with one line and status 1."""
    try:
        return train(*parse_args(argv))
    except (OSError, ValueError, NonFiniteLossError) as error:
        print(f"run_train.py: error: {error}", file=sys.stderr)
        return 1


def planned_downloads(model_args, data_args, teacher_args) -> list:
    """What the run will fetch (`clipcap.preflight`): the dataset, the teacher's weights, and a saved model or a new
    model's encoder and decoder weights."""
    downloads = [
        dataset_download(data_args.dataset_dir),
        teacher_download(teacher_args.clip_model, teacher_args.clip_pretrained),
    ]
    if model_args.model_name_or_path:
        return [*downloads, model_download(model_args.model_name_or_path)]
    config = build_model_config(model_args.config_overrides)
    return [
        *downloads,
        encoder_download(config.encoder_name, config.encoder_pretrained),
        decoder_download(config.decoder_name_or_path),
    ]


def check_arguments(model_args, data_args, guidance, scst, training_args) -> None:
    """What the arguments must agree on, checked before anything is loaded."""
    if scst.scst:  # the self-critical stage continues a trained captioner and trains only its own loss
        if not model_args.model_name_or_path:
            raise ValueError("scst: true is a second stage: set model_name_or_path to a trained captioner")
        if guidance.lambda_cos or guidance.lambda_con or guidance.lambda_div:
            raise ValueError(
                "scst: true trains the self-critical loss only: set lambda_cos, lambda_con and lambda_div to 0 (its "
                "guard is scst_ce_weight)"
            )
    if data_args.early_stopping_patience and not (
        training_args.metric_for_best_model and training_args.load_best_model_at_end
    ):
        raise ValueError(
            "early_stopping_patience needs metric_for_best_model (e.g. clip_s, cider, semantic_accuracy) and "
            "load_best_model_at_end: true"
        )


def setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    if training_args.should_log:  # as transformers' examples: INFO on the main process unless --log_level says
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    for name in ("run_train", "clipcap"):
        logging.getLogger(name).setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(
        "Process %d of %d, device %s, training in %s (%s)",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
        "bf16 autocast" if training_args.bf16 else "fp32" if not training_args.fp16 else "fp16 autocast",
        describe_device(training_args.device),
    )


def load_data_and_teacher(data_args, teacher_args, guidance, allow_pickle: bool):
    """The two splits (rows no one can train on dropped and counted), the card's metadata, and the teacher with its
    embeddings of both splits (also what evaluation's CLIP-S reads)."""
    limits = {data_args.train_split: data_args.max_train_samples, data_args.eval_split: data_args.max_eval_samples}
    dataset, metadata = load_splits(data_args.dataset_dir, limits, data_args.image_column, data_args.caption_column)
    teacher = None
    if teacher_args.clip_model:
        teacher = CLIPTeacher.from_arguments(teacher_args, allow_pickle=allow_pickle)
        dataset = add_teacher_embeddings(
            dataset,
            metadata,
            teacher,
            data_args.train_split,
            use_cache=guidance.use_teacher_cache,
            compute_once=guidance.cache_teacher_embeddings,
        )
    elif guidance.needs_teacher_images or guidance.needs_teacher_texts:
        raise ValueError(
            "lambda_cos / lambda_con need a teacher: set clip_model and clip_pretrained (or set both to 0)"
        )
    return dataset, metadata, teacher


def load_model_and_processor(model_args, teacher, train_dataset):
    """A saved model with its processor, or a new one from `ClipCapConfig` and `config_overrides` (with a domain
    tokenizer trained on the training captions when `domain_tokenizer_vocab_size` is set)."""
    if model_args.model_name_or_path:
        if model_args.config_overrides:
            logger.warning("config_overrides are ignored: %s brings its own config", model_args.model_name_or_path)
        model = ClipCapForCaptioning.from_pretrained(
            model_args.model_name_or_path, allow_pickle=model_args.allow_pickle
        )
        return model, ClipCapProcessor.from_pretrained(model_args.model_name_or_path)
    teacher_embed_dim = teacher.identity.embed_dim if teacher is not None else None
    config = build_model_config(model_args.config_overrides, teacher_embed_dim)
    tokenizer = None
    if model_args.domain_tokenizer_vocab_size:
        if config.decoder_name_or_path:
            raise ValueError(
                f"domain_tokenizer_vocab_size is for a decoder trained from scratch; decoder_name_or_path="
                f"{config.decoder_name_or_path!r} brings its own tokenizer"
            )
        tokenizer = train_domain_tokenizer(train_dataset[CAPTION_COLUMN], model_args.domain_tokenizer_vocab_size)
        text_config = config.text_config
        text_config.vocab_size = len(tokenizer)
        text_config.bos_token_id = text_config.eos_token_id = tokenizer.eos_token_id
        logger.info("Domain tokenizer: %d tokens, trained on the training captions", len(tokenizer))
    model = from_pretrained_parts(config)
    processor = ClipCapProcessor.from_config(
        model.config,
        tokenizer=tokenizer,
        max_caption_length=model_args.max_caption_length,
        crop_fraction=model_args.image_crop_fraction,
    )
    return model, processor


def check_model(model, teacher, guidance) -> None:
    """The loss terms that read the model's teacher head need one, as wide as the teacher's embeddings."""
    if not guidance.uses_student_embedding:  # the self-critical stage's reward reads the teacher alone
        return
    if model.teacher_head is None:
        raise ValueError("lambda_cos / lambda_con need the model's teacher head (teacher_embed_dim > 0)")
    if teacher is not None and teacher.identity.embed_dim not in (None, model.config.teacher_embed_dim):
        raise ValueError(
            f"the model's teacher_embed_dim={model.config.teacher_embed_dim} differs from the teacher's "
            f"embedding size {teacher.identity.embed_dim}"
        )


def prepare_for_training(model, guidance, training_args) -> None:
    """Evaluation's generation settings, and every trainable parameter one that gets a gradient."""
    model.generation_config.num_beams = training_args.generation_num_beams
    model.generation_config.max_new_tokens = training_args.generation_max_new_tokens
    model.generation_config.no_repeat_ngram_size = training_args.no_repeat_ngram_size
    logger.info("Model: %.1fM parameters", model.num_parameters() / 1e6)
    if model.teacher_head is not None and not guidance.uses_student_embedding:
        model.teacher_head.requires_grad_(False)  # no loss reads it: it would get no gradient anyway
    if training_args.ddp_find_unused_parameters is None:  # every trainable parameter now gets a gradient every step,
        training_args.ddp_find_unused_parameters = False  # so DDP need not traverse the graph looking for others


def set_save_schedule(data_args, training_args, num_train_rows: int) -> None:
    """`save_every_epochs` as save and evaluation steps; a warning when logging steps do not divide save steps."""
    if data_args.save_every_epochs:
        batch = (
            training_args.per_device_train_batch_size
            * training_args.world_size
            * training_args.gradient_accumulation_steps
        )
        every = max(1, round(data_args.save_every_epochs * math.ceil(num_train_rows / batch)))
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


def cache_frozen_encoder(train_dataset, model, processor, collator, model_args, scst, training_args):
    """The training images' features of a frozen encoder (or of its frozen first stages), computed once; the images
    themselves are dropped when nothing else reads them."""
    # generate() takes a frozen encoder's features, not the output of frozen first stages (the stage samples).
    frozen_part = model.config.freeze_encoder or (model.config.encoder_frozen_stages and not scst.scst)
    if not (frozen_part and model_args.cache_encoder_features and training_args.do_train):
        return train_dataset
    logger.info(
        "Computing the frozen encoder's (or stages') output for the %d training images once", len(train_dataset)
    )
    with training_args.main_process_first(desc="encoder features"):
        train_dataset = add_encoder_features(train_dataset, model.to(training_args.device), processor)
    if not collator.reads_images(train_dataset.column_names):
        train_dataset = train_dataset.remove_columns(IMAGE_COLUMN)
    return train_dataset


def show_evaluation(trainer, eval_dataset, data_args, output_dir: Path) -> None:
    """A few validation captions next to their references and, on the synthetic scenes, pictures of what the checker
    says of them (the caption grid and the semantic accuracy curve)."""
    evaluation = trainer.last_caption_evaluation
    if not trainer.is_world_process_zero() or evaluation is None:
        return
    references = eval_dataset[CAPTION_COLUMN][:]
    print("\nSample captions (generated | reference):")
    for caption, refs in list(zip(evaluation.captions, references, strict=True))[: data_args.num_sample_captions]:
        print(f"  {caption!r:60} | {refs[0]!r}")
    if evaluation.errors is not None:
        images = eval_dataset[IMAGE_COLUMN][:16]
        write_caption_grid(output_dir / "captions_grid.png", images, evaluation.captions, evaluation.errors)
        plot_metric_curves({output_dir.name: str(output_dir)}, output_dir / "semantic_accuracy.png")


def write_run_files(trainer, model, metrics, metadata, teacher, arguments: dict, training_args) -> None:
    """The model card and `run_args.json` (the run's arguments, which `run_eval.py` reads its defaults from)."""
    summary = {**{k: v for e in trainer.state.log_history for k, v in e.items()}, **metrics}
    write_model_card(training_args.output_dir, summary, arguments, metadata, teacher, model.config)
    Path(training_args.output_dir, "run_args.json").write_text(
        json.dumps(
            {
                **arguments,
                "teacher": teacher.identity.to_dict() if teacher else None,
                "world_size": training_args.world_size,
                "device": str(training_args.device),
            },
            indent=2,
            default=str,
        )
    )


def train(model_args, data_args, teacher_args, guidance, scst, training_args) -> int:
    # 1. Logging, the arguments checked, everything to download here or reachable, seed, the checkpoint to resume.
    setup_logging(training_args)
    check_arguments(model_args, data_args, guidance, scst, training_args)
    check_downloads(planned_downloads(model_args, data_args, teacher_args))
    checkpoint = checkpoint_to_resume(training_args, model_args.allow_pickle)
    set_seed(training_args.seed)

    # 2. Data and the teacher with its embeddings.
    dataset, metadata, teacher = load_data_and_teacher(data_args, teacher_args, guidance, model_args.allow_pickle)
    train_dataset, eval_dataset = dataset[data_args.train_split], dataset[data_args.eval_split]
    if "row_index" not in train_dataset.column_names:  # the collator's caption draws are keyed by row
        train_dataset = train_dataset.add_column("row_index", list(range(len(train_dataset))))
    if training_args.train_sampling_strategy == "group_by_length":
        train_dataset = add_caption_lengths(train_dataset, training_args.length_column_name)
    logger.info("Data: %d training and %d evaluation images", len(train_dataset), len(eval_dataset))

    # 3. Model and processor.
    model, processor = load_model_and_processor(model_args, teacher, train_dataset)
    if long_captions := count_long_captions(train_dataset, processor):
        logger.warning(
            "%d training captions are longer than max_caption_length=%d tokens and are truncated to it",
            long_captions,
            processor.max_caption_length,
        )
    check_model(model, teacher, guidance)
    prepare_for_training(model, guidance, training_args)

    # 4. Trainer: the CLIP-guided one or the self-critical stage's; checkpoints every N epochs, early stopping.
    set_save_schedule(data_args, training_args, len(train_dataset))
    callbacks = []
    if data_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    collator = CaptionCollator(
        processor,
        teacher=teacher,
        teacher_images=guidance.needs_teacher_images or scst.needs_teacher_images,
        teacher_texts=guidance.needs_teacher_texts,
        seed=training_args.seed,
        references=scst.needs_references,
        teacher_pixels=scst.needs_teacher_pixels,
        hard_negatives=guidance.hard_negative_kinds,
        hard_negatives_per_caption=guidance.con_hard_negatives_per_caption,
    )
    train_dataset = cache_frozen_encoder(train_dataset, model, processor, collator, model_args, scst, training_args)
    trainer_class, stage = (SCSTTrainer, {"scst": scst}) if scst.scst else (CLIPGuidedTrainer, {})
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=callbacks,
        guidance=guidance,
        teacher=teacher,
        **stage,
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
        metrics = trainer.final_evaluation()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        trainer.save_state()  # trainer_state.json's log history now ends with this evaluation
        show_evaluation(trainer, eval_dataset, data_args, Path(training_args.output_dir))

    # 7. Model card, the run's arguments, and the Hub.
    if trainer.is_world_process_zero():
        arguments = {
            "model": asdict(model_args),
            "data": asdict(data_args),
            "teacher_args": asdict(teacher_args),
            "guidance": asdict(guidance),
            "scst": asdict(scst),
        }
        write_run_files(trainer, model, metrics, metadata, teacher, arguments, training_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message=f"ClipCap captioner trained with {trainer.training_stage}")
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
