# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Dataset rows -> training batches: one reference caption drawn per image, and the teacher's inputs for the terms
that need them."""

from __future__ import annotations

import random

import numpy as np
import torch

from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN
from clipcap.hard_negatives import draw_hard_negatives, judge_of
from clipcap.losses import caption_id
from clipcap.metrics import scene_of

# What a batch may carry for the teacher (the trainer takes these out before the model's forward).
TEACHER_INPUTS = (
    "teacher_image_embeds",
    "teacher_pixel_values",
    "teacher_text_embeds",
    "teacher_input_ids",
    "teacher_negative_input_ids",
    "hard_negative_owners",
)


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
    Rows with `encoder_features` (a frozen encoder's output, `add_encoder_features`) become `image_features`, rows with
    `frozen_stage_features` (the output of its frozen first stages) become `frozen_stage_features`, and their images
    are not even decoded unless the teacher has to see them. With `teacher_pixels`, the teacher's image input is there
    even where its embeddings are cached (its image-text matcher reads the image's grid). With `references`, the batch also carries every row's
    reference captions (`references`, lists of strings: the CIDEr-D reward of `clipcap.scst`).
    """

    def __init__(
        self,
        processor,
        teacher=None,
        teacher_images: bool = False,
        teacher_texts: bool = False,
        seed: int | None = None,
        references: bool = False,
        hard_negatives: tuple[str, ...] = (),
        hard_negatives_per_caption: int = 1,
        teacher_pixels: bool = False,
    ):
        self.processor = processor
        self.teacher, self.teacher_images, self.teacher_texts = teacher, teacher_images, teacher_texts
        self.teacher_pixels = teacher_pixels
        self.references = references
        self.hard_negatives, self.hard_negatives_per_caption = tuple(hard_negatives), hard_negatives_per_caption
        self.seed, self.epoch = seed, 0

    def reads_images(self, columns) -> bool:
        """Whether rows with these columns have their images decoded: for the model, unless the rows carry a frozen
        encoder's `encoder_features`, and for the teacher, unless they carry its image embeddings."""
        cached = "encoder_features" in columns or "frozen_stage_features" in columns
        return not cached or self.teacher_pixels or (self.teacher_images and "teacher_image_embeds" not in columns)

    def draw(self, row: dict, count: int) -> int:
        if self.seed is not None and "row_index" in row:
            return random.Random(f"{self.seed}/{self.epoch}/{row['row_index']}").randrange(count)
        return int(torch.randint(count, ()))

    def __call__(self, rows: list[dict]) -> dict:
        choices, captions, usable_references = [], [], []
        for row in rows:
            references = row[CAPTION_COLUMN]
            usable = [i for i, caption in enumerate(references) if caption and caption.strip()]
            if not usable:
                raise ValueError("a row has no caption; run_train.py and prepare_dataset.py drop such rows")
            choices.append(usable[self.draw(row, len(usable))])  # the index into all references (teacher cache)
            captions.append(references[choices[-1]])
            usable_references.append([references[i] for i in usable])
        features = "encoder_features" in rows[0] or "frozen_stage_features" in rows[0]
        images = [row[IMAGE_COLUMN].convert("RGB") for row in rows] if self.reads_images(rows[0]) else []
        batch = dict(self.processor(images=None if features else images, text=captions))
        if "encoder_features" in rows[0]:
            batch["image_features"] = _float_tensor([row["encoder_features"] for row in rows])
        elif features:
            batch["frozen_stage_features"] = _float_tensor([row["frozen_stage_features"] for row in rows])
        batch["caption_ids"] = torch.tensor([caption_id(caption) for caption in captions])
        if self.teacher_images and "teacher_image_embeds" in rows[0]:
            batch["teacher_image_embeds"] = _float_tensor([row["teacher_image_embeds"] for row in rows])
        if self.teacher_pixels or (self.teacher_images and "teacher_image_embeds" not in rows[0]):
            batch["teacher_pixel_values"] = torch.stack([self.teacher.preprocess(image) for image in images])
        if self.teacher_texts:
            if "teacher_text_embeds" in rows[0]:
                chosen = [row["teacher_text_embeds"][choice] for row, choice in zip(rows, choices, strict=True)]
                batch["teacher_text_embeds"] = _float_tensor(chosen)
            else:
                batch["teacher_input_ids"] = self.teacher.tokenizer(captions)
        if self.hard_negatives and self.teacher_texts:
            self._add_hard_negatives(batch, rows, captions)
        if self.references:
            batch["references"] = usable_references
        return batch

    def _add_hard_negatives(self, batch: dict, rows: list[dict], captions: list[str]) -> None:
        """The teacher's tokens of each drawn caption's hard negatives (`clipcap.hard_negatives`, judged by the row's
        scene or labels) and the row each was made from, drawn as reproducibly as the captions are."""
        key = "/".join(str(row.get("row_index", "")) for row in rows)
        seed = f"{self.seed}/{self.epoch}/{key}" if self.seed is not None else int(torch.randint(2**31, ()))
        judges = [judge_of(scene_of(row), row.get("labels")) for row in rows]
        negatives, owners, _ = draw_hard_negatives(
            captions, judges, self.hard_negatives, self.hard_negatives_per_caption, random.Random(seed)
        )
        if negatives:
            batch["teacher_negative_input_ids"] = self.teacher.tokenizer(negatives)
            batch["hard_negative_owners"] = torch.tensor(owners)
