# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Self-critical sequence training (SCST): a second stage that rewards the captions the model itself generates.

For each image the model samples K captions with its own `generate`; each gets a reward (`clipcap.rewards`: CLIP-S
by the teacher, as Cho et al. 2022, "Fine-grained Image Captioning with CLIP Reward", optionally CIDEr-D against
the references, as Rennie et al. 2017, "Self-critical Sequence Training for Image Captioning", and the probability
the teacher's image-text matcher gives the caption, which sees relations), and a baseline: the
mean reward of the image's other K-1 samples (the leave-one-out baseline of Kool et al. 2019, "Buy 4 REINFORCE
Samples, Get a Baseline for Free!", used for captioning by Luo 2020, "A Better Variant of Self-Critical Sequence
Training") or the reward of its greedy caption (Rennie et al.). The loss is REINFORCE with that baseline,

    L_scst = -mean_i (r_i - b_i) * sum_t log p(w_t^i | w_<t^i, image)

plus, optionally, `scst_ce_weight` x the cross-entropy of a reference caption per image, a guard that keeps the
references' language while the reward pulls elsewhere (Cho et al. needed a grammar term: CLIP-S alone was gamed).

The step runs the model in eval mode (no dropout, BatchNorm with its running statistics) for both the sampling and
the log-probabilities, so the probabilities trained are those of the distribution that sampled (on-policy), and
every process keeps the first stage's BatchNorm statistics. Each process samples and rewards its own images; DDP
averages the gradients.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from clipcap.collator import TEACHER_INPUTS
from clipcap.data import CAPTION_COLUMN
from clipcap.metrics import mean_length, scenes_of
from clipcap.rewards import CiderDReward, clip_reward, matcher_reward, relation_contrast_reward
from clipcap.synthetic import is_parseable
from clipcap.trainer import CLIPGuidedTrainer
from clipcap.training_args import SCSTArguments

IMAGE_INPUTS = ("pixel_values", "image_features")


def leave_one_out_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """`(images, K)` rewards -> each sample's baseline: the mean reward of its image's other K-1 samples."""
    samples = rewards.shape[1]
    if samples < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per image")
    return (rewards.sum(dim=1, keepdim=True) - rewards) / (samples - 1)


def scst_loss(log_probs: torch.Tensor, rewards: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a baseline: `-mean_i (rewards_i - baselines_i) * log_probs_i`, where `log_probs_i` is the sum of
    sample i's token log-probabilities; rewards and baselines are constants (no gradient)."""
    advantages = (rewards - baselines).detach().to(log_probs.device, log_probs.dtype)
    return -(advantages * log_probs).mean()


def sampled_tokens_mask(sequences: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 for each generated token up to and including the first EOS (the decision to stop is part of the caption),
    0 for the padding `generate` adds after it."""
    is_eos = (sequences == eos_token_id).long()
    return ((is_eos.cumsum(dim=1) - is_eos) == 0).long()


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`log p(tokens[:, t])` from `logits[:, t]` (the model's alignment: `logits[:, t]` predicts token t)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def _pad_to(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, width - tensor.shape[1]), value=value)


class SCSTTrainer(CLIPGuidedTrainer):
    """`CLIPGuidedTrainer` whose training loss is self-critical (see the module docstring); evaluation is the first
    stage's (the references' cross-entropy and the caption metrics).

    Logged at every logging step: `loss_scst`, `loss_ce` (with the guard), `scst_reward` and its parts
    (`scst_reward_clip_s`, `scst_reward_cider`), `scst_baseline`, `scst_advantage_std` (the spread of r - b),
    `scst_sample_length` (words), and on the synthetic scenes `scst_unparseable` (the fraction of samples the
    checker cannot read whole: the first sign of reward hacking).

    Args:
        scst (`SCSTArguments`): samples, baseline and the weights of the reward and the guard.
        Everything else is `CLIPGuidedTrainer`'s; the teacher is needed when `scst_clip_weight > 0`, and its
        image-text matcher when `scst_matcher_weight > 0`.
    """

    training_stage = "self-critical training with a CLIP reward"

    def __init__(self, *args, scst: SCSTArguments, **kwargs):
        super().__init__(*args, **kwargs)
        self.scst = scst
        if scst.scst_clip_weight > 0 and self.teacher is None:
            raise ValueError("scst_clip_weight > 0 needs a CLIP teacher: set clip_model and clip_pretrained")
        if scst.scst_matcher_weight > 0 and getattr(self.teacher, "matcher", None) is None:
            raise ValueError(
                "scst_matcher_weight > 0 needs a teacher with an image-text matcher (train_clip_teacher.py "
                "--matcher_layers 2): set clip_model and clip_pretrained to one"
            )
        self.cider_reward = None
        if scst.scst_cider_weight > 0:
            if self.train_dataset is None:
                raise ValueError("the CIDEr-D reward needs the training split's references")
            self.cider_reward = CiderDReward(self.train_dataset[CAPTION_COLUMN])
        # The synthetic scenes' checker reads their captions' language: how many samples leave it is worth a log.
        self.check_parses = self.train_dataset is not None and scenes_of(self.train_dataset) is not None

    def _sampling_config(self, model, samples: int, sample: bool):
        config = copy.deepcopy(model.generation_config)
        config.update(
            do_sample=sample,
            num_beams=1,
            num_return_sequences=samples,
            temperature=self.scst.scst_temperature if sample else 1.0,
            top_k=self.scst.scst_top_k if sample else None,
            top_p=1.0,
            no_repeat_ngram_size=0,
            max_new_tokens=self.args.generation_max_new_tokens,
        )
        return config

    def rewards(
        self,
        captions: list[str],
        image_embeds: torch.Tensor | None,
        references: list | None,
        copies: int,
        grids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each caption's reward and its parts; caption j belongs to image j // copies, whose teacher embedding is
        `image_embeds[j // copies]` (None when the CLIP weight is 0: the teacher never runs) and whose grid, for the
        matcher, is `grids[j // copies]`."""
        scst, parts = self.scst, {}
        total = torch.zeros(len(captions))
        if scst.scst_clip_weight > 0:
            parts["clip_s"] = clip_reward(self.teacher, captions, image_embeds.repeat_interleave(copies, dim=0))
            total = total + scst.scst_clip_weight * parts["clip_s"]
        if scst.scst_matcher_weight > 0:
            reward = relation_contrast_reward if scst.scst_matcher_reward == "relation_contrast" else matcher_reward
            parts["matcher"] = reward(self.teacher, captions, grids.repeat_interleave(copies, dim=0))
            total = total + scst.scst_matcher_weight * parts["matcher"]
        if scst.scst_cider_weight > 0:
            parts["cider"] = self.cider_reward(captions, [refs for refs in references for _ in range(copies)])
            total = total + scst.scst_cider_weight * parts["cider"]
        return {"total": total, **parts}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: the first stage's loss (cross-entropy of the references)
            inputs = {key: value for key, value in inputs.items() if key != "references"}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not any(key in inputs for key in IMAGE_INPUTS):
            raise ValueError("the self-critical stage samples from images: the batch has no pixel_values")
        model.eval()  # on-policy: sample and score the distribution the model captions with (module docstring)
        try:
            loss, outputs = self._self_critical_loss(model, inputs)
        finally:
            model.train()
        return (loss, outputs) if return_outputs else loss

    def _self_critical_loss(self, model, inputs: dict):
        scst, unwrapped = self.scst, self.accelerator.unwrap_model(model)
        images = {key: inputs[key] for key in IMAGE_INPUTS if key in inputs}
        teacher_inputs = {key: inputs[key] for key in TEACHER_INPUTS if key in inputs}
        eos = unwrapped.config.text_config.eos_token_id
        samples_per_image = scst.scst_num_samples
        decode = self.processing_class.batch_decode

        # 1. Sample K captions per image (and the greedy caption for that baseline), and reward them.
        with torch.no_grad():
            sampled = unwrapped.generate(
                **images, generation_config=self._sampling_config(unwrapped, samples_per_image, True)
            )
        captions = decode(sampled)
        image_embeds = None
        if scst.scst_clip_weight > 0:
            with torch.no_grad():
                image_embeds = self._teacher_embeddings(teacher_inputs, "image")
        grids = None
        if scst.scst_matcher_weight > 0:
            grids = self.teacher.grids_of_pixel_values(teacher_inputs["teacher_pixel_values"])
        references = inputs.get("references")
        rewards = self.rewards(captions, image_embeds, references, samples_per_image, grids)
        if scst.scst_baseline == "greedy":
            with torch.no_grad():
                greedy = unwrapped.generate(**images, generation_config=self._sampling_config(unwrapped, 1, False))
            greedy_rewards = self.rewards(decode(greedy), image_embeds, references, 1, grids)["total"]
            baselines = greedy_rewards.repeat_interleave(samples_per_image)
        else:
            baselines = leave_one_out_baseline(rewards["total"].view(-1, samples_per_image)).flatten()

        # 2. Log-probabilities of the samples (and the guard's reference tokens) in one forward pass: each image's
        #    prefix is computed once and read by its K samples and, with the guard, its reference caption.
        sample_mask = sampled_tokens_mask(sampled, eos)
        guard = scst.scst_ce_weight > 0
        rows = samples_per_image + guard
        width = max(sampled.shape[1], inputs["input_ids"].shape[1] if guard else 0)
        ids = _pad_to(sampled, width, eos).view(-1, samples_per_image, width)
        mask = _pad_to(sample_mask, width, 0).view(-1, samples_per_image, width)
        if guard:
            ids = torch.cat([ids, _pad_to(inputs["input_ids"], width, eos)[:, None]], dim=1)
            mask = torch.cat([mask, _pad_to(inputs["attention_mask"], width, 0)[:, None]], dim=1)
        outputs = model(
            **images,
            input_ids=ids.flatten(0, 1),
            attention_mask=mask.flatten(0, 1),
            captions_per_image=rows,
            logits_to_keep=width + 1,  # the positions that predict the tokens, and the next token's
        )
        log_probs = (token_log_probs(outputs.logits[:, :-1], ids.flatten(0, 1)) * mask.flatten(0, 1)).view(
            -1, rows, width
        )
        sample_log_probs = log_probs[:, :samples_per_image].sum(dim=-1).flatten()
        terms = {"scst": scst_loss(sample_log_probs, rewards["total"], baselines)}
        if guard:
            labels = _pad_to(inputs["labels"], width, -100)
            targets = (labels != -100).float()
            terms["ce"] = -(log_probs[:, -1] * targets).sum() / targets.sum().clamp(min=1)
        self._check_finite(terms, True)
        loss = terms["scst"] + (scst.scst_ce_weight * terms["ce"] if guard else 0.0)

        # 3. What the step did.
        for name, value in terms.items():
            self.record("train", f"loss_{name}", value)
        advantages = rewards["total"] - baselines
        self.record("train", "scst_reward", rewards["total"].mean())
        for name in ("clip_s", "cider", "matcher"):
            if name in rewards:
                self.record("train", f"scst_reward_{name}", rewards[name].mean())
        self.record("train", "scst_baseline", baselines.mean())
        self.record("train", "scst_advantage_std", advantages.std(unbiased=False))
        self.record("train", "scst_sample_length", mean_length(captions))
        if self.check_parses:
            self.record("train", "scst_unparseable", sum(not is_parseable(c) for c in captions) / len(captions))
        return loss, outputs
