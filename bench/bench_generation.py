"""Captions/s of batched beam search against a cache-less per-image loop and against this CPU's limit.

    python bench/bench_generation.py [--repeats 3] [--batch_size 32] [--num_beams 5] [--new_tokens 20]

The default captioner (MobileNetV2 at 224 px -> MLP prefix of 10 -> DistilGPT2-shaped decoder; random weights, the
shapes are what matter for time) captions `--batch_size` images with `generate` (beam 5, KV cache, the model's
generation config: n-gram blocking of 3) for exactly `--new_tokens` tokens each (EOS is switched off, so a random
model's EOS cannot end beams early; `min_new_tokens` would instead add two logits processors real captioning does not
run). Each setting runs in fresh child processes, alternated, `--rounds` of them, each timing `--runs` captionings
after a warm-up (a long-lived process that has run other variants is slower by up to 20%: its heap is laid out for
them), and right after each captioning the limit is measured anew:

  * the limit: this CPU's fp32 matmul peak (a 4096 x 4096 matmul) divided by the FLOPs a caption needs: the encoder
    and mapper (counted by `torch.utils.flop_counter`), then per beam the prefix through the decoder, the LM head
    once, and for every further token the decoder layers, attention over the context and the LM head (analytic,
    `caption_flops`). A run's fraction of the limit uses the peak measured next to it (these cores drift by 20%);
  * `generate` as shipped, in a process that calls `clipcap.memory.keep_freed_memory` as the scripts do;
  * the same with glibc's default malloc;
  * plain transformers defaults: glibc's malloc, transformers' per-hypothesis n-gram processor, the prefix run
    through the decoder once per beam, the LM head over every prefix position;
  * with `--ablations`, each of the other changes undone alone (the n-gram processor; the prefix once per beam).
In this process: a per-image beam search that re-runs the decoder over the whole sequence at every step without a
cache, the approach of ClipCap's `generate_beam` (Mokady et al. 2021), written here from its description; and the
encoder alone on NCHW and on channels-last input. Prints a table and writes bench/results/generation.json.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import types

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from timing import matmul_flops, side_by_side, write_results  # noqa: E402 - bench/ is the script directory
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import GenerationMixin  # noqa: E402

from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402


def caption_flops(model: ClipCapForCaptioning, num_beams: int, new_tokens: int) -> dict[str, float]:
    """FLOPs one beam-search caption needs (multiply-add = 2 FLOPs), by part."""
    config, text = model.config, model.config.text_config
    d, layers, vocab, prefix = text.n_embd, text.n_layer, text.vocab_size, config.prefix_length
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.get_prefix_embeds(torch.zeros(1, 3, config.image_size, config.image_size))
    layer_matmuls = 2 * layers * 12 * d * d  # per token: QKV 3d^2, output d^2, MLP 8d^2

    def attention(context):  # QK^T and AV for one query over `context` keys, every layer
        return 4 * layers * context * d

    prefill = prefix * layer_matmuls + sum(attention(i + 1) for i in range(prefix)) + 2 * d * vocab
    steps = sum(layer_matmuls + attention(prefix + t + 1) + 2 * d * vocab for t in range(new_tokens - 1))
    parts = {"encoder_and_mapper": float(counter.get_total_flops()), "decoder": float(num_beams * (prefill + steps))}
    parts["total"] = parts["encoder_and_mapper"] + parts["decoder"]
    return parts


@torch.no_grad()
def naive_beam_search(model: ClipCapForCaptioning, pixel_values: torch.Tensor, num_beams: int, new_tokens: int):
    """One image at a time; at every step the decoder runs over prefix + all tokens so far, for every beam, and the LM
    head scores every position (no KV cache), as ClipCap's `generate_beam` does."""
    embed = model.decoder.get_input_embeddings()
    captions = []
    for image in pixel_values:
        sequence = model.get_prefix_embeds(image[None])  # (1, prefix, d), then (beams, prefix + t, d)
        tokens, scores = None, None
        for _ in range(new_tokens):
            log_probs = model.decoder(inputs_embeds=sequence).logits[:, -1].log_softmax(dim=-1)
            if scores is None:
                scores, next_tokens = log_probs[0].topk(num_beams)
                sequence, tokens = sequence.expand(num_beams, -1, -1), next_tokens[:, None]
            else:
                scores, flat = (scores[:, None] + log_probs).flatten().topk(num_beams)
                beams, next_tokens = flat // log_probs.shape[1], flat % log_probs.shape[1]
                sequence, tokens = sequence[beams], torch.cat([tokens[beams], next_tokens[:, None]], dim=1)
            sequence = torch.cat([sequence, embed(next_tokens)[:, None]], dim=1)
        captions.append(tokens[scores.argmax()])
    return torch.stack(captions)


