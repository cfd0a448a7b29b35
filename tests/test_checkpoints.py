"""clipcap/checkpoints.py, with the trainer that writes and resumes from its checkpoints: the resume promises of
docs/reliability.md. A killed run resumes exactly (bitwise) from the last whole checkpoint, a checkpoint is used only
when whole (a half-written one is named and moved aside, never deleted), and resuming continues the step, the optimizer
and the schedule. The kill-and-resume tests run run_train.py end to end; they are here because what they hold is this
module's promise."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

import run_train
from clipcap.checkpoints import CHECKPOINT_MANIFEST, checkpoint_problem, last_complete_checkpoint
from tests.conftest import ROOT, train_argv

# A run long enough to be killed between checkpoints: 12 images, batch 4, so 3 steps per epoch and a checkpoint
# every 4 steps, which lands inside an epoch (the resumed run must skip into it). Each logged loss averages 2 steps.
KILL_RUN = {"steps": 10, "save_steps": 4, "logging_steps": 2, "do_eval": "false", "lambda_div": 0.01}


def run_command(argv, **kwargs):
    return subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        **kwargs,
    )


def losses_after(output_dir, step: int) -> dict[int, dict]:
    """Each training log entry after `step`, without its wall-clock fields."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {
        entry["step"]: {key: value for key, value in entry.items() if "runtime" not in key and "per_second" not in key}
        for entry in state["log_history"]
        if "loss" in entry and entry["step"] > step
    }


def max_weight_difference(a, b) -> float:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert first.keys() == second.keys()
    return max((first[key].double() - second[key].double()).abs().max().item() for key in first)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    process = run_command(["run_train.py", *train_argv(data_dir, output_dir, **KILL_RUN)])
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output_dir


def resume(data_dir, output_dir, **overrides) -> tuple[str, str]:
    """Run the same command again in `output_dir`; returns its output and the checkpoint it resumed from."""
    process = run_command(["run_train.py", *train_argv(data_dir, output_dir, **KILL_RUN, **overrides)])
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    resumed = [line.split("Resuming from ")[1].strip() for line in output.splitlines() if "Resuming from " in line]
    assert resumed, output[-3000:]
    return output, resumed[0]


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume_is_bitwise_identical(tmp_path, data_dir, uninterrupted):
    output_dir = tmp_path / "killed"
    process = run_command(["run_train.py", *train_argv(data_dir, output_dir, **KILL_RUN)])
    logged_steps = 0
    for line in process.stdout:  # one "{'loss': ...}" line every 2 steps
        logged_steps += 2 * ("'loss'" in line)
        if logged_steps == 6:  # two steps past the step-4 checkpoint: kill it there, whatever it is doing
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (output_dir / "model.safetensors").exists()  # it really died before the end

    _, checkpoint = resume(data_dir, output_dir)
    step = int(checkpoint.rsplit("-", 1)[1])
    assert step in (4, 8)  # the last whole checkpoint before the kill
    assert max_weight_difference(uninterrupted, output_dir) == 0.0
    expected = losses_after(uninterrupted, step)
    assert losses_after(output_dir, step) == expected and len(expected) == (10 - step) // 2


