"""clipcap/lit_teacher.py: a LiT-style teacher built from the packaged pretrained towers (the MiniLM text tower, the
ImageNet image trunk) and trained by train_clip_teacher.py; its saved directory moves and still loads."""

import json

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
