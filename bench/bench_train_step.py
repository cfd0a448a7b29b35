"""Compute efficiency and peak memory of a training step on CPU.

    python bench/bench_train_step.py [--repeats 5] [--batch_size 16] [--caption_tokens 30]

Efficiency: achieved FLOP/s divided by this CPU's fp32 matmul peak (a 4096 x 4096 matmul timed between the rounds).
A step's FLOPs are the model FLOPs of MFU (Chowdhery et al. 2022, PaLM, appendix B): 3 x the forward pass's matmul,
attention and convolution FLOPs as `torch.utils.flop_counter` counts them (the backward pass costs twice the forward;
the counter's own count of a backward pass is wrong for grouped convolutions, 11.7 GFLOP for MobileNetV2's 0.6).
A step is forward, loss, backward, gradient clipping to 1.0 and an AdamW update. Side by side, in alternation:

  * a plain DistilGPT2-sized `GPT2LMHeadModel`, `--batch_size` x `--caption_tokens` tokens, fp32, as transformers and
    torch ship it (GPT-2's `gelu_new`, torch's default AdamW);
  * the same decoder with this project's settings (one fused GELU kernel, the fused AdamW the Trainer picks), and the
    same under bf16 autocast;
  * the captioner's decoder step: a frozen, cached encoder (`image_features`), so the MLP mapper, the prefix of 10
    and the caption through DistilGPT2, the LM head on caption positions only;
  * the whole captioner step (MobileNetV2 at 224 px trained too).
The process keeps freed memory (`clipcap.memory.keep_freed_memory`) as the scripts do.

Memory: the peak RSS of a fresh process that builds the default captioner (MobileNetV2 + DistilGPT2) and runs three
training steps at `--batch_size` with the CLIP losses (cached teacher embeddings): with `keep_freed_memory` (as the
scripts run), with glibc's default malloc, under bf16 autocast, and with a frozen encoder whose features are cached;
with the RSS of the libraries alone (after the
imports) and of the model before its first step. Prints a table and writes bench/results/train_step.json.
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import PeakMeter, side_by_side, write_results  # noqa: E402 - bench/ is the script directory
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from clipcap.losses import contrastive_loss, cosine_alignment_loss  # noqa: E402
from configuration_clipcap import DISTILGPT2_SHAPE, ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402


class Step:
    """One training step of `model` on fixed `inputs`, with its optimizer; `flops` counts one step's FLOPs."""

    def __init__(self, model, inputs, fused=True, autocast=False, extra_loss=None):
        self.model, self.inputs = model.train(), inputs
        self.autocast, self.extra_loss = autocast, extra_loss
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused or None, foreach=not fused)

    def loss(self):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            outputs = self.model(**self.inputs)
        return outputs.loss + (self.extra_loss(outputs) if self.extra_loss else 0)

    def __call__(self):
        self.loss().backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def flops(self) -> float:
        """Model FLOPs of one step: 3 x the forward pass's (see the module docstring)."""
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            self.loss()
        return 3.0 * counter.get_total_flops()


def captioner(batch_size: int, caption_tokens: int, freeze_encoder: bool, teacher_dim: int = 512):
    torch.manual_seed(0)
    config = ClipCapConfig(
        encoder_pretrained=False,
        decoder_name_or_path=None,
        freeze_encoder=freeze_encoder,
        teacher_embed_dim=teacher_dim,
    )
    model = ClipCapForCaptioning(config)
    ids = torch.randint(0, 50256, (batch_size, caption_tokens))
    pixel_values = torch.randn(batch_size, 3, config.image_size, config.image_size)
    inputs = {"input_ids": ids, "labels": ids, "return_logits": False}
    if freeze_encoder:
        with torch.no_grad():
            inputs["image_features"] = model.eval().get_encoder_features(pixel_values)
    else:
        inputs["pixel_values"] = pixel_values
    return model, inputs


def clip_losses(teacher_dim: int, batch_size: int):
    """L_cos + 0.1 L_con against fixed unit vectors standing in for cached teacher embeddings."""
    images = torch.nn.functional.normalize(torch.randn(batch_size, teacher_dim), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(batch_size, teacher_dim), dim=-1)
    return lambda outputs: (
        cosine_alignment_loss(outputs.z, images) + 0.1 * contrastive_loss(outputs.z, texts, 1 / 0.07)
    )


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def memory_child(args) -> None:
    """RSS of a process that runs three captioner training steps (the parent starts it fresh): after the imports,
    with the model and optimizer built, and at its peak."""
    if args.memory_child != "default":
        from clipcap.memory import keep_freed_memory

        keep_freed_memory()
    libraries = rss_bytes()
    frozen = args.memory_child == "frozen"
    model, inputs = captioner(args.batch_size, args.caption_tokens, freeze_encoder=frozen)
    autocast = args.memory_child == "bf16"
    step = Step(model, inputs, autocast=autocast, extra_loss=clip_losses(512, args.batch_size))
    built = rss_bytes()
    for _ in range(3):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"libraries_bytes": libraries, "model_built_bytes": built, "peak_rss_bytes": peak}))


