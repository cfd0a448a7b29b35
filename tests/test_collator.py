"""clipcap/collator.py (`CaptionCollator`): with cached encoder features it passes them on and never reads the
images."""

import torch

from clipcap.collator import CaptionCollator
from clipcap.encoder_cache import add_encoder_features
from processing_clipcap import ClipCapProcessor
from tests.conftest import tiny_dataset, tiny_model


def test_collator_passes_features_and_never_reads_the_images():
    model = tiny_model(freeze_encoder=True)
    processor = ClipCapProcessor.from_config(model.config)
    train = tiny_dataset(num_train=3, num_validation=1)["train"]
    cached = add_encoder_features(train, model, processor).remove_columns("image")
    collator = CaptionCollator(processor, seed=0)
    assert not collator.reads_images(cached.column_names) and collator.reads_images(train.column_names)
    # A teacher that must see the pixels (no cached image embeddings) still needs them decoded.
    assert CaptionCollator(processor, teacher_images=True).reads_images(cached.column_names)
    batch = collator([cached[i] for i in range(3)])
    assert "pixel_values" not in batch and batch["image_features"].dtype == torch.float32
    assert torch.equal(batch["image_features"], torch.tensor(cached["encoder_features"][:]))


def test_collator_adds_each_drawn_captions_hard_negatives_judged_by_its_scene():
    """For L_con's NegCLIP term: the teacher's tokens of a false edit of each row's drawn caption, and its row."""
    from clipcap.synthetic import Scene, caption_errors

    class Teacher:  # what the collator uses of a teacher: its tokenizer
        texts = []

        def tokenizer(self, texts):
            Teacher.texts = list(texts)
            return torch.arange(len(texts))[:, None]

    model = tiny_model()
    processor = ClipCapProcessor.from_config(model.config)
    train = tiny_dataset(num_train=6, num_validation=1)["train"]
    train = train.add_column("row_index", list(range(len(train))))
    rows = [train[i] for i in range(6)]
    collator = CaptionCollator(
        processor, teacher=Teacher(), teacher_texts=True, seed=0, hard_negatives=("swap_colours", "swap_phrases")
    )
    batch = collator(rows)
    owners = batch["hard_negative_owners"].tolist()
    assert batch["teacher_negative_input_ids"].shape[0] == len(owners) == len(Teacher.texts) > 0
    assert owners == sorted(owners) and len(set(owners)) == len(owners)  # at most one per caption
    for owner, negative in zip(owners, Teacher.texts, strict=True):
        scene = Scene.from_json(rows[owner]["scene"])
        assert caption_errors(negative, scene) and sorted(negative.split()) == sorted(
            batch_caption(rows[owner], negative).split()
        )
    # Drawn again for the same rows and epoch: the same negatives.
    first = list(Teacher.texts)
    collator(rows)
    assert Teacher.texts == first
    # Without hard negatives (or without L_con's teacher texts), none.
    assert "hard_negative_owners" not in CaptionCollator(processor, teacher=Teacher(), teacher_texts=True)(rows)


def batch_caption(row, negative):
    """The reference of `row` that `negative` was made from: the one with the same words."""
    return next(c for c in row["captions"] if sorted(c.split()) == sorted(negative.split()))
