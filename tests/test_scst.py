"""clipcap/scst.py, the self-critical stage: hand-computed advantages and losses, a step that raises a rewarded
caption's probability, the reward as its weighted parts, resuming, and accelerate with 1 and 2 processes."""

import json
import os

import datasets
import pytest
import torch

import run_train
from clipcap.scst import leave_one_out_baseline, sampled_tokens_mask, scst_loss, token_log_probs
from tests.conftest import ROOT
from tests.helpers import CountingTeacher, accelerate_launch, needs_packaged_weights, scst_argv


def test_advantage_and_loss_on_a_hand_built_batch():
    """Two images, three samples each. Leave-one-out baselines: image 0 rewards (1, 2, 6) -> (4, 3.5, 1.5); image 1
    rewards (0, 0, 3) -> (1.5, 1.5, 0). Advantages (-3, -1.5, 4.5, -1.5, -1.5, 3)."""
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    baselines = leave_one_out_baseline(rewards)
    assert baselines.tolist() == [[4.0, 3.5, 1.5], [1.5, 1.5, 0.0]]
    log_probs = torch.tensor([-2.0, -1.0, -4.0, -3.0, -0.5, -1.0], requires_grad=True)
    loss = scst_loss(log_probs, rewards.flatten(), baselines.flatten())
    # -(1/6) * sum(advantage * log p) = -(6 + 1.5 - 18 + 4.5 + 0.75 - 3) / 6 = 8.25 / 6
    assert loss.item() == pytest.approx(8.25 / 6)
    loss.backward()
    assert log_probs.grad.tolist() == pytest.approx([0.5, 0.25, -0.75, 0.25, 0.25, -0.5])  # -advantage / 6
    # Two processes with an image each: baselines are per image, so the mean of their losses (what DDP's gradient
    # average amounts to) is the one-process loss of the whole batch.
    halves = [
        scst_loss(log_probs[3 * i : 3 * i + 3], rewards[i], leave_one_out_baseline(rewards[i : i + 1])[0])
        for i in (0, 1)
    ]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(loss.item())
    with pytest.raises(ValueError, match="at least 2 samples"):
        leave_one_out_baseline(torch.ones(2, 1))


def test_sampled_tokens_mask_keeps_each_caption_through_its_first_eos():
    eos = 9
    sequences = torch.tensor([[5, 7, 9, 9, 9], [9, 9, 9, 9, 9], [1, 2, 3, 4, 5], [1, 9, 2, 9, 9]])
    assert sampled_tokens_mask(sequences, eos).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],  # no EOS within max_new_tokens: every token counts
        [1, 1, 0, 0, 0],
    ]
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    assert token_log_probs(logits, torch.tensor([[0, 1]])).exp()[0].tolist() == pytest.approx([0.5, 0.8])


def make_scst_trainer(tmp_path, data_dir, stage_one, teacher, **scst):
    from clipcap.collator import CaptionCollator
    from clipcap.scst import SCSTTrainer
    from clipcap.training_args import ClipCapTrainingArguments, CLIPGuidanceArguments, SCSTArguments
    from modeling_clipcap import ClipCapForCaptioning
    from processing_clipcap import ClipCapProcessor

    model = ClipCapForCaptioning.from_pretrained(str(stage_one))
    processor = ClipCapProcessor.from_pretrained(str(stage_one))
    scst = SCSTArguments(**{"scst": True, "scst_num_samples": 3, **scst})
    collator = CaptionCollator(
        processor,
        teacher=teacher,
        teacher_images=scst.scst_clip_weight > 0,
        references=scst.scst_cider_weight > 0,
        teacher_pixels=scst.needs_teacher_pixels,
    )
    args = ClipCapTrainingArguments(
        output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, generation_max_new_tokens=6
    )
    dataset = datasets.load_from_disk(str(data_dir))
    guidance = CLIPGuidanceArguments(lambda_cos=0.0, lambda_con=0.0, lambda_div=0.0)
    trainer = SCSTTrainer(
        model=model,
        args=args,
        train_dataset=dataset["train"],
        data_collator=collator,
        processing_class=processor,
        guidance=guidance,
        teacher=teacher,
        scst=scst,
    )
    return trainer, collator([dataset["train"][i] for i in range(2)])


