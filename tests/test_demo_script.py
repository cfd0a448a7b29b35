"""demo.sh: its three stages in order, each timed or skipped when its output exists, and the CPU the timings come from
(run from a copy, with a stub python that records its calls)."""

import re
import shutil
import subprocess

from tests.conftest import ROOT

OUTPUTS = [
    "data/demo/dataset_dict.json",
    "outputs/demo-teacher/open_clip_model.safetensors",
    "outputs/demo/model.safetensors",
]


def run_demo(root):
    result = subprocess.run(["bash", str(root / "demo.sh")], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    return result.stdout, [
        line.split()[0] for line in lines if line.startswith("   ") and (" min " in line or "skipped" in line)
    ]


def test_demo_sh_times_each_stage_and_names_the_cpu(tmp_path):
    shutil.copy(ROOT / "demo.sh", tmp_path / "demo.sh")
    stub = tmp_path / ".venv" / "bin" / "python"  # the python demo.sh takes when there is a .venv
    stub.parent.mkdir(parents=True)
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path / "calls"}\n'
        'if [ "$1" = -c ]; then echo "Some CPU, 2 cores, torch AVX2, native bf16: none (emulated)"; fi\n'
    )
    stub.chmod(0o755)
    out, stages = run_demo(tmp_path)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [call.split()[0] for call in calls[1:]] == ["prepare_dataset.py", "train_clip_teacher.py", "-m"]
    assert calls[-1].endswith("run_train.py configs/demo.yaml")
    assert "== machine: Some CPU, 2 cores, torch AVX2, native bf16: none (emulated)" in out
    assert "== stage timings on Some CPU, 2 cores, torch AVX2, native bf16: none (emulated):" in out
    assert stages == ["data", "teacher", "captioner", "total"]
    assert re.search(r"^   captioner  0 min \d\d s$", out, re.MULTILINE)
    for output in OUTPUTS:  # a second run finds every output and skips every stage
        (tmp_path / output).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / output).touch()
    out, stages = run_demo(tmp_path)
    assert stages == ["data", "teacher", "captioner", "total"]
    assert f"captioner  skipped ({OUTPUTS[2]} exists)" in out
    assert len((tmp_path / "calls").read_text().splitlines()) == len(calls) + 1  # only the machine's description
