# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Captioning with onnxruntime from an `export_onnx.py` directory, decoded by transformers' own generation loop:

    captioner = ClipCapONNXCaptioner.from_pretrained("outputs/demo-onnx", dtype="int8")
    ids = captioner.generate(images, num_beams=3)        # PIL images, or the processor's pixel values
    captions = captioner.caption(images, num_beams=3)    # the same, decoded

The image graph makes the prefix; the decoder graph runs under `GenerationMixin.generate`, as optimum's
`ORTModelForCausalLM` does: its forward pass is one onnxruntime call, its cache a `DynamicCache` of the graph's
`present.*` outputs. So greedy search, beam search, sampling, the stopping, length and no-repeat rules are
transformers' code with the model's `generation_config`, the same as `ClipCapForCaptioning.generate` (which computes
the prefix's cache once per image and widens it to the beams: done here alike).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache, GenerationConfig, GPT2Config
from transformers.modeling_outputs import CausalLMOutputWithPast

from clipcap.onnx_export import FORMAT_VERSION, GRAPHS, past_names, read_export_config, require_onnx
from modeling_clipcap import ClipCapForCaptioning, ClipCapGenerationMixin
from processing_clipcap import ClipCapProcessor


def _session(path: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # onnxruntime's threads spin for more work after each call by default, taking the cores from the PyTorch ops
    # (log-softmax, top-k, the cache's reordering) that generate() runs between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_identity(path: Path, export: dict):
    """Refuse a graph that another model (or another layout version) made."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    metadata = {prop.key: prop.value for prop in graph.metadata_props}
    version = metadata.get("clipcap.format_version")
    if version != str(FORMAT_VERSION):
        raise ValueError(
            f"{path} is an export of format {version or 'unknown'}, this runtime reads format {FORMAT_VERSION}: "
            "export the model again with export_onnx.py"
        )
    if metadata.get("clipcap.model_sha256") != export["model_sha256"]:
        raise ValueError(
            f"{path} was exported from another model (sha256 {str(metadata.get('clipcap.model_sha256'))[:12]}) than "
            f"{path.parent.parent / 'config.json'} ({export['model_sha256'][:12]}): export the model again into one "
            "directory"
        )


class ClipCapONNXCaptioner(ClipCapGenerationMixin):
    """The exported graphs as a transformers generator: `generate(pixel_values, **generation_kwargs)` returns token
    ids as `ClipCapForCaptioning.generate` does."""

    main_input_name = "input_ids"
    _is_stateful = False
    _supports_cache_class = True

    def __init__(self, export_dir: str | Path, dtype: str = "fp32", threads: int | None = None):
        export_dir = Path(export_dir)
        config = read_export_config(export_dir)
        require_onnx("onnx", "onnxruntime")
        export = config["onnx_export"]
        if export.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{export_dir} is an export of format {export.get('format_version')}, this runtime reads format "
                f"{FORMAT_VERSION}: export the model again with export_onnx.py"
            )
        if dtype not in export["graphs"]:
            raise ValueError(
                f"{export_dir} has no {dtype} graphs (it has {', '.join(export['graphs'])})"
                + ("; export with --quantize int8" if dtype == "int8" else "")
            )
        self.export_dir = export_dir
        self.config = GPT2Config(**config["text_config"])
        self.image_size = config["image_size"]
        self.generation_config = GenerationConfig.from_pretrained(export_dir)
        self.sessions = {}
        for name in GRAPHS:
            path = export_dir / export["graphs"][dtype][name]
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: the export is incomplete; run export_onnx.py again")
            _check_identity(path, export)
            self.sessions[name] = _session(path, threads)
        self.num_layers = export["num_layers"]
        self.past_shape = (export["num_heads"], export["head_dim"])
        self.past_names = past_names(self.num_layers)

    @classmethod
    def from_pretrained(cls, export_dir: str | os.PathLike, dtype: str = "fp32", threads: int | None = None):
        """Load the graphs of `dtype` ("fp32" or "int8") from an `export_onnx.py` directory."""
        return cls(export_dir, dtype, threads)

    # What GenerationMixin asks of a model.
    device = torch.device("cpu")
    dtype = torch.float32

    def can_generate(self) -> bool:
        return True

    def eval(self):
        return self  # inference only: what callers of a PyTorch model do is a no-op here

    def get_experts_implementation(self) -> dict:
        return {}  # no mixture of experts

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def image_prefix(self, pixel_values) -> np.ndarray:
        """pixel_values `(batch, 3, image_size, image_size)` -> the prefix embeddings, by the image graph."""
        pixel_values = np.asarray(pixel_values.cpu() if torch.is_tensor(pixel_values) else pixel_values, np.float32)
        expected = (3, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {', '.join(map(str, expected))}), not {pixel_values.shape}: "
                "prepare the images with the export's processor"
            )
        return self.sessions["vision_encoder"].run(None, {"pixel_values": pixel_values})[0]

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.cpu().numpy().astype(np.int64)
        return torch.from_numpy(self.sessions["embed_tokens"].run(None, {"input_ids": ids})[0])

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, cache=None, **kwargs):
        """One decoder-graph call: the new tokens (or embeddings) after `cache`; a new `DynamicCache` of the graph's
        present tensors comes back."""
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids)
        batch = inputs_embeds.shape[0]
        past_length = cache.get_seq_length() if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, past_length + inputs_embeds.shape[1], dtype=torch.long)
        feeds = {
            "inputs_embeds": inputs_embeds.float().numpy(),
            "attention_mask": attention_mask.cpu().numpy().astype(np.int64),
        }
        if past_length:
            tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
            feeds.update({name: tensor.numpy() for name, tensor in zip(self.past_names, tensors)})
        else:
            empty = np.zeros((batch, self.past_shape[0], 0, self.past_shape[1]), np.float32)
            feeds.update(dict.fromkeys(self.past_names, empty))
        logits, *present = self.sessions["decoder_model_merged"].run(None, feeds)
        new_cache = DynamicCache(config=self.config)
        for layer in range(self.num_layers):
            new_cache.update(torch.from_numpy(present[2 * layer]), torch.from_numpy(present[2 * layer + 1]), layer)
        return CausalLMOutputWithPast(logits=torch.from_numpy(logits), cache=new_cache)

    def prepare_inputs_for_generation(self, input_ids, cache=None, attention_mask=None, inputs_embeds=None, **kwargs):
        """The new tokens only (all of `inputs_embeds` in the first step), as transformers' causal LMs prepare them."""
        past_length = cache.get_seq_length() if cache is not None else 0
        if inputs_embeds is not None and input_ids.shape[1] == 0:
            return {"inputs_embeds": inputs_embeds[:, past_length:], "attention_mask": attention_mask, "cache": cache}
        return {"input_ids": input_ids[:, -1:], "attention_mask": attention_mask, "cache": cache}

    def _prefix_cache(self, prefix_embeds: torch.Tensor) -> DynamicCache:
        """The cache of every prefix position but the last, computed once per image (as the PyTorch model does)."""
        cache = DynamicCache(config=self.config)
        if prefix_embeds.shape[1] > 1:
            cache = self.forward(inputs_embeds=prefix_embeds[:, :-1]).cache
        cache.per_image_prefix = True
        return cache

    @torch.no_grad()
    def generate(self, pixel_values=None, **kwargs) -> torch.LongTensor:
        """Caption a batch of images: PIL images (prepared by the export's processor) or the processor's pixel values
        (NumPy or PyTorch). `GenerationMixin.generate` runs over the image prefix with the export's
        `generation_config` and any of its options (`num_beams`, `max_new_tokens`, `do_sample`, ...). Returns the
        generated token ids; `caption` returns the text."""
        if pixel_values is None:
            raise ValueError("generate needs images or pixel_values: the ONNX captioner captions images")
        if isinstance(pixel_values, (list, tuple, Image.Image)):
            pixel_values = self.processor(images=pixel_values)["pixel_values"]
        kwargs.pop("labels", None)
        prefix = torch.from_numpy(self.image_prefix(pixel_values))
        attention_mask = torch.ones(prefix.shape[:2], dtype=torch.long)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            return super().generate(
                inputs_embeds=prefix, attention_mask=attention_mask, cache=self._prefix_cache(prefix), **kwargs
            )

    def caption(self, images, **kwargs) -> list[str]:
        """The captions of `images` (PIL images or pixel values): `generate`, decoded by the export's tokenizer."""
        return self.processor.batch_decode(self.generate(images, **kwargs))

    @functools.cached_property
    def processor(self) -> ClipCapProcessor:
        """The export's processor (image transform and tokenizer)."""
        return ClipCapProcessor.from_pretrained(self.export_dir)


@torch.no_grad()
def verify_export(model: ClipCapForCaptioning, export_dir: str | Path, dtype: str = "fp32", seed: int = 0) -> dict:
    """Largest difference between each graph of `dtype` and the PyTorch model on random inputs (3 images, 5 tokens
    after a cache of the prefix), in units of the PyTorch output's largest magnitude where that exceeds 1 (an
    absolute difference below it): the figure `export_onnx.py` prints and the tests bound by 1e-4."""
    captioner = ClipCapONNXCaptioner.from_pretrained(export_dir, dtype)
    generator = torch.Generator().manual_seed(seed)
    size, vocab = model.config.image_size, model.config.text_config.vocab_size
    pixel_values = torch.randn(3, 3, size, size, generator=generator)
    input_ids = torch.randint(vocab, (3, 5), generator=generator)
    prefix = model.get_prefix_embeds(pixel_values)
    onnx_prefix = torch.from_numpy(captioner.image_prefix(pixel_values))
    embeds = model.get_input_embeddings()(input_ids)
    cache = DynamicCache(config=model.decoder.config)
    model.decoder(inputs_embeds=prefix, cache=cache, use_cache=True)
    mask = torch.ones(3, prefix.shape[1] + 5, dtype=torch.long)
    logits = model.decoder(inputs_embeds=embeds, attention_mask=mask, cache=cache, use_cache=True).logits
    onnx_cache = captioner.forward(inputs_embeds=prefix).cache
    onnx_logits = captioner.forward(inputs_embeds=embeds, attention_mask=mask, cache=onnx_cache).logits

    def difference(onnx_output, output):
        return ((onnx_output - output).abs().max() / output.abs().max().clamp(min=1)).item()

    return {
        "vision_encoder": difference(onnx_prefix, prefix),
        "embed_tokens": difference(captioner.embed(input_ids), embeds),
        "decoder_model_merged": difference(onnx_logits, logits),
    }
