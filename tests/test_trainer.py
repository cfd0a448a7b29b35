"""clipcap/trainer.py (`CLIPGuidedTrainer`): a zero loss weight skips its term and the teacher, the total loss is
the weighted sum of the logged terms, a non-finite loss term stops training before it touches the weights (a promise
of docs/reliability.md), and `push_to_hub` keeps the model card run_train.py wrote."""

import datasets
import pytest
import torch
from safetensors.torch import load_file

import run_train
from clipcap.checkpoints import checkpoint_problem
from clipcap.cli import build_model_config
from tests.conftest import TINY_TEACHER, train_argv
from tests.helpers import CountingTeacher


def make_trainer(tmp_path, data_dir, teacher, **guidance):
    """A tiny CLIP-guided trainer and one collated batch of 4 training rows."""
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
        seed=0,
        hard_negatives=guidance.hard_negative_kinds,
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


def test_l_con_takes_the_teachers_embeddings_of_the_hard_negatives(tmp_path, data_dir, teacher_checkpoint):
    """NegCLIP on the student: L_con equals `contrastive_loss` with the teacher's embeddings of the batch's hard
    negatives in z's softmax over captions, and is larger than without them."""
    from clipcap.losses import contrastive_loss
    from clipcap.teacher import CLIPTeacher

    teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint))
    trainer, batch = make_trainer(
        tmp_path, data_dir, teacher, lambda_con=1.0, con_hard_negatives="swap_colours,swap_phrases,change_count"
    )
    assert len(batch["hard_negative_owners"]) == 4  # each of the 4 captions has a count to change
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
        z = trainer.model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"]).z
        captions = teacher.embed_input_ids(batch["teacher_input_ids"])
        negatives = teacher.embed_input_ids(batch["teacher_negative_input_ids"])
    scale = trainer.guidance.contrastive_logit_scale
    expected = contrastive_loss(z, captions, scale, batch["caption_ids"], negatives=negatives)
    assert float(trainer._term_sums["eval"]["loss_con"]) == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > contrastive_loss(z, captions, scale, batch["caption_ids"]).item()


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


def test_push_to_hub_keeps_the_model_card_run_train_wrote(tmp_path, data_dir):
    trainer, _ = make_trainer(tmp_path, data_dir, None)
    card = tmp_path / "out" / "README.md"
    trainer.create_model_card(model_name="x")  # no card yet: the Trainer's own
    assert "generated automatically according to the information the Trainer had access to" in card.read_text()
    card.write_text("# ClipCap captioner (CLIP-guided)\n")
    trainer.create_model_card(model_name="x")  # what push_to_hub calls before uploading
    assert card.read_text() == "# ClipCap captioner (CLIP-guided)\n"
