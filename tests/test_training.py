"""run_train.py and CLIPGuidedTrainer on tiny models, a tiny synthetic dataset and a tiny open_clip teacher."""

import json
import os
import subprocess
import sys

import datasets
import pytest
import torch

import run_train
from clipcap.cli import build_model_config
from tests.conftest import ROOT, TINY_DECODER, TINY_TEACHER, train_argv


class CountingTeacher:
    """Wraps a CLIPTeacher and counts the calls that run the teacher network."""

    def __init__(self, teacher):
        self.inner, self.calls = teacher, 0
        self.identity, self.preprocess, self.tokenizer = teacher.identity, teacher.preprocess, teacher.tokenizer

    def to(self, device):
        return self

    @property
    def device(self):
        return torch.device("cpu")

    def embed_pixel_values(self, pixel_values):
        self.calls += 1
        return self.inner.embed_pixel_values(pixel_values)

    def embed_input_ids(self, input_ids):
        self.calls += 1
        return self.inner.embed_input_ids(input_ids)

    def embed_texts(self, texts):
        self.calls += 1
        return self.inner.embed_texts(texts)

    def embed_pil_images(self, images):
        self.calls += 1
        return self.inner.embed_pil_images(images)


def make_trainer(tmp_path, data_dir, teacher, **guidance):
    from clipcap.collator import CaptionCollator
    from clipcap.trainer import CLIPGuidedTrainer
    from clipcap.training_args import ClipCapTrainingArguments, CLIPGuidanceArguments
    from modeling_clipcap import ClipCapForCaptioning
    from processing_clipcap import ClipCapProcessor

    model_args = run_train.parse_args(train_argv(data_dir, tmp_path / "out"))[0]
    config = build_model_config(model_args.config_overrides)
    config.teacher_embed_dim = TINY_TEACHER["embed_dim"]
    torch.manual_seed(0)
    model = ClipCapForCaptioning(config)
    processor = ClipCapProcessor.from_config(config, max_caption_length=40, crop_fraction=1.0)
    guidance = CLIPGuidanceArguments(**{"lambda_cos": 0.0, "lambda_con": 0.0, "lambda_div": 0.0, **guidance})
    collator = CaptionCollator(
        processor,
        teacher=teacher,
        teacher_images=guidance.needs_teacher_images,
        teacher_texts=guidance.needs_teacher_texts,
    )
    args = ClipCapTrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    dataset = datasets.load_from_disk(str(data_dir))
    trainer = CLIPGuidedTrainer(
        model=model,
        args=args,
        train_dataset=dataset["train"],
        data_collator=collator,
        processing_class=processor,
        guidance=guidance,
        teacher=teacher,
    )
    return trainer, collator([dataset["train"][i] for i in range(4)])


@pytest.mark.parametrize(
    ("weights", "expected_calls", "expected_terms"),
    [
        ({}, 0, ["ce"]),
        ({"lambda_div": 0.5}, 0, ["ce", "div"]),
        ({"lambda_cos": 1.0}, 1, ["ce", "cos"]),
        ({"lambda_con": 1.0}, 1, ["ce", "con"]),
        ({"lambda_cos": 1.0, "lambda_con": 1.0, "lambda_div": 1.0}, 2, ["ce", "con", "cos", "div"]),
    ],
)
def test_zero_weight_skips_term_and_teacher(
    tmp_path, data_dir, teacher_checkpoint, weights, expected_calls, expected_terms
):
    from clipcap.teacher import CLIPTeacher

    teacher = CountingTeacher(CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint)))
    trainer, batch = make_trainer(tmp_path, data_dir, teacher, **weights)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert teacher.calls == expected_calls
    assert sorted(trainer._term_sums["train"]) == [f"loss_{name}" for name in expected_terms]
    # The total is the weighted sum of the logged terms.
    terms = trainer._term_sums["train"]
    weight = {"loss_ce": 1.0, "loss_cos": weights.get("lambda_cos", 0), "loss_con": weights.get("lambda_con", 0)}
    weight["loss_div"] = weights.get("lambda_div", 0)
    assert loss.item() == pytest.approx(sum(weight[name] * float(value) for name, value in terms.items()), rel=1e-5)


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


