"""train_clip_teacher.py: it trains a tiny open_clip teacher and saves a checkpoint that open_clip and
`CLIPTeacher` load, identified by its checksum, and does not overwrite it unless asked to."""

import dataclasses
import json

import pytest
import torch


def test_train_clip_teacher_saves_a_checkpoint_open_clip_loads(tmp_path, data_dir, teacher_checkpoint):
    import open_clip

    import train_clip_teacher

    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data_dir), "--output_dir", str(out), "--model", "ClipCap-Test-Teacher"]
    argv += ["--num_train_epochs", "2", "--batch_size", "4", "--warmup_steps", "1"]
    assert train_clip_teacher.main(argv) == 0
    record = json.loads((out / "teacher.json").read_text())
    assert record["arch"] == "ClipCap-Test-Teacher" and len(record["history"]) == 2
    from clipcap.precision import native_bf16

    assert record["precision"] == ("bf16" if native_bf16("cpu")[0] else "fp32")  # precision auto
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


def test_a_teacher_trained_with_hard_negatives_records_them_and_its_compositional_test(
    tmp_path, data_dir, teacher_checkpoint, capsys
):
    """NegCLIP's loss with caption hard negatives and counterfactual image pairs: the batches held them (counted in
    teacher.json), every evaluation has the compositional test of each kind, and the teacher loads and is scored by
    `python -m clipcap.compositional`."""
    from clipcap import compositional
    from clipcap.hard_negatives import NEGATIVE_KINDS

    import train_clip_teacher

    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data_dir), "--output_dir", str(out), "--model", "ClipCap-Test-Teacher"]
    argv += ["--max_steps", "4", "--batch_size", "6", "--warmup_steps", "1", "--eval_steps", "2"]
    argv += ["--hard_negatives", "swap_colours,swap_kinds,swap_phrases,change_count"]
    argv += ["--hard_negatives_per_caption", "2", "--hard_negative_weight", "0.5", "--counterfactual_images", "0.5"]
    assert train_clip_teacher.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| colours of two objects swapped |" in printed
    record = json.loads((out / "teacher.json").read_text())
    made = record["hard_negatives"]["made"]
    # 4 steps of 6 images (12 per epoch), each with 3 counterfactuals, its scenes tried in turn until 3 are made.
    made_kinds = {
        k: v for k, v in made.items() if k.startswith("counterfactual_") and k[15:] not in ("tried", "short")
    }
    assert sum(made_kinds.values()) + made.get("counterfactual_short", 0) == 4 * 3
    assert 4 * 3 <= made["counterfactual_tried"] <= 4 * 6
    assert {k for k in made if k.startswith("negative_")} <= {
        "negative_swap_colours",
        "negative_swap_kinds",
        "negative_swap_phrases",
        "negative_change_count",
    }
    assert sum(v for k, v in made.items() if k.startswith("negative_")) > 4 * 6  # about two per caption
    assert record["hard_negatives"]["kinds"] == ["swap_colours", "swap_kinds", "swap_phrases", "change_count"]
    # Evaluations at steps 2 and 4 (the end): each with every kind scored on the 4 validation scenes.
    assert [entry["step"] for entry in record["history"]] == [2, 4]
    for entry in record["history"]:
        assert set(entry["compositional"]) == set(NEGATIVE_KINDS)
        assert entry["compositional_scenes"]["change_count"] == 4
        for kind, accuracy in entry["compositional"].items():
            scenes = entry["compositional_scenes"][kind]
            assert accuracy * scenes == pytest.approx(round(accuracy * scenes), abs=1e-3)
    assert (
        compositional.main(
            [
                "--clip_model",
                "ClipCap-Test-Teacher",
                "--clip_pretrained",
                str(out),
                "--dataset_dir",
                str(data_dir),
                "--json",
            ]
        )
        == 0
    )
    scored = json.loads(capsys.readouterr().out)
    assert {kind: round(score["accuracy"], 4) for kind, score in scored.items()} == record["validation"][
        "compositional"
    ]


def test_hard_negative_arguments_are_checked():
    import train_clip_teacher

    with pytest.raises(ValueError, match="unknown hard_negatives \\['swap'\\]"):
        train_clip_teacher.TeacherTrainingArguments(hard_negatives="swap")
    with pytest.raises(ValueError, match="unknown counterfactual_kinds"):
        train_clip_teacher.TeacherTrainingArguments(counterfactual_kinds="rotate")
    with pytest.raises(ValueError, match="hard_negative_weight needs hard_negatives"):
        train_clip_teacher.TeacherTrainingArguments(hard_negative_weight=1.0)


