#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Train a small domain CLIP teacher with open_clip on a prepared image-caption dataset.

Offline there is no pretrained CLIP to download, so the offline demo trains its own teacher: a small open_clip model
(`configs/open_clip/ClipCap-Domain-S.json`, registered with `open_clip.add_model_config`) trained with open_clip's
own contrastive loss (`open_clip.ClipLoss`, CLIP's symmetric InfoNCE) on the dataset's image-caption pairs, one
reference caption drawn at random per image per epoch. The result is a checkpoint that open_clip loads as it loads
any other:

    open_clip.create_model("ClipCap-Domain-S", pretrained="outputs/teacher/open_clip_model.safetensors")

and `run_train.py` takes it as `clip_model` / `clip_pretrained`. `teacher.json` next to it records the architecture,
the checksum, the validation retrieval recall and the arguments.

    python train_clip_teacher.py --dataset_dir data/synthetic --output_dir outputs/teacher
    python train_clip_teacher.py configs/demo_teacher.yaml
"""

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup

from clipcap.cli import parse_config_and_flags
from clipcap.data import load_prepared_dataset
from clipcap.files import file_sha256
from clipcap.memory import keep_freed_memory
from clipcap.teacher import MODEL_CONFIG_DIR, TEACHER_CHECKPOINT_NAME, register_model_configs, retrieval_recall

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
    image_column: str = field(default="image", metadata={"help": "Column of images."})
    caption_column: str = field(default="captions", metadata={"help": "Column with a list of reference captions."})
    num_train_epochs: int = field(default=10, metadata={"help": "Passes over the training images."})
    batch_size: int = field(default=128, metadata={"help": "Images (and captions) per contrastive batch."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay (not on gains, biases, logit scale)."}
    )
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps before the cosine decay."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training images."})
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation and the caption draws."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda', ..."})


def parse_args(argv: list[str] | None = None) -> TeacherTrainingArguments:
    """Flags, or a .yaml/.json file of the same names, optionally followed by flags that override it."""
    return parse_config_and_flags(HfArgumentParser(TeacherTrainingArguments), argv)[0]


def encode_images(preprocess, images) -> torch.Tensor:
    return torch.stack([preprocess(image.convert("RGB")) for image in images])


def train_teacher(args: TeacherTrainingArguments) -> dict:
    """Train, evaluate and save the teacher; returns the `teacher.json` record."""
    output_dir = Path(args.output_dir)
    checkpoint = output_dir / TEACHER_CHECKPOINT_NAME
    if checkpoint.exists() and not args.overwrite_output_dir:
        raise FileExistsError(f"{checkpoint} exists; pass --overwrite_output_dir to train a new teacher")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)

    # 1. Data: every image through the teacher's own eval transform, once; captions tokenised once.
    columns = [args.image_column, args.caption_column]
    dataset, _ = load_prepared_dataset(
        args.dataset_dir, {"train": columns, "validation": columns}, args.caption_column
    )
    train = dataset["train"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))

    register_model_configs()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(
        args.model, pretrained=None, device=device, output_dict=True
    )
    tokenizer = open_clip.get_tokenizer(args.model)
    logger.info("1. Encoding %d training and %d validation images", len(train), len(dataset["validation"]))
    train_images = encode_images(preprocess, train[args.image_column][:])
    train_captions = train[args.caption_column][:]
    validation_images = encode_images(preprocess, dataset["validation"][args.image_column][:])
    validation_captions = dataset["validation"][args.caption_column][:]
    if any(not references for references in train_captions):
        raise ValueError("every training image needs at least one caption")

    # 2. Model, optimizer (no decay on gains, biases and the logit scale, as open_clip's training does), schedule.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total_steps = steps_per_epoch * args.num_train_epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(args.warmup_steps, total_steps // 2), total_steps)
    loss_fn = open_clip.ClipLoss()
    logger.info(
        "2. Training %s (%.1fM parameters): %d epochs x %d steps, batch %d, on %s",
        args.model,
        sum(p.numel() for p in model.parameters()) / 1e6,
        args.num_train_epochs,
        steps_per_epoch,
        args.batch_size,
        device,
    )

    # 3. Train: each epoch a fresh order and one random reference caption per image.
    history, start = [], time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    progress = tqdm(total=total_steps, desc="teacher", unit="step")
    for epoch in range(args.num_train_epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        epoch_loss = 0.0
        for first in range(0, len(order), args.batch_size):
            index = order[first : first + args.batch_size]
            texts = tokenizer([random.choice(train_captions[i]) for i in index]).to(device)
            out = model(train_images[index].to(device), texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():  # CLIP clamps its temperature at 100
                model.logit_scale.clamp_(0, math.log(100))
            epoch_loss += loss.item() * len(index)
            progress.update()
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        recall = retrieval_recall(model, validation_images, validation_captions, tokenizer)
        history.append({"epoch": epoch + 1, "train_loss": epoch_loss / len(order), **recall})
        logger.info("epoch %d: %s", epoch + 1, json.dumps(history[-1]))
    progress.close()

    # 4. Save: written next to the target, then renamed, so a half-written checkpoint is never picked up.
    output_dir.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_suffix(".partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(partial))
    os.replace(partial, checkpoint)
    record = {
        "arch": args.model,
        "pretrained": str(checkpoint),
        "sha256": file_sha256(checkpoint),
        "model_config": open_clip.get_model_config(args.model),
        "validation": history[-1],
        "history": history,
        "train_seconds": round(time.perf_counter() - start, 1),
        "dataset_dir": str(args.dataset_dir),
        "arguments": asdict(args),
        "usage": f'open_clip.create_model("{args.model}", pretrained="{checkpoint}")',
    }
    (output_dir / "teacher.json").write_text(json.dumps(record, indent=2) + "\n")
    config_file = MODEL_CONFIG_DIR / f"{args.model}.json"
    if config_file.exists():  # the architecture travels with the weights
        shutil.copyfile(config_file, output_dir / config_file.name)
    return record


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO, datefmt="%H:%M:%S")
    try:
        record = train_teacher(parse_args(argv))
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as error:
        print(f"train_clip_teacher.py: error: {error}", file=sys.stderr)
        return 1
    validation = record["validation"]
    print(
        f"Teacher {record['arch']} saved to {record['pretrained']}: validation image->text R@1 "
        f"{validation['image_to_text_R@1']:.3f}, text->image R@1 {validation['text_to_image_R@1']:.3f} "
        f"({record['train_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
