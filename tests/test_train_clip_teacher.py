"""train_clip_teacher.py: it trains a tiny open_clip teacher and saves a checkpoint that open_clip and
`CLIPTeacher` load, identified by its checksum, and does not overwrite it unless asked to."""

import json

import pytest
import torch


def test_train_clip_teacher_saves_a_checkpoint_open_clip_loads(tmp_path, data_dir, teacher_checkpoint):
    import open_clip

    import train_clip_teacher

    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data_dir), "--output_dir", str(out), "--model", "ClipCap-Test-Teacher"]
    argv += ["--num_train_epochs", "2", "--batch_size", "4", "--warmup_steps", "1"]
    assert train_clip_teacher.main(argv) == 0
    record = json.loads((out / "teacher.json").read_text())
    assert record["arch"] == "ClipCap-Test-Teacher" and len(record["history"]) == 2
    # 12 images in batches of 4: three steps an epoch; recall over 4 validation images is a multiple of 1/4.
    validation = record["validation"]
    assert validation["image_to_text_R@1"] * 4 == pytest.approx(round(validation["image_to_text_R@1"] * 4))
    assert 0.0 <= validation["text_to_image_R@1"] <= 1.0
    model = open_clip.create_model("ClipCap-Test-Teacher", pretrained=record["pretrained"])
    trained = {k: v for k, v in model.state_dict().items()}
    random_start = open_clip.create_model(
        "ClipCap-Test-Teacher", pretrained=str(teacher_checkpoint / "open_clip_model.safetensors")
    )
    assert any(not torch.equal(trained[k], v) for k, v in random_start.state_dict().items())
    # The teacher loads through the project's wrapper from the directory, identified by its checksum.
    from clipcap.files import file_sha256
    from clipcap.teacher import CLIPTeacher

    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(out))
    assert teacher.identity.sha256 == record["sha256"] == file_sha256(out / "open_clip_model.safetensors")
    # A second run does not overwrite the teacher unless asked to.
    assert train_clip_teacher.main(argv) == 1