def test_cached_teacher_embeddings_match_on_the_fly(tmp_path, data_dir, teacher_checkpoint):
    """The embeddings run_train caches before training are what the teacher gives on the fly, and a batch sees the
    embedding of the caption it drew."""
    from clipcap.collator import CaptionCollator
    from clipcap.teacher import CLIPTeacher
    from clipcap.teacher_cache import embed_dataset
    from processing_clipcap import ClipCapProcessor

    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    dataset = datasets.load_from_disk(str(data_dir))["train"]
    cached = embed_dataset(dataset, teacher)
    model_args = run_train.parse_args(train_argv(data_dir, tmp_path))[0]
    config = build_model_config(model_args.config_overrides, teacher.identity.embed_dim)
    processor = ClipCapProcessor.from_config(config, crop_fraction=1.0)
    rows = [cached[i] for i in range(3)]
    torch.manual_seed(5)
    with_cache = CaptionCollator(processor, teacher=teacher, teacher_images=True, teacher_texts=True)(rows)
    torch.manual_seed(5)
    plain_rows = [dataset[i] for i in range(3)]
    on_the_fly = CaptionCollator(processor, teacher=teacher, teacher_images=True, teacher_texts=True)(plain_rows)
    assert torch.equal(with_cache["input_ids"], on_the_fly["input_ids"])  # the same captions were drawn
    images = teacher.embed_pixel_values(on_the_fly["teacher_pixel_values"])
    texts = torch.nn.functional.normalize(teacher.model.encode_text(on_the_fly["teacher_input_ids"]).float(), dim=-1)
    assert torch.allclose(with_cache["teacher_image_embeds"], images, atol=1e-5)
    assert torch.allclose(with_cache["teacher_text_embeds"], texts, atol=1e-5)


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


def test_refuses_a_cache_from_another_teacher(tmp_path, data_dir, teacher_checkpoint):
    from clipcap.teacher import CLIPTeacher, TeacherIdentity
    from clipcap.teacher_cache import add_teacher_embeddings

    dataset = datasets.load_from_disk(str(data_dir))
    other = TeacherIdentity("ClipCap-Test-Teacher", "other.safetensors", "0" * 64, 16)
    metadata = {"teacher": other.to_dict()}
    dataset = dataset.map(lambda row: {"teacher_image_embeds": [0.0] * 16, "teacher_text_embeds": [[0.0] * 16]})
    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    with pytest.raises(ValueError, match="made by ClipCap-Test-Teacher \\(sha256 000000000000\\)"):
        add_teacher_embeddings(dataset, metadata, teacher, "train")


def test_train_clip_teacher_saves_a_checkpoint_open_clip_loads(tmp_path, data_dir, teacher_checkpoint):
    import open_clip

    import train_clip_teacher

    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data_dir), "--output_dir", str(out), "--model", "ClipCap-Test-Teacher"]
    argv += ["--num_train_epochs", "2", "--batch_size", "4", "--warmup_steps", "1"]
    assert train_clip_teacher.main(argv) == 0
    record = json.loads((out / "teacher.json").read_text())
    assert record["arch"] == "ClipCap-Test-Teacher" and len(record["history"]) == 2
    # 12 images in batches of 4: three steps an epoch; recall over 4 validation images is a multiple of 1/4.
    validation = record["validation"]
    assert validation["image_to_text_R@1"] * 4 == pytest.approx(round(validation["image_to_text_R@1"] * 4))
    assert 0.0 <= validation["text_to_image_R@1"] <= 1.0
    model = open_clip.create_model("ClipCap-Test-Teacher", pretrained=record["pretrained"])
    trained = {k: v for k, v in model.state_dict().items()}
    random_start = open_clip.create_model(
        "ClipCap-Test-Teacher", pretrained=str(teacher_checkpoint / "open_clip_model.safetensors")
    )
    assert any(not torch.equal(trained[k], v) for k, v in random_start.state_dict().items())
    # The teacher loads through the project's wrapper from the directory, identified by its checksum.
    from clipcap.files import file_sha256
    from clipcap.teacher import CLIPTeacher

    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(out))
    assert teacher.identity.sha256 == record["sha256"] == file_sha256(out / "open_clip_model.safetensors")
    # A second run does not overwrite the teacher unless asked to.
    assert train_clip_teacher.main(argv) == 1