# setting -> (malloc, the changes kept: batched n-gram blocking, prefix once per image, LM head on the last position)
SETTINGS = {
    "shipped": ("keep", True, True, True),
    "shipped, glibc default malloc": ("default", True, True, True),
    "plain transformers defaults": ("default", False, False, False),
    "transformers' n-gram processor": ("keep", False, True, True),
    "prefix run once per beam": ("keep", True, False, True),
}
ABLATIONS = ("transformers' n-gram processor", "prefix run once per beam")


def build_model(batch_size: int):
    torch.manual_seed(0)
    model = ClipCapForCaptioning(ClipCapConfig(encoder_pretrained=False, decoder_name_or_path=None)).eval()
    size = model.config.image_size
    return model, torch.randn(batch_size, 3, size, size)


def generate(model, pixel_values, args, batched_ngrams=True, prefix_once=True, lm_head_on_last=True):
    # eos_token_id None: exactly new_tokens tokens per caption
    options = {"num_beams": args.num_beams, "max_new_tokens": args.new_tokens, "eos_token_id": None}
    if not prefix_once:
        options["cache_implementation"] = "dynamic"  # transformers makes the cache, and fills it once per beam
    if not lm_head_on_last:
        options["logits_to_keep"] = 0
    if not batched_ngrams:  # transformers' own list of logits processors
        model._get_logits_processor = types.MethodType(GenerationMixin._get_logits_processor, model)
    try:
        return model.generate(pixel_values, **options)
    finally:
        model.__dict__.pop("_get_logits_processor", None)


