"""examples/overfit_smoke.py, the smoke example: a small model learns to caption four images, end to end (training,
saving, reloading, beam search)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import overfit_smoke  # noqa: E402


@pytest.mark.slow
def test_small_model_learns_to_caption_four_images(tmp_path):
    """Training, saving, reloading and beam search end to end: every image gets exactly its caption back.

    Beam search must return the most likely caption: with `early_stopping=True` in the default generation config,
    a beam ending at once with EOS once finished the search before 'a red round microwave oven' (6 tokens) was
    complete, and a shorter caption of another image won.
    """
    pairs = overfit_smoke.main(output_dir=str(tmp_path / "smoke"))
    assert [caption for caption, _ in pairs] == [reference for _, reference in pairs]
    assert (tmp_path / "smoke" / "model.safetensors").is_file()