def _gather_worker(rank: int, world: int, init_file: str, z_all, t_all, ids_all, results):
    import torch.distributed as dist

    from clipcap.losses import contrastive_loss, gather_features

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rows = slice(rank * 2, rank * 2 + 2)
    z = z_all[rows].clone().requires_grad_()
    z_gathered, t_gathered, ids_gathered = gather_features(z, t_all[rows], ids_all[rows])
    loss = contrastive_loss(z_gathered, t_gathered, 3.0, ids_gathered)
    loss.backward()
    results[rank] = (loss.item(), z.grad.clone())
    dist.destroy_process_group()


def test_gathered_contrastive_loss_matches_the_whole_batch(tmp_path):
    """Two gloo processes with two rows each: the loss over gathered features equals the one-process loss over the
    four rows, and each process's gradient is its rows' share of the whole-batch gradient (times the world size, as
    DDP then averages the gradients over processes)."""
    import torch.multiprocessing as mp

    from clipcap.losses import contrastive_loss

    torch.manual_seed(0)
    z_all = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    t_all = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    ids_all = torch.tensor([1, 2, 1, 3])
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), z_all, t_all, ids_all, results), nprocs=2, join=True)
    z = z_all.clone().requires_grad_()
    whole = contrastive_loss(z, t_all, 3.0, ids_all)
    whole.backward()
    for rank in (0, 1):
        loss, grad = results[rank]
        assert loss == pytest.approx(whole.item(), abs=1e-6)
        assert torch.allclose(grad, z.grad[rank * 2 : rank * 2 + 2], atol=1e-6)


