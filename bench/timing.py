"""What the benchmarks share: medians of runs made side by side, the CPU's matmul peak, the machine, reports.

These machines are noisy (shared cores whose speed drifts by 20% within minutes), so a figure is never a time
measured alone: variants run in alternation, round after round, in a shuffled order each round (so that neither
drift nor the position after a particular variant favours one), and each reports its median; ratios are taken
between medians of the same invocation.
"""

import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


class TrainStep:
    """Forward, `loss(outputs)`, backward and an AdamW update of `model` on fixed `inputs`."""

    def __init__(self, model, inputs, loss):
        self.model, self.inputs, self.loss = model.train(), inputs, loss
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(**self.inputs)).backward()
        self.optimizer.step()


def demo_captioner_step(batch_size: int, generator: torch.Generator, **overrides) -> TrainStep:
    """A training step of `configs/demo.yaml`'s captioner (random weights, `overrides` over its model config) on
    `batch_size` random 128 px images with 40-token captions, with a teacher head as the CLIP losses need."""
    import yaml

    from clipcap.cli import build_model_config
    from modeling_clipcap import ClipCapForCaptioning

    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["config_overrides"]
    config = build_model_config({**demo, "encoder_pretrained": False, **overrides}, teacher_embed_dim=256)
    config.text_config.vocab_size = 400  # the demo's domain tokenizer
    model = ClipCapForCaptioning(config)
    ids = torch.randint(0, 400, (batch_size, 40), generator=generator)
    inputs = {
        "pixel_values": torch.randn(batch_size, 3, 128, 128, generator=generator),
        "input_ids": ids,
        "labels": ids,
    }
    return TrainStep(
        model, inputs, lambda outputs: outputs.loss + outputs.z.square().mean()
    )  # z: what L_cos/L_con read


def median_seconds(function, repeats: int) -> tuple[float, list[float]]:
    """Median wall seconds of `function()` over `repeats` runs after one warm-up run, and the runs themselves."""
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def side_by_side(functions: dict, repeats: int, warmup=True, seed: int = 0) -> dict[str, dict]:
    """Run the functions once to warm up (all, or the names in `warmup`), then `repeats` rounds in which each runs
    once, in an order shuffled anew each round: drift on a noisy machine hits all of them alike. Returns
    `{name: {"median_s": ..., "times_s": [...]}}` in the order given."""
    for name, function in functions.items():
        if warmup is True or (warmup and name in warmup):
            function()
    times = {name: [] for name in functions}
    order, shuffle = list(functions), random.Random(seed).shuffle
    for _ in range(repeats):
        shuffle(order)
        for name in order:
            function = functions[name]
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "times_s": [round(x, 4) for x in t]} for name, t in times.items()}


def matmul_flops(size: int = 4096, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of one `size` x `size` matmul: the CPU's practical peak (time it side by side with the workload)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    start = time.perf_counter()
    torch.matmul(a, b)
    return 2 * size**3 / (time.perf_counter() - start)


class PeakMeter:
    """A matmul peak measured between the workload's rounds: call it as one more side-by-side function, then read
    `median` (FLOP/s)."""

    def __init__(self, size: int = 4096, runs: int = 3):
        self.size, self.runs, self.samples = size, runs, []

    def __call__(self):
        self.samples.extend(matmul_flops(self.size) for _ in range(self.runs))

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def machine() -> str:
    """The CPU (model, cores, torch's capability, native bf16), torch's threads and version."""
    from clipcap.precision import describe_cpu  # the scripts put the repository root on the path before this

    return f"{describe_cpu()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def write_results(name: str, results: dict, output: str | None = None) -> Path:
    """Write `results` (with the command and the machine) as bench/results/<name>.json, or to `output`."""
    path = Path(output) if output else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results = {"command": "python " + " ".join(sys.argv), "machine": machine(), **results}
    path.write_text(json.dumps(results, indent=2))
    return path
