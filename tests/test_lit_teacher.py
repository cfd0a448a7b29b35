"""clipcap/lit_teacher.py: a LiT-style teacher built from the packaged pretrained towers (the MiniLM text tower, the
ImageNet image trunk) and trained by train_clip_teacher.py; its saved directory moves and still loads."""

import json

import pytest
import torch
from PIL import Image

from clipcap.pretrained import packaged_weights
from tests.conftest import tiny_dataset
from tests.helpers import PACKAGED, needs_packaged_weights


@needs_packaged_weights
def test_lit_teacher_starts_from_minilm_and_its_directory_moves(tmp_path, cache, monkeypatch):
    """train_clip_teacher.py with the packaged towers: the text tower starts equal to MiniLM, the image trunk equal to
    the ImageNet weights; the saved directory loads from elsewhere (another cwd, moved) with the same embeddings."""
    from transformers import AutoModel

    import train_clip_teacher
    from clipcap.lit_teacher import create_teacher_model
    from clipcap.pretrained import text_tower_dir
    from clipcap.teacher import CLIPTeacher, register_model_configs

    register_model_configs()
    model, _, tokenizer, source = create_teacher_model("ClipCap-LiT-S", PACKAGED, "all_minilm_l6_v2")
    minilm = AutoModel.from_pretrained(text_tower_dir("all_minilm_l6_v2"))
    reference, tower = minilm.state_dict(), model.text.transformer.state_dict()
    assert len(tower) > 90 and all(torch.equal(reference[k], v) for k, v in tower.items())
    trunk = model.visual.trunk.state_dict()
    assert all(torch.equal(packaged_weights(PACKAGED)[k], v) for k, v in trunk.items())
    assert tokenizer("a red toaster").shape == (1, 40)

    data = tmp_path / "data"
    tiny_dataset(num_train=8, num_validation=4, size=64).save_to_disk(str(data))
    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data), "--output_dir", str(out), "--model", "ClipCap-LiT-S"]
    argv += ["--image_tower_pretrained", PACKAGED, "--text_tower_pretrained", "all_minilm_l6_v2"]
    argv += ["--max_steps", "3", "--batch_size", "4", "--warmup_steps", "1"]
    assert train_clip_teacher.main(argv) == 0
    record = json.loads((out / "teacher.json").read_text())
    assert [entry["epoch"] for entry in record["history"]] == [1, 1.5]  # 8 rows / 4: an epoch is 2 steps
    assert sorted(p.name for p in (out / "text_tower").iterdir()) == [
        "config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    moved = tmp_path / "elsewhere" / "my-teacher"
    moved.parent.mkdir()
    out.rename(moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    teacher = CLIPTeacher.from_pretrained("ClipCap-LiT-S", "my-teacher")
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    text = teacher.embed_texts(["a red toaster"])
    assert text.shape == (1, 256) and torch.allclose(text.norm(dim=-1), torch.ones(1))
    assert teacher.embed_pil_images([image]).shape == (1, 256)
    assert teacher.identity.sha256 == record["sha256"]


@needs_packaged_weights
def test_lock_text_tower_trains_only_the_text_towers_last_layers(tmp_path, cache):
    """`--lock_text_tower --lock_text_unlocked_layers 2` (open_clip's lock, with BERT's layer names filled in): after 3
    steps MiniLM's embeddings and first 4 of its 6 layers are MiniLM's, LayerNorms included; its last 2 layers, the
    projection and the image trunk have moved."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    import train_clip_teacher
    from clipcap.lit_teacher import create_teacher_model, lock_text_tower
    from clipcap.pretrained import text_tower_dir
    from clipcap.teacher import register_model_configs

    register_model_configs()
    torch.manual_seed(0)  # as train_clip_teacher.py seeds itself: the same projection to start from
    model, _, _, _ = create_teacher_model("ClipCap-LiT-S", PACKAGED, "all_minilm_l6_v2")
    lock_text_tower(model, 2)
    trainable_text = {n.split(".")[2] for n, p in model.text.transformer.named_parameters() if p.requires_grad}
    assert trainable_text == {"4", "5"}  # encoder.layer.{4,5}.*
    assert all(p.requires_grad for p in model.text.proj.parameters())
    assert all(p.requires_grad for p in model.visual.parameters())
    with pytest.raises(ValueError, match="lock_text_unlocked_layers is a number of layers"):
        train_clip_teacher.TeacherTrainingArguments(lock_text_unlocked_layers=2)

    data = tmp_path / "data"
    tiny_dataset(num_train=8, num_validation=4, size=64).save_to_disk(str(data))
    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data), "--output_dir", str(out), "--model", "ClipCap-LiT-S"]
    argv += ["--image_tower_pretrained", PACKAGED, "--text_tower_pretrained", "all_minilm_l6_v2"]
    argv += ["--max_steps", "3", "--batch_size", "4", "--warmup_steps", "1", "--learning_rate", "1e-3"]
    argv += ["--lock_text_tower", "--lock_text_unlocked_layers", "2"]
    assert train_clip_teacher.main(argv) == 0
    trained = load_file(str(out / "open_clip_model.safetensors"))
    minilm = AutoModel.from_pretrained(text_tower_dir("all_minilm_l6_v2")).state_dict()
    minilm = {k: v for k, v in minilm.items() if f"text.transformer.{k}" in trained}  # open_clip keeps no pooler
    moved = {k for k, v in minilm.items() if not torch.equal(trained[f"text.transformer.{k}"], v)}
    locked = [k for k in minilm if k.startswith("embeddings.") or k.split(".")[2] in {"0", "1", "2", "3"}]
    assert len(locked) > 60 and not moved & set(locked)
    assert {k.split(".")[2] for k in moved} == {"4", "5"} and len(moved) == len(minilm) - len(locked)
    assert not torch.equal(trained["text.proj.weight"], model.text.proj.weight)


@needs_packaged_weights
def test_encode_text_by_length_gives_the_embeddings_of_one_piece(cache):
    """Texts of many lengths in 1, 2, 3 or 7 groups of about one length, each without its padding columns: the same
    unit embeddings as `encode_text` over the whole padded batch, in the rows' order, with gradients."""
    from clipcap.lit_teacher import create_teacher_model
    from clipcap.matching import encode_text_by_length
    from clipcap.teacher import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    model, _, tokenizer, _ = create_teacher_model("ClipCap-LiT-S", PACKAGED, "all_minilm_l6_v2")
    model.eval()  # no dropout: the same draws in every grouping
    words = ["a", "red", "toaster", "to", "the", "left", "of", "two", "green", "kettles", ",", "which", "is", "above"]
    words += ["a", "white", "oven"]
    texts = [" ".join(words[: 1 + (7 * k) % len(words)]) for k in range(11)]
    ids = tokenizer(texts)
    lengths = (ids != 0).sum(dim=1)
    assert len(set(lengths.tolist())) >= 8 and ids.shape[1] == 40
    expected = model.encode_text(ids, normalize=True)
    for groups in (1, 2, 3, 7):
        got = encode_text_by_length(model, ids, groups)
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    encode_text_by_length(model, ids, 3).sum().backward()
    assert model.text.proj.weight.grad is not None and model.text.proj.weight.grad.abs().sum() > 0
