"""The whole demo, per stage: `bash demo.sh` from an empty cache in a fresh clone, on the CPU's native code path and on
the AVX2 one, with each stage's time and peak resident memory and the captioner's semantic accuracy.

    python bench/bench_demo.py                        # both paths, one after the other: about 30 minutes on 2 cores
    python bench/bench_demo.py --paths avx2 --seed 1  # the AVX2 path only, teacher and captioner seeded 1
    python bench/bench_demo.py --revision 6a0b2b5     # an earlier commit's demo: the before figures

The AVX2 code path is `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`: PyTorch's AVX2 kernels, oneDNN limited
likewise, bf16 counted as emulated (`clipcap.precision.bf16_code_path_limits`), as on a CPU without AVX-512; it does
not emulate such a CPU's clock, caches or memory bandwidth. Each run clones the repository's committed state (HEAD,
or `--revision`) into a temporary directory and runs its demo.sh with this interpreter (`PYTHON`) and an empty `CLIPCAP_CACHE`, so
the offline weights are unpacked again and nothing of an earlier run is reused. The stage figures are demo.sh's own
(wall time, and `clipcap.memory`'s peak of the largest process). Unlike the other benchmarks these are sequential
runs, not side by side: these cores drift by 20% from run to run, so compare recipes with the step benchmarks
(`bench_teacher_step.py`, `bench_train_step.py`) and read these as what a user waits. Writes
bench/results/demo.json (or `--output`).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import ROOT, write_results  # noqa: E402 - bench/ is the script directory

PATHS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
# demo.sh's closing lines: "   teacher    9 min 08 s, peak memory 5.3 GB"
STAGE_LINE = re.compile(r"^\s+(\w+)\s+(\d+) min (\d+) s(?:, peak memory ([\d.]+) GB)?$")


def parse_stages(output: str) -> dict[str, dict]:
    """`{stage: {"seconds": ..., "peak_gb": ...}}` (and `total`) from demo.sh's stage timings."""
    stages = {}
    for line in output.split("== stage timings", 1)[-1].splitlines():
        if match := STAGE_LINE.match(line):
            name, minutes, seconds, peak = match.groups()
            stages[name] = {"seconds": 60 * int(minutes) + int(seconds)}
            if peak is not None:
                stages[name]["peak_gb"] = float(peak)
    if "total" not in stages:
        raise RuntimeError("demo.sh printed no stage timings:\n" + output[-2000:])
    return stages


def run_demo(path: str, seed: int, workdir: Path, revision: str = "HEAD") -> dict:
    """Clone `revision` into `workdir`, seed its configs, run its demo.sh on `path`; the stages and the evaluation."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(workdir)], check=True)
    subprocess.run(["git", "-C", str(workdir), "checkout", "-q", revision], check=True)
    if seed != 0:
        for name in ("demo_teacher.yaml", "demo.yaml"):
            config_file = workdir / "configs" / name
            config = yaml.safe_load(config_file.read_text())
            config["seed"] = seed
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    (workdir / "cache").mkdir()
    env = {**os.environ, **PATHS[path], "PYTHON": sys.executable, "CLIPCAP_CACHE": str(workdir / "cache")}
    start = time.perf_counter()
    done = subprocess.run(["bash", "demo.sh"], cwd=workdir, env=env, capture_output=True, text=True, check=False)
    (workdir / "demo.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"demo.sh failed on the {path} path (log: {workdir / 'demo.log'}):\n{done.stderr[-2000:]}")
    machine = re.search(r"^== machine: (.*)$", done.stdout, re.MULTILINE)
    evaluation = json.loads((workdir / "outputs" / "demo" / "eval_results.json").read_text())
    teacher = json.loads((workdir / "outputs" / "demo-teacher" / "teacher.json").read_text())
    return {
        "revision": subprocess.run(
            ["git", "-C", str(workdir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "machine": machine.group(1) if machine else None,
        "seed": seed,
        "stages": parse_stages(done.stdout),
        "wall_s": round(time.perf_counter() - start, 1),
        "semantic_accuracy": evaluation.get("eval_semantic_accuracy"),
        "teacher_compositional": teacher["validation"].get("compositional"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default="native,avx2", help=f"Comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--seed", type=int, default=0, help="The teacher's and the captioner's seed")
    parser.add_argument("--revision", default="HEAD", help="The commit whose demo runs (default: HEAD)")
    parser.add_argument("--keep", action="store_true", help="Keep each run's clone (its outputs and demo.log)")
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    paths = [path for path in options.paths.split(",") if path]
    if unknown := [path for path in paths if path not in PATHS]:
        parser.error(f"unknown paths {unknown}")
    runs = {}
    for path in paths:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-demo-{path}-"))
        runs[path] = run_demo(path, options.seed, workdir / "clone", options.revision)
        print(f"{path}: {runs[path]['machine']}")
        for stage, figures in runs[path]["stages"].items():
            peak = f", peak {figures['peak_gb']:.1f} GB" if "peak_gb" in figures else ""
            print(f"  {stage:10s} {figures['seconds'] // 60} min {figures['seconds'] % 60:02d} s{peak}")
        print(f"  semantic accuracy {runs[path]['semantic_accuracy']}")
        if not options.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=True)
    print(f"wrote {write_results('demo', {'runs': runs}, options.output)}")


if __name__ == "__main__":
    main()
