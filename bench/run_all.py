"""Run every benchmark, each in a fresh process, and print one table of figures against their targets.

    python bench/run_all.py            # about 9 minutes on 2 cores
    python bench/run_all.py --only generation,train_step

Each benchmark writes its own JSON under bench/results/ (see its docstring for what it measures and how); this script
adds bench/results/summary.json and bench/results/summary.md, the table docs/benchmarks.md shows. Times are medians of
variants run side by side in one process; the targets are those of the project's benchmark issue.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import RESULTS, machine  # noqa: E402 - bench/ is the script directory

BENCH = Path(__file__).resolve().parent
# name -> (script, arguments sized so that the whole run stays under 10 minutes on 2 cores)
BENCHMARKS = {
    "teacher_cache": ("bench_teacher_cache.py", ["--repeats", "3"]),
    "generation": ("bench_generation.py", ["--repeats", "3"]),
    "train_step": ("bench_train_step.py", ["--repeats", "3"]),
    "encoders": ("bench_encoders.py", ["--repeats", "5"]),
    "data": (
        "bench_data.py",
        ["--repeats", "3", "--num_train", "300", "--num_validation", "30", "--render_count", "100"]
        + ["--photo_count", "200"],
    ),
}


def summarize(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows from the benchmarks' JSON."""
    rows = []

    def add(figure, value, target="", met=None):
        rows.append((figure, value, target, "" if met is None else ("met" if met else "MISSED")))

    if teacher := results.get("teacher_cache"):
        for arch, row in teacher["teachers"].items():
            steps = {name: timing["median_s"] for name, timing in row["steps"].items()}
            share = row["cached_share_timed_alone"]
            add(
                f"teacher cache, {arch}: teacher's share of a cached step (timed alone; by step difference)",
                f"{share:.2%}; {row['cached_share_by_difference']:+.1%}",
                "<= 2%",
                share <= 0.02,
            )
            add(
                f"teacher cache, {arch}: step s, student only / cached / recomputed",
                f"{steps['student only']:.2f} / {steps['cached']:.2f} / {steps['recomputed']:.2f} "
                f"(recomputed {row['recomputed_over_cached']:.2f}x cached)",
            )
        frozen = teacher["frozen_encoder"]
        add(
            "frozen encoder: step s, features every step / computed once",
            f"{frozen['steps']['every step']['median_s']:.2f} / {frozen['steps']['computed once']['median_s']:.2f} "
            f"({frozen['every_step_over_once']:.2f}x)",
        )
    if generation := results.get("generation"):
        settings = generation["generation"]
        shipped, plain = settings["shipped"], settings["plain transformers defaults"]
        limit = generation["matmul_peak_flops_median"] / generation["caption_flops"]["total"]
        add(
            "generate, batch 32, beam 5, 20 new tokens: captions/s (fraction of the CPU's limit, run by run)",
            f"{shipped['captions_per_s']:.2f} ({shipped['fraction_of_limit']:.0%}; limit about {limit:.1f})",
            ">= 60% of the limit",
            shipped["fraction_of_limit"] >= 0.60,
        )
        naive = generation["naive_loop"]
        add(
            "generate vs the cache-less per-image loop (ClipCap's generate_beam)",
            f"{naive['batched_speedup']:.1f}x the loop's {naive['captions_per_s']:.2f} captions/s "
            f"({naive['same_images_speedup']:.1f}x on the same {naive['images']} images)",
        )
        add(
            "generate vs plain transformers defaults (glibc malloc, n-gram processor, prefix per beam)",
            f"{plain['captions_per_s']:.2f} captions/s ({plain['fraction_of_limit']:.0%}): shipped "
            f"{shipped['captions_per_s'] / plain['captions_per_s']:.2f}x",
        )
        malloc = settings["shipped, glibc default malloc"]
        add(
            "generate, shipped with glibc's default malloc",
            f"{malloc['captions_per_s']:.2f} captions/s: keep_freed_memory "
            f"{shipped['captions_per_s'] / malloc['captions_per_s']:.2f}x",
        )
    if train := results.get("train_step"):
        steps = train["steps"]
        for name, row in steps.items():
            target = ">= 50% of peak" if name.startswith("captioner decoder step") else ""
            met = row["fraction_of_peak"] >= 0.5 if target else None
            add(f"training step FLOP/s, {name}", f"{row['fraction_of_peak']:.0%} of peak", target, met)
        memory = train["memory"]
        peak = memory["keep_freed_memory"]["peak_rss_bytes"]
        add(
            "peak RSS, captioner training step, batch 16, as the scripts run (keep_freed_memory)",
            f"{peak / 1e9:.2f} GB ({memory['keep_freed_memory']['libraries_bytes'] / 1e9:.2f} GB of it the libraries)",
            "<= 4 GB",
            peak <= 4e9,
        )
        add(
            "peak RSS, the same with glibc's default malloc; under bf16 autocast; frozen encoder, cached features",
            f"{memory['glibc default malloc']['peak_rss_bytes'] / 1e9:.2f} GB; "
            f"{memory['keep_freed_memory, bf16 autocast']['peak_rss_bytes'] / 1e9:.2f} GB; "
            f"{memory['keep_freed_memory, frozen encoder, cached features']['peak_rss_bytes'] / 1e9:.2f} GB",
        )
    if encoders := results.get("encoders"):
        for part, ratio in encoders["mobilenetv2_over_lite0"].items():
            steps = encoders["steps"]
            add(
                f"demo {part} s, batch {encoders['batch_size']}, 128 px: MobileNetV2 / EfficientNet-Lite0",
                f"{steps[f'{part}, MobileNetV2']['median_s']:.2f} / {steps[f'{part}, EfficientNet-Lite0']['median_s']:.2f} "
                f"({ratio:.2f}x)",
            )
    if data := results.get("data"):
        one, two = data["prepare_dataset_images_per_s_num_proc_1"], data["prepare_dataset_images_per_s_num_proc_2"]
        add("prepare_dataset.py images/s, num_proc 1 / 2", f"{one:.0f} / {two:.0f} ({two / one:.2f}x)")
        one = data["photo_validation_images_per_s_num_proc_1"]
        two = data["photo_validation_images_per_s_num_proc_2"]
        add(
            "image validation, 1024 x 768 JPEGs, images/s, num_proc 1 / 2", f"{one:.0f} / {two:.0f} ({two / one:.2f}x)"
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="Comma-separated: " + ", ".join(BENCHMARKS))
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := sorted(set(names) - set(BENCHMARKS)):
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    results, walls, start = {}, {}, time.perf_counter()
    for name in names:
        script, arguments = BENCHMARKS[name]
        output = RESULTS / f"{name}.json"
        print(f"=== {script} {' '.join(arguments)}", flush=True)
        began = time.perf_counter()
        subprocess.run([sys.executable, str(BENCH / script), *arguments, "--output", str(output)], check=True)
        walls[name] = time.perf_counter() - began
        results[name] = json.loads(output.read_text())
    total = time.perf_counter() - start

    rows = summarize(results)
    command = "python bench/run_all.py" + (f" --only {args.only}" if args.only != ",".join(BENCHMARKS) else "")
    lines = [
        f"`{command}` on {machine()}, {total / 60:.1f} minutes "
        f"({', '.join(f'{name} {wall:.0f} s' for name, wall in walls.items())}).",
        "",
        "| figure | measured | target | |",
        "| --- | --- | --- | --- |",
        *(f"| {figure} | {value} | {target} | {verdict} |" for figure, value, target, verdict in rows),
    ]
    print("\n" + "\n".join(lines))
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    summary = {"command": command, "machine": machine(), "wall_s": walls, "rows": rows}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