def spy_on_generate(model) -> list[torch.Tensor]:
    """Record what `model.generate` returns."""
    calls, generate = [], model.generate

    def recorded(*args, **kwargs):
        calls.append(generate(*args, **kwargs))
        return calls[-1]

    model.generate = recorded
    return calls


def caption_log_probs(model, pixel_values, sequences, eos, per_image):
    mask = sampled_tokens_mask(sequences, eos)
    with torch.no_grad():
        out = model.eval()(
            pixel_values=pixel_values, input_ids=sequences, attention_mask=mask, captions_per_image=per_image
        )
    prefix = model.config.prefix_length  # logits cover the prefix and the caption; these positions score the tokens
    return (token_log_probs(out.logits[:, prefix - 1 : -1], sequences) * mask).sum(dim=1)


def test_a_caption_rewarded_above_its_baseline_gets_its_probability_raised(
    tmp_path, data_dir, stage_one, teacher_checkpoint
):
    """One step of plain SGD on the trainer's loss, with rewards 1 for each image's first sample and 0 for the other
    two: the first samples' log-probabilities rise, and the loss equals the hand-computed REINFORCE loss."""
    from clipcap.teacher import CLIPTeacher

    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    trainer, batch = make_scst_trainer(tmp_path, data_dir, stage_one, teacher)
    model = trainer.model
    eos = model.config.text_config.eos_token_id
    trainer.rewards = lambda captions, image_embeds, references, copies, grids=None: {
        "total": torch.tensor([1.0 if i % copies == 0 else 0.0 for i in range(len(captions))])
    }
    sampled = spy_on_generate(model)
    model.train()
    loss = trainer.compute_loss(model, batch)
    assert model.training  # the step ran in eval mode and gave the model back in training mode
    (samples,) = sampled
    assert samples.shape[0] == 2 * 3
    before = caption_log_probs(model, batch["pixel_values"], samples, eos, 3)
    advantages = torch.tensor([1.0, -0.5, -0.5] * 2)  # leave-one-out: rewards (1, 0, 0)
    assert loss.item() == pytest.approx(-(advantages * before).mean().item(), rel=1e-4)
    loss.backward()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter -= 0.05 * parameter.grad
    after = caption_log_probs(model, batch["pixel_values"], samples, eos, 3)
    assert (after[0::3] > before[0::3]).all(), (before, after)
    assert ((after - before) * advantages).sum() > 0


@pytest.mark.parametrize(
    ("weights", "baseline", "teacher_calls", "parts"),
    [
        ({"scst_clip_weight": 0.0, "scst_cider_weight": 1.0}, "mean_of_others", 0, ["cider"]),
        ({"scst_clip_weight": 1.0}, "mean_of_others", 2, ["clip_s"]),  # the images once, the samples once
        ({"scst_clip_weight": 1.0}, "greedy", 3, ["clip_s"]),  # ... and the greedy captions
        ({"scst_clip_weight": 0.5, "scst_cider_weight": 2.0, "scst_ce_weight": 0.3}, "greedy", 3, ["clip_s", "cider"]),
    ],
)
def test_the_reward_is_the_weighted_parts_and_a_zero_clip_weight_never_calls_the_teacher(
    tmp_path, data_dir, stage_one, teacher_checkpoint, weights, baseline, teacher_calls, parts
):
    from clipcap.metrics import clip_score
    from clipcap.teacher import CLIPTeacher

    inner = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    teacher = CountingTeacher(inner)
    trainer, batch = make_scst_trainer(tmp_path, data_dir, stage_one, teacher, scst_baseline=baseline, **weights)
    sampled = spy_on_generate(trainer.model)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert teacher.calls == teacher_calls
    logged = {
        name: float(value) / trainer._term_counts["train"][name] for name, value in trainer._term_sums["train"].items()
    }
    assert {k for k in logged if k.startswith("scst_reward_")} == {f"scst_reward_{p}" for p in parts}
    assert ("loss_ce" in logged) == ("scst_ce_weight" in weights)
    expected = {"clip_s": weights.get("scst_clip_weight", 1.0), "cider": weights.get("scst_cider_weight", 0.0)}
    total = sum(expected[p] * logged[f"scst_reward_{p}"] for p in parts)
    assert logged["scst_reward"] == pytest.approx(total, rel=1e-5)
    captions = trainer.processing_class.batch_decode(sampled[0])
    if "clip_s" in parts:  # CLIP-S of each sample with its image, by the teacher
        images = inner.embed_pixel_values(batch["teacher_pixel_values"]).repeat_interleave(3, dim=0)
        by_hand = clip_score(images, inner.embed_texts(captions)).mean().item()
        assert logged["scst_reward_clip_s"] == pytest.approx(by_hand, rel=1e-5)
    if "cider" in parts:
        references = [refs for refs in batch["references"] for _ in range(3)]
        by_hand = trainer.cider_reward(captions, references).mean().item()
        assert logged["scst_reward_cider"] == pytest.approx(by_hand, rel=1e-6)
    lengths = [len(caption.split()) for caption in captions]
    assert logged["scst_sample_length"] == pytest.approx(sum(lengths) / len(lengths))
    assert 0.0 <= logged["scst_unparseable"] <= 1.0 and torch.isfinite(loss)


