"""clipcap/teacher_cache.py: the teacher's embeddings of a dataset's images and captions, cached as columns (by
prepare_dataset.py, or by run_train.py before training): unit norm, equal to what the teacher gives on the fly, each
distinct caption embedded once, and a cache made by another teacher refused with both teachers named
(docs/reliability.md)."""

import json

import datasets
import numpy as np
import pytest
import torch

import prepare_dataset
import run_train
from clipcap import data
from clipcap.cli import build_model_config
from clipcap.teacher import TeacherArguments
from tests.conftest import tiny_dataset, train_argv
from tests.helpers import synthetic_args


def test_cached_teacher_embeddings_match_on_the_fly(tmp_path, data_dir, teacher_checkpoint):
    """The embeddings run_train caches before training are what the teacher gives on the fly, and a batch sees the
    embedding of the caption it drew."""
    from clipcap.collator import CaptionCollator
    from clipcap.teacher import CLIPTeacher
    from clipcap.teacher_cache import embed_dataset
    from processing_clipcap import ClipCapProcessor

    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    dataset = datasets.load_from_disk(str(data_dir))["train"]
    cached = embed_dataset(dataset, teacher)
    model_args = run_train.parse_args(train_argv(data_dir, tmp_path))[0]
    config = build_model_config(model_args.config_overrides, teacher.identity.embed_dim)
    processor = ClipCapProcessor.from_config(config, crop_fraction=1.0)
    rows = [cached[i] for i in range(3)]
    torch.manual_seed(5)
    with_cache = CaptionCollator(processor, teacher=teacher, teacher_images=True, teacher_texts=True)(rows)
    torch.manual_seed(5)
    plain_rows = [dataset[i] for i in range(3)]
    on_the_fly = CaptionCollator(processor, teacher=teacher, teacher_images=True, teacher_texts=True)(plain_rows)
    assert torch.equal(with_cache["input_ids"], on_the_fly["input_ids"])  # the same captions were drawn
    images = teacher.embed_pixel_values(on_the_fly["teacher_pixel_values"])
    texts = torch.nn.functional.normalize(teacher.model.encode_text(on_the_fly["teacher_input_ids"]).float(), dim=-1)
    assert torch.allclose(with_cache["teacher_image_embeds"], images, atol=1e-5)
    assert torch.allclose(with_cache["teacher_text_embeds"], texts, atol=1e-5)


def test_embed_dataset_embeds_each_distinct_caption_once():
    from clipcap.teacher_cache import embed_dataset

    class CountingTeacher:
        """Embeds a text as a one-hot of its length, an image as a constant; counts the texts it is given."""

        identity = type("Identity", (), {"to_dict": lambda self: {"arch": "counting"}, "embed_dim": 256})()
        precision = "fp32"

        def __init__(self):
            self.texts = 0

        def embed_texts(self, texts):
            self.texts += len(texts)
            return torch.nn.functional.one_hot(torch.tensor([len(t) for t in texts]), 256).float()

        def embed_pil_images(self, images):
            return torch.ones(len(images), 256) / 16

    dataset = tiny_dataset(num_train=30, num_validation=0)["train"]
    references = dataset["captions"][:]
    teacher = CountingTeacher()
    embedded = embed_dataset(dataset, teacher, batch_size=8)
    distinct = {text for refs in references for text in refs}
    assert teacher.texts == len(distinct) < sum(len(refs) for refs in references)
    for refs, embeds in zip(references, embedded["teacher_text_embeds"][:], strict=True):
        assert [int(torch.tensor(e).argmax()) for e in embeds] == [len(text) for text in refs]


def test_refuses_a_cache_from_another_teacher(tmp_path, data_dir, teacher_checkpoint):
    from clipcap.teacher import CLIPTeacher, TeacherIdentity
    from clipcap.teacher_cache import add_teacher_embeddings

    dataset = datasets.load_from_disk(str(data_dir))
    other = TeacherIdentity("ClipCap-Test-Teacher", "other.safetensors", "0" * 64, 16)
    metadata = {"teacher": other.to_dict()}
    dataset = dataset.map(lambda row: {"teacher_image_embeds": [0.0] * 16, "teacher_text_embeds": [[0.0] * 16]})
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    with pytest.raises(ValueError, match="made by ClipCap-Test-Teacher \\(sha256 000000000000\\)"):
        add_teacher_embeddings(dataset, metadata, teacher, "train")


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_checkpoints(tmp_path_factory):
    """Two different random checkpoints of a registered tiny open_clip architecture."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("clip")
    (root / "ClipCap-Test-Tiny.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(root / "ClipCap-Test-Tiny.json")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = open_clip.create_model("ClipCap-Test-Tiny", pretrained=None)
        paths.append(str(root / f"tiny-{seed}.safetensors"))
        save_file(model.state_dict(), paths[-1])
    return paths


def test_teacher_cache_shapes_unit_norm_identity_and_refusal(fiftyone_db, tmp_path, tiny_clip_checkpoints):
    import torch

    from clipcap.files import file_sha256
    from clipcap.teacher import CLIPTeacher
    from clipcap.teacher_cache import check_teacher_cache

    first, second = tiny_clip_checkpoints
    args = synthetic_args(
        tmp_path,
        num_train=5,
        num_validation=2,
        image_size=48,
        teacher_batch_size=3,
    )
    dataset_dict, metadata = prepare_dataset.prepare(args, TeacherArguments("ClipCap-Test-Tiny", first))
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Tiny", first, precision="auto")  # as TeacherArguments' default
    for split in ("train", "validation"):
        images = np.asarray(dataset_dict[split]["teacher_image_embeds"][:])
        assert images.shape == (len(dataset_dict[split]), 16) and np.allclose(
            np.linalg.norm(images, axis=1), 1, atol=1e-5
        )
        for row in dataset_dict[split]:
            texts = np.asarray(row["teacher_text_embeds"])
            assert texts.shape == (len(row["captions"]), 16)
            assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
            expected = teacher.embed_texts(row["captions"]).numpy()
            assert np.allclose(texts, expected, atol=1e-5)
        expected = teacher.embed_pil_images(dataset_dict[split]["image"]).numpy()
        assert np.allclose(images, expected, atol=1e-5)

    assert metadata["teacher"]["sha256"] == file_sha256(first)
    assert data.load_dataset_metadata(tmp_path / "data")["teacher"] == metadata["teacher"]
    check_teacher_cache(metadata["teacher"], teacher.identity)  # the same teacher: accepted
    other = CLIPTeacher.from_pretrained("ClipCap-Test-Tiny", second).identity
    with pytest.raises(ValueError, match="made by ClipCap-Test-Tiny \\(sha256 .*re-run prepare_dataset.py"):
        check_teacher_cache(metadata["teacher"], other)
    assert isinstance(teacher.embed_pixel_values(torch.zeros(1, 3, 32, 32)), torch.Tensor)
