# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The teacher cache: the teacher's embeddings of a dataset's images and captions, stored in it as the columns
`teacher_image_embeds` and `teacher_text_embeds`, with the teacher's identity in the dataset card's metadata.

`prepare_dataset.py` (with a teacher) or `run_train.py` (`cache_teacher_embeddings`) compute them once
(`embed_dataset`); training reads them instead of running the teacher at every step, and only when they were made
by the same teacher (`check_teacher_cache`).
"""

from __future__ import annotations

import logging

import datasets
import torch

from clipcap.data import CAPTION_COLUMN, IMAGE_COLUMN, map_images
from clipcap.teacher import CLIPTeacher, TeacherIdentity

logger = logging.getLogger(__name__)


def check_teacher_cache(cached: TeacherIdentity | dict | None, teacher: TeacherIdentity) -> None:
    """Raise a one-line ValueError unless the embeddings in a dataset were made by `teacher`."""
    if cached is None:
        raise ValueError("the dataset has no teacher cache")
    if isinstance(cached, dict):
        cached = TeacherIdentity.from_dict(cached)
    if not cached.same_teacher(teacher):
        raise ValueError(
            f"the dataset's teacher embeddings were made by {cached.describe()}, but the teacher is "
            f"{teacher.describe()}; re-run prepare_dataset.py with this teacher, or train without the cache"
        )


def embed_dataset(
    dataset: datasets.Dataset,
    teacher: CLIPTeacher,
    batch_size: int = 64,
) -> datasets.Dataset:
    """Add the teacher's unit-norm `teacher_image_embeds` (D) and `teacher_text_embeds` (one D-vector per reference
    caption) to a `datasets.Dataset`, through `Dataset.map` (cached by fingerprint).

    Each distinct caption is embedded once: captions repeat (the demo's 38,680 training references hold 19,301
    distinct texts), and the text tower costs as much per caption as the image tower per image."""
    text_embeds, text_index = None, {}

    def embed(batch):
        nonlocal text_embeds
        if text_embeds is None:  # on the first batch only, so that a cached map() embeds nothing
            # shortest first, so that each batch of 256 is about one length and its padding columns are dropped
            distinct = sorted(
                dict.fromkeys(text for references in dataset[CAPTION_COLUMN] for text in references), key=len
            )
            text_index.update((text, i) for i, text in enumerate(distinct))
            chunks = [teacher.embed_texts(distinct[i : i + 256]).cpu() for i in range(0, len(distinct), 256)]
            text_embeds = torch.cat(chunks) if chunks else torch.empty(0, teacher.identity.embed_dim or 0)
        images = teacher.embed_pil_images(batch[IMAGE_COLUMN])
        return {
            "teacher_image_embeds": images.cpu().numpy().tolist(),
            "teacher_text_embeds": [
                text_embeds[[text_index[text] for text in references]].numpy().tolist()
                for references in batch[CAPTION_COLUMN]
            ],
        }

    features = datasets.Features(
        {
            **dataset.features,
            "teacher_image_embeds": datasets.List(datasets.Value("float32")),
            "teacher_text_embeds": datasets.List(datasets.List(datasets.Value("float32"))),
        }
    )
    return map_images(
        dataset,
        embed,
        batch_size=batch_size,
        features=features,
        desc="Teacher embeddings",
        # The teacher's identity, not a pickle of its weights, names the result (and finds it again on a rerun).
        new_fingerprint=datasets.fingerprint.Hasher.hash(
            [
                dataset._fingerprint,
                teacher.identity.to_dict(),
                teacher.precision,
                IMAGE_COLUMN,
                CAPTION_COLUMN,
                "teacher-embeddings-v4",
            ]
        ),
    )


def add_teacher_embeddings(
    dataset: datasets.DatasetDict,
    metadata: dict,
    teacher: CLIPTeacher,
    train_split: str,
    use_cache: bool = True,
    compute_once: bool = True,
) -> datasets.DatasetDict:
    """Make sure every split carries `teacher`'s embeddings when training needs them.

    A dataset cache (`prepare_dataset.py --clip_model ...`) is used when `use_cache` and it was made by this teacher
    (`metadata["teacher"]`); a cache made by another teacher is refused. Without a usable cache, every image and
    caption is embedded once here (`compute_once`), or the columns are left out and the trainer runs the teacher on
    every batch.
    """
    cached = "teacher_image_embeds" in dataset[train_split].column_names
    if cached and use_cache:
        check_teacher_cache(metadata.get("teacher"), teacher.identity)
        logger.info("Using the dataset's cached embeddings of %s", teacher.identity.describe())
        return dataset
    if cached:
        dataset = dataset.remove_columns(["teacher_image_embeds", "teacher_text_embeds"])
    if compute_once:
        logger.info("Embedding every image and caption with %s once", teacher.identity.describe())
        for split in dataset:
            dataset[split] = embed_dataset(dataset[split], teacher)
    return dataset