def test_gradient_checkpointing_trains_the_same_teacher(tmp_path, data_dir, teacher_checkpoint):
    """Recomputing both towers' activations in the backward pass gives the same gradients: after 3 steps the
    weights are the plain run's (the BatchNorm running statistics aside, which the recomputed forward updates
    again)."""
    from safetensors.torch import load_file

    import train_clip_teacher

    with pytest.raises(ValueError, match="gradient_checkpointing must be none, image, text or both, not 'all'"):
        train_clip_teacher.TeacherTrainingArguments(gradient_checkpointing="all")
    weights = {}
    for mode in ("none", "both"):
        out = tmp_path / mode
        argv = ["--dataset_dir", str(data_dir), "--output_dir", str(out), "--model", "ClipCap-Test-Teacher"]
        argv += ["--max_steps", "3", "--batch_size", "4", "--warmup_steps", "1", "--gradient_checkpointing", mode]
        assert train_clip_teacher.main(argv) == 0
        weights[mode] = load_file(str(out / "open_clip_model.safetensors"))
    learned = [k for k in weights["none"] if "running_" not in k and "num_batches_tracked" not in k]
    assert len(learned) > 10
    for key in learned:
        torch.testing.assert_close(weights["both"][key], weights["none"][key], atol=1e-5, rtol=1e-4)


def test_every_batch_holds_its_fraction_of_counterfactuals(data_dir):
    """`counterfactual_images 1/3` on batches of 6: the scenes are tried in turn until 2 counterfactuals are made, so
    each batch has 8 images (one image-tower shape), each twin after its original; with 5 of 6 (more than the batches
    hold), the shortfall is counted."""
    import train_clip_teacher

    args = train_clip_teacher.TeacherTrainingArguments(
        dataset_dir=str(data_dir), counterfactual_images=1 / 3, batch_size=6
    )
    train, _ = train_clip_teacher.load_data(args)
    make_batch = train_clip_teacher.BatchMaker(train, args)
    for start in (0, 6, 3):
        images, captions, _, _, twins = make_batch(list(range(start, start + 6)))
        assert len(images) == len(captions) == 8
        assert [j for _, j in twins] == [6, 7] and all(i < 6 for i, _ in twins)
    assert make_batch.counts["counterfactual_short"] == 0
    assert 6 <= make_batch.counts["counterfactual_tried"] <= 18
    make_batch = train_clip_teacher.BatchMaker(train, dataclasses.replace(args, counterfactual_images=5 / 6))
    images, _, _, _, twins = make_batch(list(range(6)))
    assert make_batch.counts["counterfactual_tried"] == 6
    assert len(images) == 6 + len(twins) == 6 + 5 - make_batch.counts["counterfactual_short"]
    assert make_batch.counts["counterfactual_short"] > 0


def test_the_towers_under_bf16_autocast_give_the_fp32_loss_to_bf16_precision(data_dir):
    """`precision bf16`: the towers' forward passes under bfloat16 autocast, the similarities and the losses in
    fp32; the same batch's loss differs from the fp32 one by bf16's rounding only, and the gradients reach the fp32
    weights."""
    import train_clip_teacher
    from clipcap.lit_teacher import create_teacher_model
    from clipcap.teacher import register_model_configs

    args = train_clip_teacher.TeacherTrainingArguments(
        dataset_dir=str(data_dir), model="ClipCap-Test-Teacher", batch_size=6, hard_negatives="swap_colours"
    )
    train, _ = train_clip_teacher.load_data(args)
    batch = train_clip_teacher.BatchMaker(train, args)(list(range(6)))
    register_model_configs()
    torch.manual_seed(0)
    model, preprocess, tokenizer, _ = create_teacher_model(args.model, None, None, "cpu")
    model.eval()  # no dropout: the two passes differ by their precision alone
    device = torch.device("cpu")
    losses = {}
    for bf16 in (False, True):
        loss, terms = train_clip_teacher.batch_loss(model, tokenizer, preprocess, batch, args, device, bf16=bf16)
        assert loss.dtype == torch.float32 and set(terms) == {"contrastive"}
        losses[bf16] = loss
    assert losses[True].item() != losses[False].item()
    assert losses[True].item() == pytest.approx(losses[False].item(), rel=2e-2)
    losses[True].backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(gradients) > 10 and all(g.dtype == torch.float32 and g.isfinite().all() for g in gradients)