@needs_packaged_weights
def test_the_matcher_reward_is_the_matchers_probability_of_each_sample(tmp_path, stage_one, matcher_teacher):
    """`scst_matcher_weight`: each sample's reward part is sigmoid(matcher logit) with its own image's grid, added to
    CLIP-S by the weights; a teacher without a matcher is refused in one line."""
    from clipcap.metrics import clip_score
    from clipcap.teacher import CLIPTeacher

    teacher_dir, data_dir = matcher_teacher
    teacher = CLIPTeacher.from_pretrained("ClipCap-LiT-S", str(teacher_dir))
    weights = {"scst_clip_weight": 0.5, "scst_matcher_weight": 2.0}
    trainer, batch = make_scst_trainer(tmp_path, data_dir, stage_one, teacher, **weights)
    assert batch["teacher_pixel_values"].shape[0] == 2
    sampled = spy_on_generate(trainer.model)
    trainer.model.train()
    assert torch.isfinite(trainer.compute_loss(trainer.model, batch))
    logged = {
        name: float(value) / trainer._term_counts["train"][name] for name, value in trainer._term_sums["train"].items()
    }
    captions = trainer.processing_class.batch_decode(sampled[0])
    grids = teacher.grids_of_pixel_values(batch["teacher_pixel_values"]).repeat_interleave(3, dim=0)
    by_hand = torch.sigmoid(teacher.match_grids(grids, captions))
    assert 0.0 < by_hand.min() and by_hand.max() < 1.0
    assert logged["scst_reward_matcher"] == pytest.approx(by_hand.mean().item(), rel=1e-5)
    images = teacher.embed_pixel_values(batch["teacher_pixel_values"]).repeat_interleave(3, dim=0)
    clip_s = clip_score(images, teacher.embed_texts(captions)).mean().item()
    assert logged["scst_reward"] == pytest.approx(0.5 * clip_s + 2.0 * by_hand.mean().item(), rel=1e-5)

    teacher.matcher = None
    with pytest.raises(ValueError, match="needs a teacher with an image-text matcher"):
        make_scst_trainer(tmp_path, data_dir, stage_one, teacher, **weights)