def shrunk_demo_config(tmp_path, data_dir, teacher_checkpoint, **overrides) -> str:
    """configs/demo.yaml, with the tiny data, teacher and model and a few steps."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config.update(
        dataset_dir=str(data_dir),
        output_dir=str(tmp_path / "demo"),
        clip_model="ClipCap-Test-Teacher",
        clip_pretrained=str(teacher_checkpoint),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        generation_num_beams=1,
        generation_max_new_tokens=5,
    )
    config["config_overrides"].update(
        text_config={**config["config_overrides"]["text_config"], **TINY_DECODER, "n_positions": 64},
        mapper_num_heads=2,
        image_size=48,
    )
    config.pop("num_train_epochs", None)
    config.update(overrides)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def accelerate_launch(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "RANK_DIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "accelerate.commands.launch", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_accelerate_launch_demo_config(tmp_path, data_dir, teacher_checkpoint, processes):
    """`accelerate launch run_train.py configs/demo.yaml`, shrunk to two steps, with one process and with two (gloo,
    CPU) processes whose contrastive loss gathers the other's negatives. Every process ends holding the saved model,
    BatchNorm statistics included: each captions the whole split alike, and the evaluation (each process a shard)
    equals a one-process captioning of the saved model. DDP is told there are no unused parameters, and the
    channels-last gradients match its buckets (neither of its two warnings)."""
    from safetensors.torch import load_file

    from clipcap.inference import caption_images, load_captioner
    from clipcap.metrics import semantic_accuracy
    from clipcap.synthetic import Scene

    config = shrunk_demo_config(tmp_path, data_dir, teacher_checkpoint, eval_steps=2, save_steps=2)
    launch = ["--config_file", str(ROOT / "accelerate_config.yaml"), "--num_processes", str(processes)]
    if processes > 1:  # torchrun-style launch; with the config's use_cpu: true, accelerate makes it gloo on CPU
        launch += ["--multi_gpu"]
    result = accelerate_launch([*launch, str(ROOT / "tests" / "launch_run_train.py"), config], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "demo"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    keys = {key for entry in state["log_history"] for key in entry}
    assert {"loss_ce", "loss_cos", "loss_con", "eval_semantic_accuracy", "eval_clip_s"} <= keys
    assert json.loads((out / "run_args.json").read_text())["world_size"] == processes
    assert (out / "model.safetensors").exists() and (out / "processor_config.json").exists()

    saved = load_file(str(out / "model.safetensors"))
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(processes)]
    for rank in range(processes):
        held = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        differing = [name for name in saved if not torch.equal(saved[name], held[name])]
        assert differing == [], f"rank {rank} holds another model: {differing[:5]}"
        assert ranks[rank]["captions"] == ranks[0]["captions"]
    model, processor = load_captioner(str(out), device="cpu")
    validation = datasets.load_from_disk(str(data_dir))["validation"]
    one_process = caption_images(model, processor, validation["image"], batch_size=8)
    assert ranks[0]["evaluation"] == ranks[0]["captions"] == one_process
    scenes = [Scene.from_json(text) for text in validation["scene"]]
    accuracy = semantic_accuracy(one_process, scenes)["semantic_accuracy"]
    assert ranks[0]["metrics"]["eval_semantic_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert "find_unused_parameters=True" not in result.stderr and "Grad strides" not in result.stderr


def test_config_file_with_overriding_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: out\nlambda_cos: 0.5\nlearning_rate: 0.001\nconfig_overrides: {image_size: 64}\n")
    model_args, _, _, guidance, _, training_args = run_train.parse_args(
        [str(config), "--lambda_cos", "0", "--config_overrides", "image_size=32"]
    )
    image_size = build_model_config(model_args.config_overrides).image_size
    assert guidance.lambda_cos == 0.0 and image_size == 32 and training_args.learning_rate == 0.001
    (tmp_path / "bad.yaml").write_text("output_dir: out\nlambda_cosine: 1\n")
    with pytest.raises(ValueError, match="lambda_cosine"):
        run_train.parse_args([str(tmp_path / "bad.yaml"), "--lambda_cos", "0"])


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
    """Both configs parse here. The real one asks for bf16 and 4 DataLoader workers: bf16 only where a GPU has it
    (else fp32, said once), and no more workers than this process's CPUs."""
    from transformers.utils import is_torch_bf16_gpu_available

    model_args, data_args, teacher_args, guidance, _, training_args = run_train.parse_args(
        [str(ROOT / "configs" / name)]
    )
    assert guidance.lambda_cos == 1.0 and guidance.lambda_con == 0.1
    if name == "open_images_home_appliance.yaml":
        assert training_args.bf16 == is_torch_bf16_gpu_available()
        assert ("training in fp32 instead" in caplog.text) != is_torch_bf16_gpu_available()
        assert training_args.dataloader_num_workers == min(4, len(os.sched_getaffinity(0)))
        config = build_model_config(model_args.config_overrides)
        assert (config.encoder_pretrained, config.decoder_name_or_path) == (True, "distilgpt2")
        assert (teacher_args.clip_model, teacher_args.clip_pretrained) == ("ViT-B-32", "openai")
        assert data_args.save_every_epochs == 10 and data_args.early_stopping_patience == 3
        assert training_args.load_best_model_at_end and training_args.metric_for_best_model == "clip_s"


def test_push_to_hub_keeps_the_model_card_run_train_wrote(tmp_path, data_dir):
    trainer, _ = make_trainer(tmp_path, data_dir, None)
    card = tmp_path / "out" / "README.md"
    trainer.create_model_card(model_name="x")  # no card yet: the Trainer's own
    assert "generated automatically according to the information the Trainer had access to" in card.read_text()
    card.write_text("# ClipCap captioner (CLIP-guided)\n")
    trainer.create_model_card(model_name="x")  # what push_to_hub calls before uploading
    assert card.read_text() == "# ClipCap captioner (CLIP-guided)\n"


