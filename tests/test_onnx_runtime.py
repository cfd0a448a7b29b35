"""ClipCapONNXCaptioner: each graph within 1e-4 of PyTorch, the decoder with and without its cache, `generate` token
for token with the PyTorch model (greedy and beam 3), and graphs of another model or format refused."""

import json
import shutil

import onnx
import pytest
import torch

from clipcap.inference import load_captioner
from clipcap.onnx_export import GRAPHS, graph_file
from clipcap.onnx_runtime import ClipCapONNXCaptioner, verify_export
from modeling_clipcap import ClipCapForCaptioning


def images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported(onnx_export_dir):
    model = ClipCapForCaptioning.from_pretrained(onnx_export_dir / "model").eval()
    return model, onnx_export_dir / "export"


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


def test_generate_takes_pil_images_and_caption_decodes_them(exported):
    from PIL import Image

    from processing_clipcap import ClipCapProcessor

    model, export = exported
    images_ = [Image.new("RGB", (80, 64), color) for color in ("red", "navy", "olive")]
    processor = ClipCapProcessor.from_pretrained(export)
    expected = model.generate(processor(images=images_)["pixel_values"], num_beams=2, max_new_tokens=8)
    captioner = ClipCapONNXCaptioner.from_pretrained(export)
    assert torch.equal(captioner.generate(images_, num_beams=2, max_new_tokens=8), expected)
    assert captioner.caption(images_, num_beams=2, max_new_tokens=8) == processor.batch_decode(expected)