def child(args) -> None:
    """In this fresh process: a warm-up, then `--runs` captionings of the batch, each followed by the peak."""
    malloc, *changes = SETTINGS[args.child]
    if malloc == "keep":
        from clipcap.memory import keep_freed_memory

        keep_freed_memory()
    model, pixel_values = build_model(args.batch_size)
    generate(model, pixel_values, args, *changes)
    seconds, peaks = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        generate(model, pixel_values, args, *changes)
        seconds.append(time.perf_counter() - start)
        peaks.append(statistics.median(matmul_flops() for _ in range(3)))
    print(json.dumps({"seconds": seconds, "peak_flops": peaks}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="Child processes per setting, alternated.")
    parser.add_argument("--runs", type=int, default=2, help="Timed captionings per child process.")
    parser.add_argument("--repeats", type=int, default=3, help="Rounds of the in-process comparisons.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_beams", type=int, default=5)
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--naive_images", type=int, default=2, help="Images the cache-less loop captions per run.")
    parser.add_argument("--ablations", action="store_true", help="Also undo each other change alone.")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.child:
        return child(args)

    model, pixel_values = build_model(args.batch_size)
    flops = caption_flops(model, args.num_beams, args.new_tokens)
    settings = [name for name in SETTINGS if args.ablations or name not in ABLATIONS]
    print(f"{len(settings)} settings x {args.rounds} fresh processes x {args.runs} runs ...", flush=True)
    runs = {name: {"seconds": [], "peak_flops": []} for name in settings}
    for _ in range(args.rounds):
        for name in settings:
            command = [sys.executable, __file__, "--child", name, "--runs", str(args.runs)]
            for option in ("batch_size", "num_beams", "new_tokens"):
                command += [f"--{option}", str(getattr(args, option))]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            for key, values in json.loads(output.strip().splitlines()[-1]).items():
                runs[name][key] += values
    rows = {}
    for name, run in runs.items():
        rates = [args.batch_size / seconds for seconds in run["seconds"]]
        fractions = [rate * flops["total"] / peak for rate, peak in zip(rates, run["peak_flops"], strict=True)]
        rows[name] = {
            "captions_per_s": statistics.median(rates),
            "fraction_of_limit": statistics.median(fractions),
            "median_s": statistics.median(run["seconds"]),
            **run,
        }

    print("in this process: the cache-less loop and the encoder's memory format ...", flush=True)
    naive_pixels = pixel_values[: args.naive_images]
    with torch.no_grad():
        naive = side_by_side(
            {
                "naive loop": lambda: naive_beam_search(model, naive_pixels, args.num_beams, args.new_tokens),
                "shipped": lambda: generate(model, naive_pixels, args),
            },
            args.repeats,
        )
        encoder = side_by_side(
            {
                "NCHW": lambda: model.encoder.backbone(pixel_values),
                "channels-last": lambda: model.encoder.backbone(
                    pixel_values.contiguous(memory_format=torch.channels_last)
                ),
            },
            args.repeats * 2,
        )
    shipped = rows["shipped"]["captions_per_s"]
    naive_rate = args.naive_images / naive["naive loop"]["median_s"]
    same_images = naive["naive loop"]["median_s"] / naive["shipped"]["median_s"]
    for row in rows.values():
        row["shipped_speedup"] = shipped / row["captions_per_s"]
    peaks = [peak for run in runs.values() for peak in run["peak_flops"]]
    results = {
        "setup": vars(args) | {"model": "MobileNetV2 224 px -> MLP prefix 10 -> DistilGPT2-shaped, fp32"},
        "caption_flops": flops,
        "matmul_peak_flops_median": statistics.median(peaks),
        "generation": rows,
        "naive_loop": {
            "images": args.naive_images,
            **naive,
            "captions_per_s": naive_rate,
            "batched_speedup": shipped / naive_rate,  # generate on --batch_size images against the loop's rate
            "same_images_speedup": same_images,  # generate on the loop's few images, side by side
        },
        "encoder_forward": {"images": args.batch_size, **encoder},
    }
    limit = statistics.median(peaks) / flops["total"]
    print(
        f"\nbeam {args.num_beams}, {args.batch_size} images x {args.new_tokens} new tokens; "
        f"{flops['total'] / 1e9:.2f} GFLOP per caption; fp32 matmul peak {statistics.median(peaks) / 1e9:.0f} "
        f"GFLOP/s (median) -> limit {limit:.2f} captions/s"
    )
    print(f"{'setting (fresh processes)':<34}{'median s':>10}{'captions/s':>12}{'of limit':>10}{'shipped is':>12}")
    for name, row in rows.items():
        print(
            f"{name:<34}{row['median_s']:>10.2f}{row['captions_per_s']:>12.2f}{row['fraction_of_limit']:>10.0%}"
            f"{row['shipped_speedup']:>11.2f}x"
        )
    print(
        f"cache-less per-image loop: {naive_rate:.2f} captions/s; batched generate is {shipped / naive_rate:.1f}x as "
        f"fast (on the loop's {args.naive_images} images, side by side: {same_images:.1f}x)"
    )
    nchw, nhwc = encoder["NCHW"]["median_s"], encoder["channels-last"]["median_s"]
    print(f"encoder, {args.batch_size} images: NCHW {nchw:.3f} s, channels-last {nhwc:.3f} s ({nchw / nhwc:.2f}x)")
    print(f"wrote {write_results('generation', results, args.output)}")


if __name__ == "__main__":
    main()
