"""clipcap/matching.py: the image-text matcher's loss and negatives by hand, its sense of place, its round trip, and
train_clip_teacher.py --matcher_layers training one that the teacher loads and the compositional test scores."""

import json
import math

import pytest
import torch

from clipcap.matching import ImageTextMatcher, Matcher, MatcherConfig, draw_in_batch_negatives, matching_loss
from tests.helpers import PACKAGED, needs_packaged_weights


def test_matching_loss_weighs_the_true_pairs_as_much_as_all_the_false_ones():
    assert matching_loss(torch.zeros(2), torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(2))
    logits, labels = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    true = math.log(1 + math.exp(-2))
    false = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert matching_loss(logits, labels).item() == pytest.approx((true + false) / 2)


def test_in_batch_negatives_are_never_marked_columns_and_follow_the_similarity():
    similarity = torch.tensor([[9.0, 0.0, 8.0], [0.0, 9.0, -50.0], [1.0, 1.0, 1.0]])
    same = torch.eye(3, dtype=torch.bool)
    same[2] = True  # row 2: every column is the same caption
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_in_batch_negatives(similarity, same, generator) for _ in range(200)])
    assert set(draws[:, 0].tolist()) <= {1, 2} and (draws[:, 0] == 2).float().mean() > 0.95  # exp(8) vs exp(0)
    assert set(draws[:, 1].tolist()) == {0}  # exp(-50) is never drawn in 200
    assert draws[:, 2].tolist() == [-1] * 200


def test_the_matcher_sees_where_each_cell_is_and_round_trips(tmp_path):
    torch.manual_seed(0)
    matcher = ImageTextMatcher(MatcherConfig(image_channels=8, text_dim=6, width=16, layers=1, heads=2)).eval()
    grid, states = torch.randn(1, 8, 2, 2), torch.randn(1, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    logit = matcher(grid, states, mask)
    # Two cells swapped: the same bag of cells elsewhere, another logit (2-D positions); padding does not count.
    swapped = grid.flatten(2)[:, :, [1, 0, 2, 3]].view_as(grid)
    assert not torch.allclose(matcher(swapped, states, mask), logit)
    padded = states.clone()
    padded[:, 3:] = 100.0
    assert torch.allclose(matcher(grid, padded, mask), logit, atol=1e-6)
    matcher.save_pretrained(tmp_path)
    loaded = ImageTextMatcher.from_pretrained(tmp_path)
    assert loaded.config == matcher.config and torch.equal(loaded(grid, states, mask), logit)


def test_the_generative_score_is_the_mean_log_probability_of_the_caption_tokens_given_the_image(tmp_path):
    from clipcap.matching import CaptionLikelihoodScorer

    torch.manual_seed(0)
    config = MatcherConfig(
        8, 6, width=16, layers=1, heads=2, kind="generative", vocab_size=11, vocabulary=[1, 2, 5, 7]
    )
    matcher = CaptionLikelihoodScorer(config).eval()
    grid = torch.randn(2, 8, 2, 2)
    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 7, 5, 9, 2]])
    mask = (ids != 0).long()
    per_token = matcher.token_log_probs(grid, ids)
    assert per_token.shape == (2, 4) and (per_token < 0).all()
    # Token t's log-probability reads the tokens before it and the image, not the tokens after it.
    later = ids.clone()
    later[:, 3] = 4
    assert torch.allclose(matcher.token_log_probs(grid, later)[:, :2], per_token[:, :2], atol=1e-6)
    assert not torch.allclose(matcher.token_log_probs(grid.flip(-1), ids), per_token)
    by_hand = torch.stack([per_token[0, :3].mean(), per_token[1, :4].mean()])  # [CLS] is not predicted; padding not
    # Ids outside the vocabulary share one slot: 9 and 4 are the same token to it.
    other = ids.clone()
    other[1, 3] = 4
    assert torch.equal(matcher.token_log_probs(grid, other), per_token)
    assert torch.allclose(matcher(grid, torch.zeros(2, 5, 6), mask, ids), by_hand, atol=1e-6)
    matcher.save_pretrained(tmp_path)
    loaded = Matcher.from_pretrained(tmp_path)  # the kind its config names
    assert type(loaded) is CaptionLikelihoodScorer and torch.equal(
        loaded(grid, None, mask, ids), matcher(grid, None, mask, ids)
    )
    with pytest.raises(ValueError, match="vocabulary it predicts"):
        MatcherConfig(image_channels=8, text_dim=6, kind="generative", vocab_size=11)

    # score_captions: the mean, or with reduction="sum" log p(caption | image), the sum of the same token log-probs.
    from types import SimpleNamespace

    from clipcap.matching import score_captions

    text = SimpleNamespace(
        config=SimpleNamespace(pad_token_id=0),
        transformer=lambda input_ids, attention_mask: SimpleNamespace(
            last_hidden_state=torch.zeros(*input_ids.shape, 6)
        ),
        pooler=lambda out, mask: torch.zeros(len(mask), 6),
        proj=lambda pooled: pooled,
    )
    model, tokenize = SimpleNamespace(text=text), {"first": ids[0], "second": ids[1]}

    def tokenizer(texts):
        return torch.stack([tokenize[t] for t in texts])

    texts = ["first", "second"]
    assert torch.allclose(score_captions(model, tokenizer, matcher, grid, texts), by_hand, atol=1e-6)
    sums = torch.stack([per_token[0, :3].sum(), per_token[1, :4].sum()])
    assert torch.allclose(score_captions(model, tokenizer, matcher, grid, texts, reduction="sum"), sums, atol=1e-5)
    itm = ImageTextMatcher(MatcherConfig(8, 6, width=16, layers=1, heads=2))
    with pytest.raises(ValueError, match="for a generative matcher"):
        score_captions(model, tokenizer, itm, grid, texts, reduction="sum")