@pytest.mark.parametrize("kind", ["generative", "itm"])
def test_the_relation_contrast_reward_is_the_mean_win_over_the_captions_relation_reversals(kind):
    """`scst_matcher_reward relation_contrast`: a caption with a relation against its two edits (phrases swapped,
    converse word), each scored with the caption's own image (the generative kind by log p, the sum); a caption with
    no relation gets 0.5."""
    from types import SimpleNamespace

    from clipcap.rewards import relation_contrast_reward

    scores = {
        "a red kettle to the left of a blue toaster": -10.0,
        "a blue toaster to the left of a red kettle": -12.0,
        "a red kettle to the right of a blue toaster": -9.0,
        "a red kettle": -3.0,
    }
    calls = []

    def match_grids(grids, texts, reduction="mean"):
        calls.append((grids.flatten().tolist(), texts, reduction))
        return torch.tensor([scores[text.lower()] for text in texts])  # the text tower reads lower case

    teacher = SimpleNamespace(matcher=SimpleNamespace(config=SimpleNamespace(kind=kind)), match_grids=match_grids)
    captions = ["a red kettle", "A red kettle to the left of a blue toaster"]
    reward = relation_contrast_reward(teacher, captions, torch.tensor([[7.0], [8.0]]))
    by_hand = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(-1.0))) / 2
    assert reward.tolist() == pytest.approx([0.5, by_hand.item()])
    ((grids, texts, reduction),) = calls
    assert grids == [7.0, 8.0, 8.0, 8.0]  # each edit with its caption's image
    assert texts[2:] == ["a blue toaster to the left of a red kettle", "a red kettle to the right of a blue toaster"]
    assert reduction == ("sum" if kind == "generative" else "mean")
    calls.clear()
    assert relation_contrast_reward(teacher, ["a red kettle"], torch.zeros(1, 1)).tolist() == [0.5] and not calls
    from clipcap.training_args import SCSTArguments

    with pytest.raises(ValueError, match="scst_matcher_reward=.contrast."):
        SCSTArguments(scst=True, scst_matcher_weight=1.0, scst_matcher_reward="contrast")


def test_the_stage_logs_its_reward_and_resumes_from_a_checkpoint(tmp_path, data_dir, stage_one, teacher_checkpoint):
    """4 steps, saved at step 2; a second run resumed from that checkpoint samples, rewards and trains what the
    uninterrupted one does (the Trainer's checkpoint holds the RNG states the sampling draws from)."""
    from safetensors.torch import load_file

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    flags = {"steps": 4, "save_steps": 2, "do_eval": "false", "scst_ce_weight": 0.5}
    assert run_train.main(scst_argv(data_dir, full, stage_one, teacher_checkpoint, **flags)) == 0
    resumed.mkdir()
    os.symlink(full / "checkpoint-2", resumed / "checkpoint-2", target_is_directory=True)
    assert run_train.main(scst_argv(data_dir, resumed, stage_one, teacher_checkpoint, **flags)) == 0

    def history(path):
        state = json.loads((path / "trainer_state.json").read_text())
        return {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}

    full_history, resumed_history = history(full), history(resumed)
    keys = {"loss_scst", "loss_ce", "scst_reward", "scst_reward_clip_s", "scst_baseline", "scst_advantage_std"}
    assert keys | {"scst_sample_length", "scst_unparseable"} <= set(full_history[1])
    for step in (3, 4):
        for key in keys:
            assert resumed_history[step][key] == pytest.approx(full_history[step][key], rel=1e-4, abs=1e-6), key
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    card = (full / "README.md").read_text()
    assert "self-critical (SCST)" in card and "3 samples per image" in card
    assert json.loads((full / "run_args.json").read_text())["scst"]["scst_ce_weight"] == 0.5


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_accelerate_launch_the_stage(tmp_path, data_dir, stage_one, teacher_checkpoint, processes):
    """`accelerate launch` of the stage with 1 and 2 (gloo, CPU) processes: each process samples and rewards its own
    images, DDP averages the gradients, and every process ends holding the saved model and captions alike."""
    from safetensors.torch import load_file

    out = tmp_path / "scst"
    argv = scst_argv(data_dir, out, stage_one, teacher_checkpoint, per_device_train_batch_size=2, eval_steps=2)
    launch = ["--config_file", str(ROOT / "accelerate_config.yaml"), "--num_processes", str(processes)]
    if processes > 1:
        launch += ["--multi_gpu"]
    result = accelerate_launch([*launch, str(ROOT / "tests" / "launch_run_train.py"), *argv], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert {"loss_scst", "scst_reward", "eval_semantic_accuracy", "eval_clip_s"} <= {
        k for e in state["log_history"] for k in e
    }
    assert json.loads((out / "run_args.json").read_text())["world_size"] == processes
    saved = load_file(str(out / "model.safetensors"))
    start = load_file(str(stage_one / "model.safetensors"))
    assert any(not torch.equal(saved[name], start[name]) for name in saved)  # the stage trained
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(processes)]
    for rank in range(processes):
        held = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert [name for name in saved if not torch.equal(saved[name], held[name])] == []
        assert ranks[rank]["captions"] == ranks[0]["captions"]
    assert "find_unused_parameters=True" not in result.stderr
