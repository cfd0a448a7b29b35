"""export_onnx.py: every graph written with the processor and the model's identity, the script's check of each graph
against PyTorch, a demo-size model exported token for token, and a directory without weights refused in one line."""

import json
import shutil

import pytest
import torch
import yaml

import export_onnx
from clipcap.onnx_export import GRAPHS, graph_file
from clipcap.onnx_runtime import ClipCapONNXCaptioner, verify_export
from processing_clipcap import ClipCapProcessor
from tests.conftest import ROOT, tiny_model


def images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_script_exports_every_graph_and_reports_its_check(onnx_export_dir):
    export = onnx_export_dir / "export"
    config = json.loads((export / "config.json").read_text())
    section = config["onnx_export"]
    assert section["opset"] == 18 and section["format_version"] == 1 and section["static_image_quantization"]
    for dtype in ("fp32", "int8"):
        for name in GRAPHS:
            assert section["graphs"][dtype][name] == graph_file(name, dtype)
            assert (export / graph_file(name, dtype)).is_file()
    for name in ("generation_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (export / name).is_file()
    assert not (export / "modeling_clipcap.py").exists()  # the graphs need no PyTorch code
    log = (onnx_export_dir / "export.log").read_text()
    assert "opset 18" in log and "largest |ONNX - PyTorch| / max(1, |PyTorch|): vision_encoder" in log


@pytest.mark.slow
def test_a_demo_size_model_exports_token_for_token(tmp_path):
    """configs/demo.yaml's model shape (MobileNetV2 at 128 px, its 4x4 grid through a 2-layer transformer mapper,
    a 2-layer 256-wide decoder), random weights and GPT-2's tokenizer: graphs within 1e-4, greedy and beam-3 ids
    the PyTorch model's for 8 images."""
    overrides = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["config_overrides"]
    overrides.update(encoder_pretrained=False, teacher_embed_dim=0)
    overrides["text_config"] = {**overrides["text_config"]}
    model = tiny_model(**overrides)
    model.save_pretrained(tmp_path / "model")
    ClipCapProcessor.from_config(model.config).save_pretrained(tmp_path / "model")
    assert export_onnx.main([str(tmp_path / "model"), str(tmp_path / "export"), "--no_verify"]) == 0
    differences = verify_export(model, tmp_path / "export")
    assert all(difference < 1e-4 for difference in differences.values()), differences
    captioner = ClipCapONNXCaptioner.from_pretrained(tmp_path / "export")
    pixel_values = images(8, 128)
    for num_beams in (1, 3):
        expected = model.generate(pixel_values, num_beams=num_beams, max_new_tokens=10)
        assert torch.equal(captioner.generate(pixel_values, num_beams=num_beams, max_new_tokens=10), expected)


def test_exporting_a_directory_without_weights_fails_with_one_line(onnx_export_dir, tmp_path, capsys):
    (tmp_path / "model").mkdir()
    shutil.copyfile(onnx_export_dir / "model" / "config.json", tmp_path / "model" / "config.json")
    assert export_onnx.main([str(tmp_path / "model"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has no weights (model.safetensors" in error
    assert export_onnx.main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "has no config.json" in capsys.readouterr().err