# The child process kills itself with SIGKILL in the middle of writing the step-8 checkpoint: the model and the
# optimizer are on disk, the RNG states and trainer_state.json are not.
KILL_WHILE_SAVING = textwrap.dedent(
    """
    import os, signal, sys
    import transformers
    import run_train

    save_rng_state = transformers.Trainer._save_rng_state

    def save_rng_state_or_die(self, output_dir):
        if self.state.global_step == 8:
            os.kill(os.getpid(), signal.SIGKILL)
        return save_rng_state(self, output_dir)

    transformers.Trainer._save_rng_state = save_rng_state_or_die
    sys.exit(run_train.main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_then_resume_skips_it(tmp_path, data_dir, uninterrupted):
    output_dir = tmp_path / "killed-while-saving"
    process = run_command(["-c", KILL_WHILE_SAVING, *train_argv(data_dir, output_dir, **KILL_RUN, save_total_limit=1)])
    output, _ = process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    half_written = output_dir / "checkpoint-8"
    assert (half_written / "model.safetensors").exists() and not (half_written / "trainer_state.json").exists()
    assert (output_dir / "checkpoint-4" / CHECKPOINT_MANIFEST).exists()  # not rotated out before 8 was whole

    output, checkpoint = resume(data_dir, output_dir, save_total_limit=1)
    assert checkpoint == str(output_dir / "checkpoint-4")
    assert "Not resuming from" in output and "it has no trainer_state.json" in output
    assert (output_dir / "incomplete-checkpoint-8" / "model.safetensors").exists()  # moved aside, not deleted
    assert max_weight_difference(uninterrupted, output_dir) == 0.0
    assert losses_after(output_dir, 4) == losses_after(uninterrupted, 4) and len(losses_after(uninterrupted, 4)) == 3
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-10"]  # limit 1, and whole
    assert checkpoint_problem(output_dir / "checkpoint-10") is None


def test_checkpoint_problems_are_named_and_the_last_whole_one_is_chosen(tmp_path):
    from clipcap.checkpoints import write_checkpoint_manifest

    def make(step, files):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        for name, content in files.items():
            (path / name).write_bytes(content)
        return path

    whole = make(3, {"model.safetensors": b"weights", "trainer_state.json": b"{}"})
    write_checkpoint_manifest(whole)
    assert json.loads((whole / CHECKPOINT_MANIFEST).read_text())["files"]["model.safetensors"]["bytes"] == 7
    assert checkpoint_problem(whole) is None
    truncated = make(6, {"model.safetensors": b"weights", "trainer_state.json": b"{}"})
    write_checkpoint_manifest(truncated)
    (truncated / "model.safetensors").write_bytes(b"weig")
    assert checkpoint_problem(truncated) == "model.safetensors differs from its manifest (truncated or changed)"
    changed = make(7, {"model.safetensors": b"weights", "trainer_state.json": b"{}"})
    write_checkpoint_manifest(changed)
    (changed / "model.safetensors").write_bytes(b"WEIGHTS")
    assert "differs from its manifest" in checkpoint_problem(changed)
    missing = make(8, {"trainer_state.json": b"{}"})
    (missing / CHECKPOINT_MANIFEST).write_text(json.dumps({"files": {"optimizer.pt": {"bytes": 1, "sha256": "0"}}}))
    assert checkpoint_problem(missing) == "optimizer.pt is missing"
    no_state = make(9, {"model.safetensors": b"weights"})
    assert checkpoint_problem(no_state) == "it has no trainer_state.json (the run stopped while writing it)"
    cut_state = make(10, {"trainer_state.json": b'{"global_st'})
    assert checkpoint_problem(cut_state) == "its trainer_state.json is truncated"
    legacy = make(2, {"trainer_state.json": b"{}"})  # a plain Trainer checkpoint: no manifest, state whole
    assert checkpoint_problem(legacy) is None

    assert last_complete_checkpoint(tmp_path, move_aside=False) == str(whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint-{n}" for n in (10, 2, 3, 6, 7, 8, 9)]
    assert last_complete_checkpoint(tmp_path) == str(whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"] + [
        f"incomplete-checkpoint-{n}" for n in (10, 6, 7, 8, 9)
    ]


def test_resume_continues_step_optimizer_and_schedule(tmp_path, data_dir):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert run_train.main(train_argv(data_dir, full, steps=4, save_steps=2, do_eval="false")) == 0
    # Resume a fresh directory from the step-2 checkpoint of the full run.
    resumed.mkdir()
    os.symlink(full / "checkpoint-2", resumed / "checkpoint-2", target_is_directory=True)
    assert run_train.main(train_argv(data_dir, resumed, steps=4, save_steps=2, do_eval="false")) == 0

    def history(path):
        state = json.loads((path / "trainer_state.json").read_text())
        return {e["step"]: (e["loss"], e["learning_rate"]) for e in state["log_history"] if "loss" in e}, state

    full_history, full_state = history(full)
    resumed_history, resumed_state = history(resumed)
    assert resumed_state["global_step"] == full_state["global_step"] == 4
    for step in (3, 4):  # same schedule position and same losses after the checkpoint
        assert resumed_history[step][1] == full_history[step][1]
        assert resumed_history[step][0] == pytest.approx(full_history[step][0], rel=1e-5)
    from safetensors.torch import load_file

    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