@needs_packaged_weights
def test_a_teacher_trained_with_a_matcher_saves_it_and_both_scorers_are_tested(matcher_teacher, capsys):
    """`--matcher_layers 1` on the LiT towers (the `matcher_teacher` fixture): the record has the matcher's
    compositional test beside the cosine's, the directory holds the matcher, `CLIPTeacher` loads it, its grids and
    embeddings from one pass equal open_clip's own, and `python -m clipcap.compositional` scores both scorers with the
    numbers teacher.json recorded."""
    from clipcap import compositional
    from clipcap.matching import encode_image_grid, encode_text_tokens
    from clipcap.teacher import CLIPTeacher

    out, data = matcher_teacher
    record = json.loads((out / "teacher.json").read_text())
    scored = record["validation"]["compositional_matcher"]
    assert set(scored) == set(record["validation"]["compositional"])
    assert record["matcher"] == {
        "image_channels": 1280,
        "text_dim": 384,
        "width": 256,
        "layers": 1,
        "heads": 4,
        "kind": "itm",
        "vocab_size": 0,
        "vocabulary": None,
        "grid_level": None,
    }
    # Evaluated after the towers' 2 steps (8 rows / 4: an epoch is 2 steps) and after the matcher's 2: the towers were
    # frozen, so everything but the matcher's scores is as it was.
    towers, matcher_stage = record["history"][-2:]
    assert (towers["step"], matcher_stage["step"]) == (2, 4)
    for key in ("image_to_text_R@1", "text_to_image_R@1", "compositional"):
        assert towers[key] == matcher_stage[key]

    teacher = CLIPTeacher.from_pretrained("ClipCap-LiT-S", str(out))
    assert teacher.matcher is not None and not teacher.matcher.training
    pixels = torch.randn(2, 3, 64, 64)
    grid, embeds = encode_image_grid(teacher.model, pixels)
    assert grid.shape == (2, 1280, 2, 2)
    assert torch.allclose(embeds, teacher.model.encode_image(pixels), atol=1e-5)
    ids = teacher.tokenizer(["a red toaster", "a blue kettle left of a red toaster"])
    states, mask, text_embeds = encode_text_tokens(teacher.model, ids)
    # [CLS] a red toast ##er [SEP] and [CLS] a blue kettle left of a red toast ##er [SEP]; the rest is padding
    assert mask.sum(1).tolist() == [6, 11] and states.shape[:2] == ids.shape
    assert torch.allclose(text_embeds, teacher.model.encode_text(ids), atol=1e-5)
    # An earlier, finer feature map (EfficientNet-Lite0's stride 16 at 64 px: 4x4), the same embedding with it.
    finer, same = encode_image_grid(teacher.model, pixels, 3)
    assert finer.shape == (2, teacher.model.visual.trunk.feature_info[3]["num_chs"], 4, 4)
    assert torch.allclose(same, embeds, atol=1e-5)
    logits = teacher.match_grids(grid, ["a red toaster", "a blue kettle left of a red toaster"])
    assert torch.allclose(logits, teacher.matcher(grid, states, mask), atol=1e-5)

    argv = ["--clip_model", "ClipCap-LiT-S", "--clip_pretrained", str(out), "--dataset_dir", str(data)]
    assert compositional.main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"cosine", "matcher"}
    for kind, accuracy in scored.items():
        if printed["matcher"][kind]["scenes"]:
            assert printed["matcher"][kind]["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert compositional.main(argv) == 0
    assert "| true caption above it (cosine) | matcher |" in capsys.readouterr().out


def test_a_matcher_needs_the_lit_towers(teacher_checkpoint):
    import open_clip

    model = open_clip.create_model("ClipCap-Test-Teacher", pretrained=None)
    with pytest.raises(ValueError, match="LiT architecture"):
        ImageTextMatcher.for_model(model, layers=1)


@needs_packaged_weights
@pytest.mark.parametrize("kind", ["itm", "generative"])
def test_a_matcher_trained_alone_on_a_saved_teacher_leaves_its_towers_as_they_were(matcher_teacher, tmp_path, kind):
    """`--init_teacher DIR --max_steps 0 --matcher_steps 2`: the new teacher's towers are DIR's, bit for bit, with a
    new matcher trained on them (evaluated before and after its 2 steps)."""
    from PIL import Image
    from safetensors.torch import load_file

    import train_clip_teacher
    from clipcap.teacher import CLIPTeacher

    teacher_dir, data = matcher_teacher
    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data), "--output_dir", str(out), "--model", "ClipCap-LiT-S"]
    argv += ["--image_tower_pretrained", PACKAGED, "--text_tower_pretrained", "all_minilm_l6_v2"]
    argv += ["--init_teacher", str(teacher_dir), "--max_steps", "0", "--batch_size", "4", "--warmup_steps", "1"]
    argv += ["--matcher_kind", kind, "--matcher_layers", "1"]
    if kind == "generative":  # and the finer, earlier feature map
        argv += ["--matcher_grid_level", "3"]
    argv += ["--matcher_steps", "2", "--hard_negatives", "swap_phrases", "--seed", "3"]
    assert train_clip_teacher.main(argv) == 0
    before = load_file(str(teacher_dir / "open_clip_model.safetensors"))
    after = load_file(str(out / "open_clip_model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    if kind == "itm":  # a new matcher of the fixture's kind, not the fixture's
        matchers = [load_file(str(d / "matcher.safetensors")) for d in (teacher_dir, out)]
        assert any(not torch.equal(matchers[0][k], matchers[1][k]) for k in matchers[0])
    teacher = CLIPTeacher.from_pretrained("ClipCap-LiT-S", str(out))
    assert teacher.matcher.config.kind == kind
    assert teacher.matcher.config.grid_level == (3 if kind == "generative" else None)
    scores = teacher.match_grids(teacher.image_grids([Image.new("RGB", (64, 64))] * 2), ["a red toaster", "a cup"])
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (kind == "itm" or (scores < 0).all())
    record = json.loads((out / "teacher.json").read_text())
    assert [entry["step"] for entry in record["history"]] == [0, 2]
    with pytest.raises(ValueError, match="max_steps 0 trains no tower"):
        train_clip_teacher.parse_args([*argv[:-6], "--overwrite_output_dir"])
