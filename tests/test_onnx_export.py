"""clipcap.onnx_export: the int8 graphs (dynamic decoder, static QDQ image encoder) in under a third of the bytes."""

import json

import onnx
import torch

from clipcap.onnx_export import graph_file
from clipcap.onnx_runtime import ClipCapONNXCaptioner


def images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


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
