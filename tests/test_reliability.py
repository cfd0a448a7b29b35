"""The promises of docs/reliability.md: a killed run resumes exactly, a non-finite loss stops training before it touches
the weights, checkpoints are used only when whole, weights load only from safetensors, tokens never reach a file."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
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


@pytest.mark.parametrize(("term", "bad"), [("ce", float("inf")), ("div", float("nan"))])
def test_a_non_finite_loss_term_stops_training_before_the_update(tmp_path, data_dir, monkeypatch, capsys, term, bad):
    from clipcap import trainer as clipcap_trainer
    from modeling_clipcap import ClipCapForCaptioning

    calls = {"n": 0}

    def poison_at_step_3(value):
        calls["n"] += 1
        return value * bad if calls["n"] == 3 else value

    if term == "ce":
        forward = ClipCapForCaptioning.forward

        def poisoned_forward(self, *args, **kwargs):
            outputs = forward(self, *args, **kwargs)
            outputs.loss = poison_at_step_3(outputs.loss)
            return outputs

        monkeypatch.setattr(ClipCapForCaptioning, "forward", poisoned_forward)
    else:
        unlikelihood = clipcap_trainer.repetition_unlikelihood_loss
        monkeypatch.setattr(
            clipcap_trainer, "repetition_unlikelihood_loss", lambda *a: poison_at_step_3(unlikelihood(*a))
        )
    trainers = []
    check_finite = clipcap_trainer.CLIPGuidedTrainer._check_finite

    def keep_trainer(self, terms, training):
        trainers.append(self)
        return check_finite(self, terms, training)

    monkeypatch.setattr(clipcap_trainer.CLIPGuidedTrainer, "_check_finite", keep_trainer)

    output_dir = tmp_path / "run"
    argv = train_argv(data_dir, output_dir, steps=5, save_steps=2, do_eval="false", lambda_div=0.01)
    assert run_train.main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"run_train.py: error: L_{term} is {bad} at step 3; training stopped before the update")
    # The weights in memory are exactly the step-2 checkpoint's: nothing of step 3 reached them. (BatchNorm running
    # statistics, buffers, did see step 3's forward pass; nothing is saved after the error.)
    saved = load_file(str(output_dir / "checkpoint-2" / "model.safetensors"))
    parameters = dict(trainers[-1].model.named_parameters())
    assert parameters.keys() <= saved.keys() and len(parameters) > 100
    for name, parameter in parameters.items():
        assert torch.equal(parameter.detach(), saved[name]), name
    assert checkpoint_problem(output_dir / "checkpoint-2") is None
    assert not (output_dir / "model.safetensors").exists()


def test_model_weights_load_from_safetensors_only_unless_pickle_is_allowed(tmp_path):
    from modeling_clipcap import ClipCapForCaptioning
    from processing_clipcap import ClipCapProcessor
    from tests.conftest import tiny_model

    model = tiny_model()
    model.save_pretrained(tmp_path)
    ClipCapProcessor.from_config(model.config).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")

    with pytest.raises(OSError, match=r"has its weights only as a pickle \(pytorch_model.bin\).*allow_pickle=True"):
        ClipCapForCaptioning.from_pretrained(tmp_path)
    from modeling_clipcap import pickle_only_weights

    (tmp_path / "optimizer.pt").write_bytes(b"")  # the Trainer's state in a checkpoint is not named as weights
    assert pickle_only_weights(tmp_path) == ["pytorch_model.bin"]
    loaded = ClipCapForCaptioning.from_pretrained(tmp_path, allow_pickle=True)
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in state.items())

    # The command-line tools say the same in one line and exit non-zero; --allow_pickle opts in.
    import caption

    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(image)
    process = subprocess.run(
        [sys.executable, "caption.py", str(tmp_path), str(image)], cwd=ROOT, capture_output=True, text=True
    )
    assert process.returncode == caption.EXIT_FAILED
    assert process.stderr.strip().splitlines()[-1].startswith("caption.py: cannot load the model ")
    assert "pickle" in process.stderr and "--allow_pickle" in process.stderr
    assert caption.main([str(tmp_path), str(image), "--allow_pickle", "--progress", "false"]) == caption.EXIT_OK


def test_teacher_checkpoint_must_be_safetensors_unless_pickle_is_allowed(tmp_path, teacher_checkpoint):
    from clipcap.teacher import CLIPTeacher

    state = load_file(str(teacher_checkpoint / "open_clip_model.safetensors"))
    torch.save(state, tmp_path / "teacher.pt")
    with pytest.raises(OSError, match=r"teacher checkpoint .*teacher.pt is not safetensors.*--allow_pickle"):
        CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(tmp_path / "teacher.pt"))
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(tmp_path / "teacher.pt"), allow_pickle=True)
    assert teacher.identity.embed_dim == 16


def test_the_hub_token_reaches_no_file_and_no_log(tmp_path, data_dir, capfd):
    secret = "hf_NotARealTokenButSecret0123456789"
    output_dir = tmp_path / "run"
    argv = train_argv(data_dir, output_dir, steps=2, save_steps=1, hub_token=secret, report_to="none")
    assert run_train.main(argv) == 0
    captured = capfd.readouterr()
    assert secret not in captured.out and secret not in captured.err
    files = [path for path in output_dir.rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in files) and any(p.name == "README.md" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    arguments = torch.load(output_dir / "training_args.bin", weights_only=False)
    assert arguments.hub_token is None and arguments.learning_rate == 1e-3  # the rest is kept


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one clear line and a non-zero exit status, or a counted skip; nothing already written is touched
# ---------------------------------------------------------------------------------------------------------------------


def write_config(path, values: dict):
    import yaml

    path.write_text(yaml.safe_dump(values))
    return str(path)


def config_of(data_dir, output_dir, **overrides) -> dict:
    """train_argv's tiny run as a config file's mapping."""
    import yaml

    argv = train_argv(data_dir, output_dir, **overrides)
    return {key[2:]: yaml.safe_load(value) for key, value in zip(argv[::2], argv[1::2], strict=True)}


RUN_TRAIN_ERRORS = {
    "missing dataset": (
        lambda d, tmp: {"dataset_dir": str(tmp / "nowhere")},
        "nowhere': no such directory. Prepare it",
    ),
    "empty folder": (lambda d, tmp: {"dataset_dir": str(tmp / "empty")}, "is not a saved DatasetDict"),
    "no captions column": (lambda d, tmp: {"caption_column": "text"}, "lacks the columns ['text']"),
    "unknown key": (lambda d, tmp: {"learnin_rate": 0.1}, "unknown keys ['learnin_rate']"),
    "wrong type": (
        lambda d, tmp: {"per_device_train_batch_size": "four"},
        "per_device_train_batch_size must be an integer, not 'four' (str)",
    ),
    "wrong choice": (lambda d, tmp: {"lr_scheduler_type": "zigzag"}, "zigzag is not a valid SchedulerType"),
    "unknown model field": (
        lambda d, tmp: {"config_overrides": "image_sise=48"},
        "config_overrides: unknown keys ['image_sise'] (see ClipCapConfig's fields)",
    ),
    "unknown decoder field": (
        lambda d, tmp: {"config_overrides": {"text_config": {"n_layers": 2}}},
        "config_overrides: text_config: unknown keys ['n_layers'] (see GPT2Config's fields)",
    ),
    "missing checkpoint": (
        lambda d, tmp: {"resume_from_checkpoint": str(tmp / "checkpoint-9")},
        "no checkpoint directory",
    ),
    "pickled teacher": (
        lambda d, tmp: {"lambda_cos": 1.0, "clip_model": "ClipCap-Test-Teacher", "clip_pretrained": str(tmp / "t.pt")},
        "is not safetensors",
    ),
}


@pytest.mark.parametrize("case", sorted(RUN_TRAIN_ERRORS))
def test_run_train_bad_input_is_one_line_and_touches_nothing(tmp_path, data_dir, teacher_checkpoint, capsys, case):
    make_overrides, message = RUN_TRAIN_ERRORS[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "t.pt").write_bytes(b"pickle")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    config = config_of(data_dir, output_dir) | make_overrides(data_dir, tmp_path)
    assert run_train.main([write_config(tmp_path / "run.yaml", config)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("run_train.py: error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in output_dir.iterdir()) == ["notes.txt"]


def test_yaml_that_is_not_a_mapping_or_not_yaml_is_one_line(tmp_path, capsys):
    for text, message in (("- a\n- b\n", "must hold a mapping"), ("a: [1,\n", "is not readable YAML")):
        (tmp_path / "bad.yaml").write_text(text)
        assert run_train.main([str(tmp_path / "bad.yaml")]) == 1
        assert message in capsys.readouterr().err.strip().splitlines()[-1]


def bad_rows_dataset(path):
    """A tiny dataset (no prepare_dataset.py card) with rows no one can train on, and one very long caption."""
    import io

    import datasets

    from tests.conftest import tiny_dataset

    data = tiny_dataset()
    png = io.BytesIO()
    data["train"][0]["image"].save(png, format="PNG")
    broken = {
        0: {"captions": []},
        1: {"captions": ["", "   "]},
        2: {"image": {"bytes": b"this is not an image", "path": None}},
        3: {"image": {"bytes": png.getvalue()[:200], "path": None}},  # a truncated PNG
        4: {"captions": ["a photo of " + "a very long caption " * 60]},  # far beyond 40 tokens and the 64 positions
        5: {"captions": ["", "a photo of a kettle"]},  # the empty one is never drawn
    }
    splits = {}
    for split in ("train", "validation"):
        rows = data[split].cast_column("image", datasets.Image(decode=False)).to_list()
        for i, change in broken.items():
            if i < len(rows) and (split == "train" or i < 3):
                rows[i].update(change)
        splits[split] = datasets.Dataset.from_list(rows, features=data[split].features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def test_rows_without_caption_or_with_a_broken_image_are_counted_and_skipped(tmp_path, teacher_checkpoint, caplog):
    import run_eval

    data = bad_rows_dataset(tmp_path / "data")
    output_dir = tmp_path / "model"
    assert run_train.main(train_argv(data, output_dir, steps=3, do_eval="true")) == 0
    err = caplog.text
    assert "Dropped 4 of 12 train rows (no_caption: 2, not_an_image: 1, truncated: 1)" in err
    assert "Dropped 3 of 4 validation rows (no_caption: 2, not_an_image: 1)" in err
    assert "1 training captions are longer than max_caption_length=40 tokens and are truncated to it" in err
    assert (output_dir / "model.safetensors").exists()

    evaluation = tmp_path / "eval"
    teacher = ["--clip_model", "ClipCap-Test-Teacher", "--clip_pretrained", str(teacher_checkpoint)]
    argv = [str(output_dir), "--output_dir", str(evaluation), "--progress", "false", *teacher]
    assert run_eval.main(argv) == 0
    report = json.loads((evaluation / "eval_results.json").read_text())
    assert report["images"] == 1 and report["skipped_rows"] == {"no_caption": 2, "not_an_image": 1}
    assert "Skipped 3 of 4 validation rows" in caplog.text


def test_caption_output_file_is_replaced_only_when_the_run_finishes(tmp_path):
    import caption
    from processing_clipcap import ClipCapProcessor
    from tests.conftest import tiny_model

    model_dir = tmp_path / "model"
    model = tiny_model()
    model.save_pretrained(model_dir)
    ClipCapProcessor.from_config(model.config).save_pretrained(model_dir)
    from PIL import Image

    Image.new("RGB", (64, 64), "blue").save(tmp_path / "a.png")
    output = tmp_path / "captions.txt"
    output.write_text("earlier captions\n")
    # The model does not load: the earlier output is untouched.
    assert caption.main([str(tmp_path / "no-model"), str(tmp_path / "a.png"), "--output", str(output)]) == 2
    assert output.read_text() == "earlier captions\n"
    # Captioning stops halfway (the model fails): the earlier output is untouched, the new lines are in .partial.
    Image.new("RGB", (64, 64), "red").save(tmp_path / "b.png")
    calls = {"n": 0}
    real = caption.caption_batches

    def fail_on_second_batch(*args, **kwargs):
        for batch in real(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            yield batch

    argv = [str(model_dir), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--batch_size", "1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(caption, "caption_batches", fail_on_second_batch)
        with pytest.raises(KeyboardInterrupt):
            caption.main([*argv, "--output", str(output), "--progress", "false", "--max_new_tokens", "3"])
    assert output.read_text() == "earlier captions\n"
    assert (tmp_path / "captions.txt.partial").read_text().startswith(f"{tmp_path / 'a.png'}\t")
    assert caption.main([*argv, "--output", str(output), "--progress", "false", "--max_new_tokens", "3"]) == 0
    assert [line.split("\t")[0] for line in output.read_text().splitlines()] == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
    ]
    assert not (tmp_path / "captions.txt.partial").exists()


def test_prepare_dataset_config_errors_are_one_line(tmp_path, capsys):
    import prepare_dataset

    cases = [
        ({"num_train": "many"}, "num_train must be an integer or null, not 'many' (str)"),
        ({"num_trian": 10}, "unknown keys ['num_trian']"),
        ({"classes": {"a": 1}}, "classes must be a list"),
    ]
    for values, message in cases:
        argv = [write_config(tmp_path / "data.yaml", values | {"output_dir": str(tmp_path / "out")})]
        assert prepare_dataset.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("prepare_dataset.py: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_imagenet_weights_are_hash_checked_and_unpickled_weights_only(monkeypatch):
    import torchvision

    from clipcap.pretrained import load_backbone
    from configuration_clipcap import ClipCapConfig

    reference = torchvision.models.mobilenet_v2()
    calls = []

    def fake_download(url, *args, **kwargs):  # what torch.hub would fetch, without the network
        calls.append((url, kwargs))
        return reference.state_dict()

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    backbone = load_backbone(ClipCapConfig(encoder_pretrained=True), pretrained=True)
    assert isinstance(backbone, torchvision.models.MobileNetV2) and len(calls) == 1
    url, kwargs = calls[0]
    assert url.endswith(".pth") and kwargs["check_hash"] is True and kwargs["weights_only"] is True
    assert all(torch.equal(value, backbone.state_dict()[key]) for key, value in reference.state_dict().items())


def test_captions_as_bare_strings_are_refused_on_load_with_one_line(tmp_path, capsys):
    """The data contract: a caption column holds a list of strings per row. A dataset whose captions are plain
    strings is refused by the loader every reader goes through, with one line, before any work."""
    import train_clip_teacher
    from clipcap.data import load_prepared_dataset
    from tests.conftest import tiny_dataset

    path = tmp_path / "strings"
    dataset = tiny_dataset(num_train=4, num_validation=2)
    dataset = dataset.map(lambda row: {"text": row["captions"][0]}, remove_columns=["captions"])
    dataset.rename_column("text", "captions").save_to_disk(str(path))
    with pytest.raises(ValueError, match=r"the column 'captions' of the 'train' split of .* holds Value\('string'\)"):
        load_prepared_dataset(str(path), {"train": ["image", "captions"]})
    assert run_train.main(train_argv(path, tmp_path / "out")) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run_train.py: error: ")]
    assert line.endswith(
        "not lists of captions (list[str]); prepare_dataset.py writes each row's references as a list"
    )
    assert not (tmp_path / "out").exists()
    assert train_clip_teacher.main(["--dataset_dir", str(path), "--output_dir", str(tmp_path / "teacher")]) == 1
    assert "not lists of captions (list[str])" in capsys.readouterr().err


def test_the_test_session_has_the_hub_offline():
    """conftest sets HF_HUB_OFFLINE before huggingface_hub and datasets read it (both read it once, on import): set
    after them, every Hub lookup in the suite retried over the network for about 25 s before failing."""
    import datasets
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
