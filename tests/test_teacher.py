"""clipcap/teacher.py (`CLIPTeacher`): a teacher checkpoint loads only from safetensors unless pickle is allowed
(docs/reliability.md), and a CLIP tag that cannot download offline is one error line."""

import pytest
import torch
from safetensors.torch import load_file


def test_teacher_checkpoint_must_be_safetensors_unless_pickle_is_allowed(tmp_path, teacher_checkpoint):
    from clipcap.teacher import CLIPTeacher

    state = load_file(str(teacher_checkpoint / "open_clip_model.safetensors"))
    torch.save(state, tmp_path / "teacher.pt")
    with pytest.raises(OSError, match=r"teacher checkpoint .*teacher.pt is not safetensors.*--allow_pickle"):
        CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(tmp_path / "teacher.pt"))
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(tmp_path / "teacher.pt"), allow_pickle=True)
    assert teacher.identity.embed_dim == 16


def test_teacher_offline_tag_is_one_line(caplog):
    """The whole of open_clip's reason, said once: not cut mid-word, and not logged by open_clip before it."""
    import open_clip

    from clipcap.teacher import CLIPTeacher

    with pytest.raises(RuntimeError) as raised:
        open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")
    reason = " ".join(str(raised.value).split())
    assert reason.startswith("Failed to download weights for tag 'openai': ") and len(reason) > 200
    caplog.clear()
    with pytest.raises(
        OSError, match="^could not load CLIP teacher ViT-B-32 'openai': .*local checkpoint path"
    ) as error:
        CLIPTeacher.from_pretrained("ViT-B-32", "openai")
    assert reason in str(error.value) and "\n" not in str(error.value)
    assert not [r for r in caplog.records if "Failed to download" in r.getMessage()]
