"""run_train.py end to end on tiny models, a tiny synthetic dataset and a tiny open_clip teacher: what a run logs
and leaves (a model that loads and captions, its card), checkpoints every epoch with early stopping, the presets that
parse, the self-critical stage's argument checks, and bad input as one error line that touches nothing already written
(docs/reliability.md)."""

import json
import os

import datasets
import pytest
import torch

import run_train
from clipcap.cli import build_model_config
from tests.conftest import ROOT, train_argv
from tests.helpers import scst_argv, write_config


def log_keys(output_dir) -> set[str]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {key for entry in state["log_history"] for key in entry}


def test_two_steps_cross_entropy_only(tmp_path, data_dir):
    out = tmp_path / "ce"
    assert run_train.main(train_argv(data_dir, out)) == 0
    keys = log_keys(out)
    assert {"loss", "loss_ce", "eval_loss", "eval_loss_ce", "eval_bleu_4", "eval_cider", "eval_distinct_2"} <= keys
    # The split carries synthetic scenes: accuracy overall and by number of objects (these 4 scenes have 2 or 3).
    assert {"eval_semantic_accuracy", "eval_semantic_accuracy_2obj", "eval_semantic_accuracy_3obj"} <= keys
    assert not {"loss_cos", "loss_con", "loss_div", "eval_clip_s"} & keys  # no teacher, no CLIP terms
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


def test_two_steps_all_losses_with_teacher_on_the_fly(tmp_path, data_dir, teacher_checkpoint):
    out = tmp_path / "all"
    argv = train_argv(
        data_dir,
        out,
        clip_model="ClipCap-Test-Teacher",
        clip_pretrained=str(teacher_checkpoint),
        lambda_cos=1.0,
        lambda_con=0.5,
        lambda_div=0.1,
        cache_teacher_embeddings="false",
    )
    assert run_train.main(argv) == 0
    keys = log_keys(out)
    for name in ("ce", "cos", "con", "div"):
        assert f"loss_{name}" in keys and f"eval_loss_{name}" in keys
    assert "eval_clip_s" in keys
    card = (out / "README.md").read_text()
    assert "ClipCap-Test-Teacher" in card and "0.5 L_con" in card
    assert "\npipeline_tag: image-text-to-text\n" in card and 'pipeline("image-text-to-text"' in card
    assert json.loads((out / "config.json").read_text())["custom_pipelines"]["image-text-to-text"]
    assert (out / "pipeline_clipcap.py").is_file()
    assert not any(
        "teacher" in name for name in safetensors_keys(out / "model.safetensors") if name.startswith("teacher.")
    )


def safetensors_keys(path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_output_directory_loads_and_captions(tmp_path, data_dir):
    from modeling_clipcap import ClipCapForCaptioning
    from processing_clipcap import ClipCapProcessor

    out = tmp_path / "model"
    assert run_train.main(train_argv(data_dir, out, do_eval="false")) == 0
    model = ClipCapForCaptioning.from_pretrained(out).eval()
    processor = ClipCapProcessor.from_pretrained(out)
    image = datasets.load_from_disk(str(data_dir))["validation"][0]["image"]
    inputs = processor(images=[image, image])
    assert inputs["pixel_values"].shape == (2, 3, 48, 48)  # the saved processor keeps the whole 48 px image
    ids = model.generate(inputs["pixel_values"], num_beams=2, max_new_tokens=5)
    captions = processor.batch_decode(ids)
    assert len(captions) == 2 and captions[0] == captions[1] and ids.shape[1] >= 1
    assert model.generation_config.num_beams == 1 and model.generation_config.no_repeat_ngram_size == 0


def test_checkpoint_every_epoch_and_early_stopping(tmp_path, data_dir):
    """12 rows in batches of 4: 3 steps an epoch, so save_every_epochs 1 saves (and evaluates) at steps 3 and 6; early
    stopping on the eval loss then keeps the best checkpoint."""
    out = tmp_path / "epochs"
    argv = train_argv(data_dir, out, steps=6, save_every_epochs=1, eval_captions="false")
    argv += ["--early_stopping_patience", "5", "--metric_for_best_model", "loss", "--load_best_model_at_end", "true"]
    argv += ["--eval_strategy", "steps", "--save_strategy", "steps"]  # save_every_epochs sets their steps
    assert run_train.main(argv) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_loss" in e][:2] == [3, 6]
    assert state["best_model_checkpoint"].endswith(("checkpoint-3", "checkpoint-6"))
    with pytest.raises(ValueError, match="early_stopping_patience needs metric_for_best_model"):
        run_train.train(*run_train.parse_args(train_argv(data_dir, tmp_path / "bad", early_stopping_patience=2)))


@pytest.mark.parametrize("name", ["demo.yaml", "open_images_home_appliance.yaml"])
def test_presets_parse(name, caplog):
    """Both configs parse here. The real one asks for bf16 and 4 DataLoader workers: bf16 only where the device has it
    natively (else fp32, said once), and no more workers than this process's CPUs."""
    from clipcap.precision import native_bf16

    model_args, data_args, teacher_args, guidance, _, training_args = run_train.parse_args(
        [str(ROOT / "configs" / name)]
    )
    assert guidance.lambda_cos == 1.0 and guidance.lambda_con == 0.1
    if name == "open_images_home_appliance.yaml":
        native, _ = native_bf16("cuda" if torch.cuda.is_available() else "cpu")
        assert training_args.bf16 == native
        assert ("not the bf16 asked for" in caplog.text) != native
        assert training_args.dataloader_num_workers == min(4, len(os.sched_getaffinity(0)))
        config = build_model_config(model_args.config_overrides)
        assert (config.encoder_pretrained, config.decoder_name_or_path) == (True, "distilgpt2")
        assert (teacher_args.clip_model, teacher_args.clip_pretrained) == ("ViT-B-32", "openai")
        assert data_args.save_every_epochs == 10 and data_args.early_stopping_patience == 3
        assert training_args.load_best_model_at_end and training_args.metric_for_best_model == "clip_s"


def test_the_demo_preset_is_the_stage_from_the_demo_captioner():
    model_args, data_args, teacher_args, guidance, scst, training_args = run_train.parse_args(
        [str(ROOT / "configs" / "demo_scst.yaml")]
    )
    assert scst.scst and (scst.scst_num_samples, scst.scst_baseline, scst.scst_clip_weight) == (
        5,
        "mean_of_others",
        1.0,
    )
    assert model_args.model_name_or_path == "outputs/demo" and data_args.dataset_dir == "data/demo"
    assert teacher_args.clip_pretrained == "outputs/demo-teacher"
    assert (guidance.lambda_cos, guidance.lambda_con, guidance.lambda_div) == (0.0, 0.0, 0.0)
    run_train.check_arguments(model_args, data_args, guidance, scst, training_args)  # run_train.py checks them first


def test_run_train_refuses_a_stage_without_a_trained_model_or_with_first_stage_terms(
    tmp_path, data_dir, stage_one, teacher_checkpoint, capsys
):
    argv = scst_argv(data_dir, tmp_path / "a", stage_one, teacher_checkpoint)
    no_model = argv[: argv.index("--model_name_or_path")] + argv[argv.index("--model_name_or_path") + 2 :]
    assert run_train.main(no_model) == 1
    assert "set model_name_or_path to a trained captioner" in capsys.readouterr().err
    assert run_train.main([*argv, "--lambda_cos", "1"]) == 1
    assert "set lambda_cos, lambda_con and lambda_div to 0" in capsys.readouterr().err


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
