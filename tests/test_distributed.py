"""clipcap/distributed.py, under `accelerate launch run_train.py configs/demo.yaml` with one and two (gloo, CPU)
processes: every process ends holding the saved model, BatchNorm statistics included, so the evaluation sharded over
processes equals a one-process captioning, and DDP warns neither of unused parameters nor of gradient strides. The test
runs run_train.py end to end; it is here because what it holds is this module's promise."""

import json

import datasets
import pytest
import torch

from tests.conftest import ROOT, TINY_DECODER
from tests.helpers import accelerate_launch


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
    if config["config_overrides"].get("mapper_prefix") == "grid":  # the 48 px image's 2x2 grid is the prefix
        config["config_overrides"]["prefix_length"] = 4
    config.pop("num_train_epochs", None)
    config.update(overrides)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


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