def peak_rss(setting: str, args) -> dict:
    command = [sys.executable, __file__, "--memory_child", setting, "--batch_size", str(args.batch_size)]
    command += ["--caption_tokens", str(args.caption_tokens)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--caption_tokens", type=int, default=30)
    parser.add_argument("--memory_child", choices=["keep", "default", "bf16", "frozen"], help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args)

    batch, tokens = args.batch_size, args.caption_tokens
    from clipcap.memory import keep_freed_memory

    keep_freed_memory()  # as the scripts do (the memory children are fresh processes and choose for themselves)
    memory = {
        "keep_freed_memory": peak_rss("keep", args),
        "glibc default malloc": peak_rss("default", args),
        "keep_freed_memory, bf16 autocast": peak_rss("bf16", args),
        "keep_freed_memory, frozen encoder, cached features": peak_rss("frozen", args),
    }

    torch.manual_seed(0)
    ids = torch.randint(0, 50256, (batch, tokens))
    plain_inputs = {"input_ids": ids, "labels": ids}
    plain = GPT2LMHeadModel(GPT2Config(**DISTILGPT2_SHAPE))  # activation gelu_new, transformers' default
    tuned = GPT2LMHeadModel(GPT2Config(**DISTILGPT2_SHAPE, activation_function="gelu_pytorch_tanh"))
    tuned.load_state_dict(plain.state_dict())
    decoder_model, decoder_inputs = captioner(batch, tokens, freeze_encoder=True)
    full_model, full_inputs = captioner(batch, tokens, freeze_encoder=False)
    steps = {
        "GPT-2 (DistilGPT2 size), transformers/torch defaults": Step(plain, plain_inputs, fused=False),
        "GPT-2 (DistilGPT2 size), this project's settings": Step(tuned, plain_inputs),
        "GPT-2 (DistilGPT2 size), this project's settings, bf16 autocast": Step(tuned, plain_inputs, autocast=True),
        "captioner decoder step (frozen encoder, cached features)": Step(decoder_model, decoder_inputs),
        "captioner whole step (MobileNetV2 trained too)": Step(full_model, full_inputs),
    }
    flops = {name: step.flops() for name, step in steps.items()}
    peak = PeakMeter()
    print(f"Timing {len(steps)} training steps side by side, {args.repeats} rounds after a warm-up ...", flush=True)
    timings = side_by_side({**steps, "peak": peak}, args.repeats)
    timings.pop("peak")
    rows = {}
    for name, timing in timings.items():
        achieved = flops[name] / timing["median_s"]
        rows[name] = {
            **timing,
            "flops": flops[name],
            "flops_per_s": achieved,
            "fraction_of_peak": achieved / peak.median,
        }
    results = {
        "setup": vars(args),
        "matmul_peak_flops": peak.median,
        "steps": rows,
        "memory": memory,
    }
    print(f"\nfp32 matmul peak {peak.median / 1e9:.0f} GFLOP/s; batch {batch} x {tokens} caption tokens")
    print(f"{'training step':<66}{'GFLOP':>8}{'median s':>10}{'GFLOP/s':>9}{'of peak':>9}")
    for name, row in rows.items():
        print(
            f"{name:<66}{row['flops'] / 1e9:>8.0f}{row['median_s']:>10.3f}{row['flops_per_s'] / 1e9:>9.0f}"
            f"{row['fraction_of_peak']:>9.0%}"
        )
    print(f"\ncaptioner training, batch {batch}, RSS in GiB     libraries  +model,optimizer  peak")
    for name, row in memory.items():
        print(
            f"{name:<48}{row['libraries_bytes'] / 2**30:>10.2f}{row['model_built_bytes'] / 2**30:>18.2f}"
            f"{row['peak_rss_bytes'] / 2**30:>6.2f}"
        )
    print(f"wrote {write_results('train_step', results, args.output)}")


if __name__ == "__main__":
    main()
