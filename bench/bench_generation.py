"""Captions/s of batched beam search against a cache-less per-image loop and against this CPU's limit.

    python bench/bench_generation.py [--repeats 3] [--batch_size 32] [--num_beams 5] [--new_tokens 20]

The default captioner (MobileNetV2 at 224 px -> MLP prefix of 10 -> DistilGPT2-shaped decoder; random weights, the
shapes are what matter for time) captions `--batch_size` images with `generate` (beam 5, KV cache, the model's
generation config: n-gram blocking of 3) for exactly `--new_tokens` tokens each (EOS is switched off, so a random
model's EOS cannot end beams early; `min_new_tokens` would instead add two logits processors real captioning does not
run). Side by side, in alternation:

  * `generate` as shipped;
  * the same with one of this project's changes to the decoding undone at a time (transformers' per-hypothesis n-gram
    processor; the prefix run through the decoder once per beam instead of once per image), and with all of them
    undone, the LM head over every prefix position too (plain transformers defaults);
  * a per-image beam search that re-runs the decoder over the whole sequence at every step without a cache, the
    approach of ClipCap's `generate_beam` (Mokady et al. 2021), written here from its description;
  * the limit: this CPU's fp32 matmul peak (a 4096 x 4096 matmul, timed between the rounds) divided by the FLOPs a
    caption needs: the encoder and mapper (counted by `torch.utils.flop_counter`), then per beam the prefix through
    the decoder, the LM head once, and for every further token the decoder layers, attention over the context and the
    LM head (analytic, `caption_flops`).
Also the encoder alone on NCHW and on channels-last input, and glibc's default malloc against
`cli_utils.keep_freed_memory` (which the scripts switch on): that needs fresh processes (a heap that already holds
freed blocks hides the difference), so the same captioning runs in alternating child processes (one warm-up and
`--malloc_runs` timed runs each).
Prints a table and writes bench/results/generation.json.
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

from timing import PeakMeter, set_malloc, side_by_side, write_results  # noqa: E402 - bench/ is the script directory
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import GenerationMixin  # noqa: E402

from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402


def caption_flops(model: ClipCapForCaptioning, num_beams: int, new_tokens: int) -> dict[str, float]:
    """FLOPs one beam-search caption needs (multiply-add = 2 FLOPs), by part."""
    config, text = model.config, model.config.text_config
    d, layers, vocab, prefix = text.n_embd, text.n_layer, text.vocab_size, config.prefix_length
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encode_images(torch.zeros(1, 3, config.image_size, config.image_size))
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
        sequence = model.encode_images(image[None])  # (1, prefix, d), then (beams, prefix + t, d)
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


def malloc_child(args) -> None:
    """Captions/s of `--malloc_runs` runs after a warm-up, in this fresh process, with or without keep_freed_memory."""
    if args.malloc_child == "keep":
        from cli_utils import keep_freed_memory

        keep_freed_memory()
    torch.manual_seed(0)
    model = ClipCapForCaptioning(ClipCapConfig(encoder_pretrained=False, decoder_name_or_path=None)).eval()
    pixel_values = torch.randn(args.batch_size, 3, model.config.image_size, model.config.image_size)
    options = {"num_beams": args.num_beams, "max_new_tokens": args.new_tokens, "eos_token_id": None}
    model.generate(pixel_values, **options)
    times = []
    for _ in range(args.malloc_runs):
        start = time.perf_counter()
        model.generate(pixel_values, **options)
        times.append(time.perf_counter() - start)
    print(json.dumps({"captions_per_s": [args.batch_size / t for t in times]}))


def malloc_comparison(args) -> dict:
    rates = {"keep": [], "default": []}
    for _ in range(args.malloc_rounds):
        for setting in rates:
            command = [sys.executable, __file__, "--malloc_child", setting]
            command += ["--batch_size", str(args.batch_size), "--num_beams", str(args.num_beams)]
            command += ["--new_tokens", str(args.new_tokens), "--malloc_runs", str(args.malloc_runs)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rates[setting] += json.loads(output.strip().splitlines()[-1])["captions_per_s"]
    return {
        "images": args.batch_size,
        "keep_freed_memory_captions_per_s": statistics.median(rates["keep"]),
        "glibc_default_captions_per_s": statistics.median(rates["default"]),
        "speedup": statistics.median(rates["keep"]) / statistics.median(rates["default"]),
        "rates": rates,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_beams", type=int, default=5)
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--naive_images", type=int, default=2, help="Images the cache-less loop captions per run.")
    parser.add_argument("--malloc_rounds", type=int, default=1, help="Child processes per malloc setting.")
    parser.add_argument("--malloc_runs", type=int, default=2, help="Timed runs per child process.")
    parser.add_argument("--malloc_child", choices=["keep", "default"], help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.malloc_child:
        return malloc_child(args)

    torch.manual_seed(0)
    model = ClipCapForCaptioning(ClipCapConfig(encoder_pretrained=False, decoder_name_or_path=None)).eval()
    size = model.config.image_size
    pixel_values = torch.randn(args.batch_size, 3, size, size)
    # eos_token_id None: exactly new_tokens tokens per caption
    options = {"num_beams": args.num_beams, "max_new_tokens": args.new_tokens, "eos_token_id": None}

    def generate(ngram_processor=True, prefix_once=True, lm_head_on_last_position=True):
        extra = {} if prefix_once else {"cache_implementation": "dynamic"}  # transformers makes the cache: per beam
        if not lm_head_on_last_position:
            extra["logits_to_keep"] = 0

        def run():
            set_malloc(True)
            if not ngram_processor:  # transformers' own list of logits processors
                model._get_logits_processor = types.MethodType(GenerationMixin._get_logits_processor, model)
            try:
                model.generate(pixel_values, **options, **extra)
            finally:
                model.__dict__.pop("_get_logits_processor", None)

        return run

    naive_pixels = pixel_values[: args.naive_images]
    peak = PeakMeter()
    variants = {
        "shipped": generate(),
        "transformers' n-gram processor": generate(ngram_processor=False),
        "prefix run once per beam": generate(prefix_once=False),
        "plain transformers defaults": generate(False, False, False),
        "naive loop": lambda: (
            set_malloc(True),
            naive_beam_search(model, naive_pixels, args.num_beams, args.new_tokens),
        ),
        "peak": peak,
    }
    print(f"Timing {len(variants) - 1} variants side by side, {args.repeats} rounds after a warm-up ...", flush=True)
    # The ablations run the model the shipped variant has warmed up.
    timings = side_by_side(
        variants, args.repeats, warmup={"shipped", "plain transformers defaults", "naive loop", "peak"}
    )
    set_malloc(True)
    channels = {
        "NCHW": lambda: model.encoder.backbone(pixel_values),
        "channels-last": lambda: model.encoder.backbone(pixel_values.contiguous(memory_format=torch.channels_last)),
    }
    with torch.no_grad():
        encoder_timings = side_by_side(channels, args.repeats * 2)

    print(f"malloc: {args.malloc_rounds} rounds of fresh processes ...", flush=True)
    malloc = malloc_comparison(args)
    flops = caption_flops(model, args.num_beams, args.new_tokens)
    limit = peak.median / flops["total"]
    rows = {}
    for name, timing in timings.items():
        if name == "peak":
            continue
        images = args.naive_images if name == "naive loop" else args.batch_size
        rate = images / timing["median_s"]
        rows[name] = {**timing, "images": images, "captions_per_s": rate, "fraction_of_limit": rate / limit}
    shipped = rows["shipped"]["captions_per_s"]
    for row in rows.values():
        row["shipped_speedup"] = shipped / row["captions_per_s"]
    results = {
        "setup": vars(args) | {"model": "MobileNetV2 224 px -> MLP prefix 10 -> DistilGPT2-shaped, fp32"},
        "matmul_peak_flops": peak.median,
        "caption_flops": flops,
        "limit_captions_per_s": limit,
        "generation": rows,
        "encoder_forward": {"images": args.batch_size, **encoder_timings},
        "malloc": malloc,
    }
    print(
        f"\nbeam {args.num_beams}, {args.batch_size} images x {args.new_tokens} new tokens; fp32 matmul peak "
        f"{peak.median / 1e9:.0f} GFLOP/s; {flops['total'] / 1e9:.2f} GFLOP per caption -> limit "
        f"{limit:.2f} captions/s"
    )
    print(f"{'variant':<34}{'median s':>10}{'captions/s':>12}{'of limit':>10}{'shipped is':>12}")
    for name, row in rows.items():
        print(
            f"{name:<34}{row['median_s']:>10.2f}{row['captions_per_s']:>12.2f}{row['fraction_of_limit']:>10.0%}"
            f"{row['shipped_speedup']:>11.2f}x"
        )
    nchw, nhwc = encoder_timings["NCHW"]["median_s"], encoder_timings["channels-last"]["median_s"]
    print(f"encoder, {args.batch_size} images: NCHW {nchw:.3f} s, channels-last {nhwc:.3f} s ({nchw / nhwc:.2f}x)")
    print(
        f"fresh processes: {malloc['keep_freed_memory_captions_per_s']:.2f} "
        f"captions/s with keep_freed_memory, {malloc['glibc_default_captions_per_s']:.2f} with glibc's default malloc "
        f"({malloc['speedup']:.2f}x)"
    )
    print(f"wrote {write_results('generation', results, args.output)}")


if __name__ == "__main__":
    main()
