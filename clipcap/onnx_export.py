# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""A saved captioner as ONNX graphs, laid out as optimum and transformers.js lay out a vision-language model:

    OUT_DIR/config.json                          the model's config, with `onnx_export`: its identity and the graphs
    OUT_DIR/generation_config.json               the decoding defaults `model.generate` uses
    OUT_DIR/processor_config.json, tokenizer*    the processor: image transform and tokenizer
    OUT_DIR/onnx/vision_encoder.onnx             pixel_values (batch, 3, H, W) -> inputs_embeds (batch, prefix, n_embd)
    OUT_DIR/onnx/embed_tokens.onnx               input_ids (batch, tokens) -> inputs_embeds (batch, tokens, n_embd)
    OUT_DIR/onnx/decoder_model_merged.onnx       inputs_embeds, attention_mask, past_key_values.{i}.key/value
                                                 -> logits, present.{i}.key/value
    OUT_DIR/onnx/*_int8.onnx                     with `quantize="int8"`: the same graphs in int8

The decoder is one graph with and without a cache: its past may be empty (length 0), which is how transformers.js
starts a `decoder_model_merged.onnx`, so the first step (the image prefix) and every later step run the same file.
Graphs come from `torch.onnx.export(dynamo=True)` (opset `OPSET`) of thin wrappers that flatten GPT-2's
`DynamicCache` into named tensors. int8 (`quantize_int8`): onnxruntime's dynamic quantization of the decoder's and
the embedding's MatMul / Gather weights (activations quantized per call), and static QDQ quantization of the image
encoder with a calibration set, since onnxruntime's CPU and web providers have no dynamic int8 Conv (`ConvInteger`).

Every graph carries the model's fingerprint (SHA-256 of its weights) and `FORMAT_VERSION` in its metadata, and
`config.json` records them, so a runtime refuses graphs of another model or of an older layout
(`clipcap.onnx_runtime`, which also checks each graph against PyTorch: `verify_export`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache
from transformers import __version__ as transformers_version

from clipcap.data import IMAGE_COLUMN, load_prepared_dataset
from clipcap.files import files_sha256
from modeling_clipcap import ClipCapForCaptioning
from processing_clipcap import ClipCapProcessor

FORMAT_VERSION = 1
OPSET = 18
GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
DTYPES = {"fp32": "", "int8": "_int8"}  # file suffix per dtype, as transformers.js names its variants
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def require_onnx(*modules: str):
    """Import the ONNX packages a step needs, or say in one line which extra installs them."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(
                f'{module} is not installed: ONNX export and captioning need the onnx extra (pip install -e ".[onnx]")'
            ) from error


def graph_file(name: str, dtype: str = "fp32") -> str:
    """Path of a graph inside the export directory: `onnx/decoder_model_merged_int8.onnx`."""
    return f"onnx/{name}{DTYPES[dtype]}.onnx"


def past_names(num_layers: int, prefix: str = "past_key_values") -> list[str]:
    """`past_key_values.0.key`, `past_key_values.0.value`, ... (or `present.*`): optimum's names for the cache."""
    return [f"{prefix}.{layer}.{kind}" for layer in range(num_layers) for kind in ("key", "value")]


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the model's config and weight files: what a runtime compares with the graphs'."""
    model_dir = Path(model_dir)
    weights = sorted(p for p in model_dir.iterdir() if p.name in WEIGHT_FILES or p.name.startswith("model-0"))
    if not weights:
        raise FileNotFoundError(
            f"{model_dir} has no weights ({' or '.join(WEIGHT_FILES[:2])}): nothing to export; give a directory "
            "that save_pretrained or run_train.py wrote"
        )
    return files_sha256([model_dir / "config.json", *weights])


class VisionEncoderGraph(nn.Module):
    """pixel_values -> the decoder's image prefix (`ClipCapForCaptioning.get_prefix_embeds`)."""

    def __init__(self, model: ClipCapForCaptioning):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_prefix_embeds(pixel_values)


class EmbedTokensGraph(nn.Module):
    """input_ids -> the decoder's token embeddings (GPT-2 adds positions inside the decoder graph)."""

    def __init__(self, model: ClipCapForCaptioning):
        super().__init__()
        self.embeddings = model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids)


class DecoderGraph(nn.Module):
    """One decoder step over `inputs_embeds` after a cache given as `2 * n_layer` tensors `(batch, heads, past,
    head_dim)` (past 0: no cache): returns the logits and the whole cache after the step (past + new)."""

    def __init__(self, model: ClipCapForCaptioning):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor):
        cache = DynamicCache(config=self.decoder.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache, use_cache=True)
        present = [tensor for layer in out.cache.layers for tensor in (layer.keys, layer.values)]
        return (out.logits, *present)


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_shapes, metadata: dict):
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on what it decomposed
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
    program.save(str(path))
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {key: str(value) for key, value in metadata.items()})
    onnx.save(graph, str(path))


def export_graphs(model: ClipCapForCaptioning, onnx_dir: str | Path, metadata: dict) -> dict[str, Path]:
    """The three fp32 graphs of `model` in `onnx_dir`, each carrying `metadata`."""
    onnx_dir = Path(onnx_dir)
    onnx_dir.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    config = model.config
    text = config.text_config
    image = torch.randn(2, 3, config.image_size, config.image_size)
    paths = {name: onnx_dir / Path(graph_file(name)).name for name in GRAPHS}
    batch = torch.export.Dim("batch")
    _export(
        VisionEncoderGraph(model),
        (image,),
        paths["vision_encoder"],
        ["pixel_values"],
        ["inputs_embeds"],
        {"pixel_values": {0: batch}},
        metadata,
    )
    _export(
        EmbedTokensGraph(model),
        (torch.tensor([[1, 2], [3, 4]]),),
        paths["embed_tokens"],
        ["input_ids"],
        ["inputs_embeds"],
        {"input_ids": {0: batch, 1: torch.export.Dim("sequence")}},
        metadata,
    )
    # Traced with 2 new tokens after 4 cached ones (a size of 1 would be specialized): every size stays symbolic.
    head_dim = text.n_embd // text.n_head
    past = tuple(torch.randn(2, text.n_head, 4, head_dim) for _ in range(2 * text.n_layer))
    previous = model.decoder.config._attn_implementation
    model.decoder.set_attn_implementation("eager")  # SDPA's is_causal flag does not trace with symbolic lengths
    try:
        _export(
            DecoderGraph(model),
            (torch.randn(2, 2, text.n_embd), torch.ones(2, 6, dtype=torch.long), *past),
            paths["decoder_model_merged"],
            ["inputs_embeds", "attention_mask", *past_names(text.n_layer)],
            ["logits", *past_names(text.n_layer, "present")],
            (
                {0: batch, 1: torch.export.Dim("sequence")},
                {0: batch, 1: torch.export.Dim("total_sequence")},
                tuple({0: batch, 2: torch.export.Dim("past_sequence")} for _ in past),
            ),
            metadata,
        )
    finally:
        model.decoder.set_attn_implementation(previous)
    return paths


class _CalibrationImages:
    """onnxruntime's `CalibrationDataReader` over batches of pixel values."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"pixel_values": batch}


def quantize_int8(onnx_dir: str | Path, calibration: Iterable[np.ndarray] | None = None) -> dict[str, Path]:
    """The int8 graphs beside the fp32 ones: the decoder and the token embeddings by dynamic quantization (int8
    weights per output channel of MatMul/Gemm, per tensor of Gather; activations quantized at run time), the image
    encoder by static QDQ quantization calibrated on `calibration` (batches of pixel values), or left fp32 (copied)
    without one."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    onnx_dir = Path(onnx_dir)
    paths = {name: onnx_dir / Path(graph_file(name, "int8")).name for name in GRAPHS}
    for name, op_types in (("decoder_model_merged", ["MatMul", "Gemm"]), ("embed_tokens", ["Gather"])):
        quantize_dynamic(
            onnx_dir / Path(graph_file(name)).name,
            paths[name],
            op_types_to_quantize=op_types,
            weight_type=QuantType.QInt8,
            per_channel=name == "decoder_model_merged",
        )
    vision = onnx_dir / Path(graph_file("vision_encoder")).name
    if calibration is None:
        shutil.copyfile(vision, paths["vision_encoder"])
    else:
        quantize_static(
            vision,
            paths["vision_encoder"],
            _CalibrationImages(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return paths


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    quantize: str | None = None,
    calibration: Iterable[np.ndarray] | None = None,
) -> dict:
    """Export the saved model in `model_dir` (what `save_pretrained` wrote) to `out_dir`; returns the `onnx_export`
    section written into `out_dir/config.json`. `quantize="int8"` adds the int8 graphs (`quantize_int8`)."""
    require_onnx("onnx", "onnxruntime", "onnxscript")
    import onnx
    import onnxruntime

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', not {quantize!r}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved ClipCap model: it has no config.json")
    fingerprint = model_fingerprint(model_dir)
    model = ClipCapForCaptioning.from_pretrained(model_dir).eval()
    processor = ClipCapProcessor.from_pretrained(model_dir)
    identity = {
        "format_version": FORMAT_VERSION,
        "model_sha256": fingerprint,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "opset": OPSET,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers_version,
    }
    metadata = {"clipcap.format_version": FORMAT_VERSION, "clipcap.model_sha256": fingerprint}
    out_dir.mkdir(parents=True, exist_ok=True)
    export_graphs(model, out_dir / "onnx", metadata)
    dtypes = ["fp32"]
    if quantize == "int8":
        quantize_int8(out_dir / "onnx", calibration)
        dtypes.append("int8")
    files = {dtype: {name: graph_file(name, dtype) for name in GRAPHS} for dtype in dtypes}
    sizes = {
        dtype: sum((out_dir / path).stat().st_size for path in graphs.values()) for dtype, graphs in files.items()
    }
    section = {
        **identity,
        "graphs": files,
        "bytes": sizes,
        "num_layers": model.config.text_config.n_layer,
        "num_heads": model.config.text_config.n_head,
        "head_dim": model.config.text_config.n_embd // model.config.text_config.n_head,
        "static_image_quantization": calibration is not None and quantize == "int8",
    }
    model.config.onnx_export = section
    model.config.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    for stray in ("configuration_clipcap.py", "processing_clipcap.py"):  # the export needs no PyTorch code
        (out_dir / stray).unlink(missing_ok=True)
    if (model_dir / "run_args.json").is_file():  # the data and teacher it was trained with (app.py, run_eval.py)
        shutil.copyfile(model_dir / "run_args.json", out_dir / "run_args.json")
    return section


def calibration_batches(
    dataset_dir: str | Path, processor, num_images: int = 64, batch_size: int = 16, image_column: str = IMAGE_COLUMN
):
    """Pixel values of the first `num_images` training images of a prepared dataset, `batch_size` at a time: the
    image graph's static quantization calibrates its activation ranges on them."""
    dataset, _ = load_prepared_dataset(str(dataset_dir), {"train": [IMAGE_COLUMN]}, image_column=image_column)
    train = dataset["train"]
    for start in range(0, min(num_images, len(train)), batch_size):
        images = train[start : min(start + batch_size, num_images)][IMAGE_COLUMN]
        yield processor(images=[image.convert("RGB") for image in images])["pixel_values"].numpy()


def is_onnx_export(path: str | Path) -> bool:
    """True for a directory that export_onnx.py wrote (its config.json has an `onnx_export` section)."""
    config = Path(path, "config.json")
    return config.is_file() and "onnx_export" in json.loads(config.read_text())


def read_export_config(export_dir: str | Path) -> dict:
    """`config.json` of an export directory, checked to hold an `onnx_export` section."""
    path = Path(export_dir, "config.json")
    if not path.is_file():
        raise FileNotFoundError(f"{export_dir} has no config.json: not an export_onnx.py directory")
    config = json.loads(path.read_text())
    if "onnx_export" not in config:
        raise ValueError(f"{path} has no onnx_export section: a model directory, not an export; run export_onnx.py")
    return config