def test_config_overrides_are_read_as_clipcapconfig_fields():
    """A flag's `key=value,...` and a config file's mapping give the same ClipCapConfig; values take their field's type,
    a dotted key reaches the decoder's GPT2Config, an empty value is null, and a bad key or value is one ConfigError."""
    from clipcap.cli import ConfigError, parse_config_overrides
    from configuration_clipcap import ClipCapConfig

    flag = "image_size=48,encoder_pretrained=false,text_config.n_layer=2,decoder_name_or_path=,mapper_dropout=0.1"
    parsed = parse_config_overrides(flag, ClipCapConfig)
    assert parsed == {
        "image_size": 48,
        "encoder_pretrained": False,
        "text_config": {"n_layer": 2},
        "decoder_name_or_path": None,
        "mapper_dropout": 0.1,
    }
    mapping = {"image_size": "48", "encoder_pretrained": False, "text_config": {"n_layer": 2}, "mapper_dropout": 0.1}
    assert parse_config_overrides({**mapping, "decoder_name_or_path": None}, ClipCapConfig) == parsed
    config = build_model_config(flag, teacher_embed_dim=16)
    assert (config.image_size, config.text_config.n_layer, config.text_config.n_embd) == (48, 2, 768)
    assert config.teacher_embed_dim == 16 and build_model_config("teacher_embed_dim=8", 16).teacher_embed_dim == 8
    assert parse_config_overrides(None, ClipCapConfig) == parse_config_overrides("", ClipCapConfig) == {}
    errors = {
        "imag_size=3": "config_overrides: unknown keys ['imag_size'] (see ClipCapConfig's fields)",
        "text_config.n_lyer=2": "config_overrides: text_config: unknown keys ['n_lyer'] (see GPT2Config's fields)",
        "image_size=big": "config_overrides: image_size must be an integer, not 'big' (str)",
        "mapper_type=rnn": "config_overrides: mapper_type must be one of 'mlp', 'transformer', not 'rnn' (str)",
        "image_size": "config_overrides: 'image_size' is not key=value",
    }
    for overrides, message in errors.items():
        with pytest.raises(ConfigError) as error:
            parse_config_overrides(overrides, ClipCapConfig)
        assert str(error.value) == message


def test_the_real_config_offline_names_every_missing_download_at_once(tmp_path, monkeypatch, capsys):
    """Offline, configs/open_images_home_appliance.yaml stops once, before anything loads, with one error that lists
    the dataset, the CLIP teacher, the ImageNet encoder and the decoder, each with its offline alternative."""
    from clipcap import preflight

    probed = []
    monkeypatch.setattr(preflight, "reachable", lambda host, timeout=3.0: probed.append(host) or False)
    config = str(ROOT / "configs" / "open_images_home_appliance.yaml")
    argv = [config, "--dataset_dir", str(tmp_path / "no-dataset"), "--output_dir", str(tmp_path / "out")]
    assert run_train.main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("run_train.py: error: this run needs 4 things that are not on this machine and cannot")
    items = [line for line in error.splitlines() if line.startswith("  - ")]
    assert [item.split(",")[0] for item in items] == [
        f"  - the prepared dataset '{tmp_path / 'no-dataset'}': no such directory. Prepare it with "
        "prepare_dataset.py (see the training config's first lines)",
        "  - the CLIP teacher ViT-B-32 'openai'",
        "  - the ImageNet weights of the encoder 'mobilenet_v2'",
        "  - the decoder 'distilgpt2'",
    ]
    assert "Offline: encoder_name: timm/tf_efficientnet_lite0" in items[2] and "configs/demo_data.yaml" in items[0]
    assert probed == ["download.pytorch.org"]  # the Hub is offline (HF_HUB_OFFLINE=1): not even probed
    assert not (tmp_path / "out").exists()


def test_check_downloads_raises_only_for_what_no_cache_holds_and_no_host_serves(monkeypatch):
    from clipcap import preflight
    from clipcap.preflight import Download, check_downloads

    monkeypatch.setattr(preflight, "reachable", lambda host, timeout=3.0: host == "up.example")
    cached = Download("a cached file", "down.example", True, "-")
    served = Download("a file a host serves", "up.example", False, "-")
    check_downloads([None, cached, served])
    missing = Download("a missing file", "down.example", False, "use another")
    with pytest.raises(OSError, match=r"^a missing file, from down.example. Offline: use another \(no cache here"):
        check_downloads([cached, served, missing])
    with pytest.raises(OSError, match=r"needs 2 things.*\n  - a missing file, .*\n  - the file, from down.example"):
        check_downloads([missing, Download("the file", "down.example", False, "-")])
