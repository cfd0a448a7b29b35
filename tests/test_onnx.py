"""ONNX export and the onnxruntime captioner: each graph against PyTorch, the cache, `generate` token for token,
int8, caption.py and the app on the export, and the errors for what cannot be exported or loaded."""

import json
import shutil

import onnx
import pytest
import torch
import yaml
from PIL import Image

import caption
import export_onnx
from clipcap.captioning_app import CaptioningDemo
from clipcap.inference import load_captioner
from clipcap.onnx_export import GRAPHS, graph_file, verify_export
from clipcap.onnx_runtime import ClipCapONNXCaptioner
from modeling_clipcap import ClipCapForCaptioning
from processing_clipcap import ClipCapProcessor
from tests.conftest import ROOT, tiny_model


def images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported(onnx_export_dir):
    model = ClipCapForCaptioning.from_pretrained(onnx_export_dir / "model").eval()
    return model, onnx_export_dir / "export"


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


def test_each_fp32_graph_is_within_1e_4_of_pytorch(exported):
    model, export = exported
    differences = verify_export(model, export)
    assert set(differences) == set(GRAPHS)
    assert all(difference < 1e-4 for difference in differences.values()), differences


def test_the_decoder_with_past_equals_the_decoder_without_past(onnx_export_dir):
    """The prefix and 5 tokens in one call with an empty cache, against the prefix then one token per call."""
    export = onnx_export_dir / "export"
    captioner = ClipCapONNXCaptioner.from_pretrained(export)
    prefix = torch.from_numpy(captioner.image_prefix(images(2, 64)))
    tokens = captioner.embed(torch.tensor([[5, 17, 900, 3, 44], [8, 8, 1, 2, 50000]]))
    whole = captioner.forward(inputs_embeds=torch.cat([prefix, tokens], dim=1))
    step = captioner.forward(inputs_embeds=prefix)
    logits = [step.logits[:, -1]]
    for position in range(tokens.shape[1]):
        step = captioner.forward(inputs_embeds=tokens[:, position : position + 1], cache=step.cache)
        logits.append(step.logits[:, -1])
    torch.testing.assert_close(torch.stack(logits, 1), whole.logits[:, prefix.shape[1] - 1 :], atol=1e-5, rtol=1e-5)
    for layer_whole, layer_steps in zip(whole.cache.layers, step.cache.layers, strict=True):
        assert layer_whole.keys.shape == (2, 2, 4 + 5, 16)
        torch.testing.assert_close(layer_steps.keys, layer_whole.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer_steps.values, layer_whole.values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_gives_the_token_ids_of_the_pytorch_model(exported, num_beams):
    model, export = exported
    pixel_values = images(8, 64)
    kwargs = {"num_beams": num_beams, "max_new_tokens": 12, "no_repeat_ngram_size": 3}
    expected = model.generate(pixel_values, **kwargs)
    ids = ClipCapONNXCaptioner.from_pretrained(export).generate(pixel_values, **kwargs)
    assert len({tuple(row) for row in expected.tolist()}) > 1  # the images get different captions
    assert torch.equal(ids, expected)


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


def test_int8_graphs_hold_int8_weights_in_under_a_third_of_the_bytes(onnx_export_dir):
    export = onnx_export_dir / "export"
    section = json.loads((export / "config.json").read_text())["onnx_export"]
    assert section["bytes"]["int8"] <= 0.3 * section["bytes"]["fp32"], section["bytes"]

    def op_types(name):
        return {node.op_type for node in onnx.load(str(export / graph_file(name, "int8"))).graph.node}

    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= op_types("decoder_model_merged")
    assert "QuantizeLinear" in op_types("vision_encoder") and "Conv" in op_types("vision_encoder")  # static QDQ
    fp32, int8 = (ClipCapONNXCaptioner.from_pretrained(export, dtype) for dtype in ("fp32", "int8"))
    # The dynamically quantized decoder stays near fp32 on the same prefix. (How close the statically quantized image
    # graph stays is a property of trained weights, not of this random model: bench/bench_onnx.py measures it on the
    # demo model by semantic accuracy.)
    pixel_values = images(4, 64)
    prefix = torch.from_numpy(fp32.image_prefix(pixel_values))
    logits = fp32.forward(inputs_embeds=prefix).logits
    logits_int8 = int8.forward(inputs_embeds=prefix).logits
    assert (logits_int8 - logits).abs().max() < 0.05 * logits.abs().max()
    assert int8.image_prefix(pixel_values).shape == prefix.shape
    assert int8.generate(pixel_values, num_beams=1, max_new_tokens=6).shape == (4, 6)


def test_caption_py_with_the_onnx_backend_writes_what_the_pytorch_model_writes(onnx_export_dir, tmp_path, capsys):
    for i, color in enumerate(["red", "navy", "olive"]):
        Image.new("RGB", (64, 64), color).save(tmp_path / f"{i}.png")
    outputs = {}
    for name, argv in {
        "pytorch": [str(onnx_export_dir / "model")],
        "onnx": [str(onnx_export_dir / "export"), "--backend", "onnx"],
    }.items():
        output = tmp_path / f"{name}.jsonl"
        argv += [str(tmp_path / "*.png"), "--format", "jsonl", "--output", str(output), "--num_beams", "2"]
        assert caption.main(argv + ["--progress", "false", "--max_new_tokens", "8"]) == caption.EXIT_OK
        outputs[name] = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(outputs["onnx"]) == 3 and outputs["onnx"] == outputs["pytorch"]
    int8 = [str(onnx_export_dir / "export"), str(tmp_path / "0.png"), "--onnx_dtype", "int8", "--progress", "false"]
    assert caption.main(int8) == caption.EXIT_OK


def test_the_app_captions_with_the_onnx_backend(onnx_export_dir):
    model, processor = load_captioner(str(onnx_export_dir / "model"))
    onnx_captioner, onnx_processor = load_captioner(str(onnx_export_dir / "export"), backend="onnx")
    assert isinstance(onnx_captioner, ClipCapONNXCaptioner)
    image = Image.new("RGB", (64, 64), "teal")
    expected = CaptioningDemo(model, processor).caption(image)
    assert CaptioningDemo(onnx_captioner, onnx_processor).caption(image) == expected


def test_exporting_a_directory_without_weights_fails_with_one_line(onnx_export_dir, tmp_path, capsys):
    (tmp_path / "model").mkdir()
    shutil.copyfile(onnx_export_dir / "model" / "config.json", tmp_path / "model" / "config.json")
    assert export_onnx.main([str(tmp_path / "model"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has no weights (model.safetensors" in error
    assert export_onnx.main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_graphs_of_another_model_or_format_are_refused(onnx_export_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(onnx_export_dir / "export", export)
    graph = onnx.load(str(export / graph_file("embed_tokens")))
    onnx.helper.set_model_props(graph, {"clipcap.format_version": "1", "clipcap.model_sha256": "0" * 64})
    onnx.save(graph, str(export / graph_file("embed_tokens")))
    with pytest.raises(ValueError, match=r"embed_tokens.onnx was exported from another model \(sha256 000000000000\)"):
        ClipCapONNXCaptioner.from_pretrained(export)
    ClipCapONNXCaptioner.from_pretrained(export, "int8")  # its own int8 graphs still load
    config = json.loads((export / "config.json").read_text())
    config["onnx_export"]["format_version"] = 0
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="export of format 0, this runtime reads format 1: export the model again"):
        ClipCapONNXCaptioner.from_pretrained(export, "int8")


def test_what_the_onnx_backend_cannot_load_is_one_clear_error(onnx_export_dir, tmp_path):
    model_dir, export = onnx_export_dir / "model", onnx_export_dir / "export"
    with pytest.raises(ValueError, match="not an ONNX export: run `python export_onnx.py"):
        load_captioner(str(model_dir), backend="onnx")
    with pytest.raises(ValueError, match="no onnx_export section"):
        ClipCapONNXCaptioner.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="is an ONNX export: caption it with the onnx backend"):
        load_captioner(str(export), backend="pytorch")
    fp32_only = tmp_path / "fp32"
    shutil.copytree(export, fp32_only)
    config = json.loads((fp32_only / "config.json").read_text())
    del config["onnx_export"]["graphs"]["int8"]
    (fp32_only / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has no int8 graphs .* export with --quantize int8"):
        ClipCapONNXCaptioner.from_pretrained(fp32_only, "int8")
    (fp32_only / graph_file("decoder_model_merged")).unlink()
    with pytest.raises(FileNotFoundError, match="decoder_model_merged.onnx is missing"):
        ClipCapONNXCaptioner.from_pretrained(fp32_only)
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 64, 64\), not \(2, 3, 32, 32\)"):
        ClipCapONNXCaptioner.from_pretrained(export).generate(images(2, 32))
