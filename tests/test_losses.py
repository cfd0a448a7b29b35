"""clipcap/losses.py: the CLIP-guided loss terms against values computed by hand on small tensors, and the
contrastive loss over features gathered from two processes equal to the whole batch's."""

import math

import pytest
import torch

from clipcap.losses import (
    contrastive_loss,
    cosine_alignment_loss,
    cross_image_similarity_loss,
    hard_negative_pair_loss,
    positive_mask,
    repetition_unlikelihood_loss,
)


def test_cosine_alignment_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    # cos = 1/sqrt(2) and -1: mean(1 - cos) = ((1 - 0.70711) + 2) / 2
    assert cosine_alignment_loss(z, v).item() == pytest.approx((1 - 1 / math.sqrt(2) + 2) / 2, abs=1e-6)
    assert cosine_alignment_loss(v, v).item() == pytest.approx(0.0, abs=1e-6)


def test_contrastive_two_pairs_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = 2.0
    # logits = 2 * [[1, 0.6], [0, 0.8]]
    # image->text: row 0 -log(e^2 / (e^2 + e^1.2)), row 1 -log(e^1.6 / (e^0 + e^1.6))
    # text->image (columns): col 0 -log(e^2 / (e^2 + e^0)), col 1 -log(e^1.6 / (e^1.2 + e^1.6))
    i2t = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) - math.log(math.exp(1.6) / (1 + math.exp(1.6)))) / 2
    t2i = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))) / 2
    expected = (i2t + t2i) / 2
    assert contrastive_loss(z, t, scale).item() == pytest.approx(expected, abs=1e-6)
    # Distinct captions: the multi-positive form is the same loss.
    assert contrastive_loss(z, t, scale, torch.tensor([5, 9])).item() == pytest.approx(expected, abs=1e-6)


def test_contrastive_identical_captions_are_not_negatives():
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 have the same caption
    ids = torch.tensor([7, 7, 3])
    logits = (z @ t.T).tolist()  # scale 1

    def softmax_loss(row, positive, excluded):
        log_norm = math.log(sum(math.exp(x) for j, x in enumerate(row) if j not in excluded))
        return -(row[positive] - log_norm)

    # Row/column i leaves out the other row with its caption: 0 leaves out 1, 1 leaves out 0, 2 leaves out nothing.
    excluded = [{1}, {0}, set()]
    i2t = sum(softmax_loss(logits[i], i, excluded[i]) for i in range(3)) / 3
    columns = [[logits[i][j] for i in range(3)] for j in range(3)]
    t2i = sum(softmax_loss(columns[j], j, excluded[j]) for j in range(3)) / 3
    assert contrastive_loss(z, t, 1.0, ids).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    assert positive_mask(ids).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    # Plain InfoNCE counts the duplicate as a negative: a larger loss, bounded below by log 2 for rows 0 and 1.
    assert contrastive_loss(z, t, 1.0).item() > contrastive_loss(z, t, 1.0, ids).item() + 0.3
    perfect = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert contrastive_loss(perfect, t, 100.0, ids).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive_loss(perfect, t, 100.0).item() == pytest.approx(2 / 3 * math.log(2), abs=1e-4)


def test_hard_negatives_join_only_the_image_to_text_softmax_by_hand():
    """NegCLIP: a negative caption is one more column of every image's softmax, and no row of text->image."""
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    negatives = torch.tensor([[0.8, 0.6]])
    scale = 2.0
    # Extra logits 2 * z @ n = [1.6, 1.2]: row 0 -log(e^2 / (e^2 + e^1.2 + e^1.6)), row 1 -log(e^1.6 / (1 + e^1.6 + e^1.2))
    i2t = (
        -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2) + math.exp(1.6)))
        - math.log(math.exp(1.6) / (1 + math.exp(1.6) + math.exp(1.2)))
    ) / 2
    t2i = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))) / 2
    assert contrastive_loss(z, t, scale, negatives=negatives).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    assert contrastive_loss(z, t, scale, negatives=negatives[:0]).item() == pytest.approx(
        contrastive_loss(z, t, scale).item(), abs=1e-7
    )


def test_contrastive_loss_is_open_clips_without_ids_or_negatives():
    import open_clip

    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(14.3)
    assert contrastive_loss(z, t, scale).item() == pytest.approx(open_clip.ClipLoss()(z, t, scale).item(), abs=1e-6)


def test_hard_negative_pair_loss_by_hand():
    """Each negative against its own row's true caption alone: softplus(s * (cos(z, n) - cos(z, t)))."""
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    negatives = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])
    owners = torch.tensor([0, 0, 1])
    # row 0: true 1, negatives 0.8 and 1.0; row 1: true 0.8, negative 1.0
    expected = [math.log1p(math.exp(3 * (0.8 - 1))), math.log1p(math.exp(0)), math.log1p(math.exp(3 * (1 - 0.8)))]
    loss = hard_negative_pair_loss(z, t, negatives, owners, 3.0)
    assert loss.item() == pytest.approx(sum(expected) / 3, abs=1e-6)
    assert hard_negative_pair_loss(z, t, negatives[:0], owners[:0], 3.0).item() == 0.0


def test_repetition_unlikelihood_by_hand():
    vocab = 4
    labels = torch.tensor([[1, 2, 1, 3, -100]])
    logits = torch.zeros(1, 5, vocab)  # uniform: every p = 1/4
    logits[0, 3, 1] = math.log(3.0)  # position 3: p(1) = 3/6, others 1/6
    # Candidates: t=0: {}; t=1: {1}; t=2: {2} (1 is the target there); t=3: {1, 2}; t=4 is padding.
    expected = (-math.log(1 - 0.25) - math.log(1 - 0.25) - math.log(1 - 0.5) - math.log(1 - 1 / 6)) / 4
    assert repetition_unlikelihood_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_repetition_counts_each_earlier_token_once():
    labels = torch.tensor([[2, 2, 3]])
    logits = torch.zeros(1, 3, 4)
    # t=1: target 2 itself -> no candidate; t=2: {2} once although it occurs twice before.
    assert repetition_unlikelihood_loss(logits, labels).item() == pytest.approx(-math.log(0.75) / 3, abs=1e-6)


def test_cross_image_similarity_by_hand():
    labels = torch.tensor([[0, 1], [2, -100], [0, 1]])
    big = 50.0  # near one-hot distributions
    logits = torch.full((3, 2, 3), -big)
    logits[0, 0, 0] = logits[0, 1, 1] = big  # image 0 mean distribution ~ (0.5, 0.5, 0)
    logits[1, 0, 0] = big  # image 1 ~ (1, 0, 0)   (its second position is padding)
    logits[2, 0, 0] = logits[2, 1, 1] = big  # image 2 ~ (0.5, 0.5, 0)
    # Pairs with different captions (ids 1 != 2): (0, 1), (1, 2) and the reverse: cos = 1/sqrt(2) each;
    # the pair (0, 2) has identical captions and is left out.
    ids = torch.tensor([1, 2, 1])
    assert cross_image_similarity_loss(logits, labels, ids).item() == pytest.approx(1 / math.sqrt(2), abs=1e-5)
    # Without caption ids every off-diagonal pair counts: (4 * 0.7071 + 2 * 1) / 6.
    expected = (4 / math.sqrt(2) + 2) / 6
    assert cross_image_similarity_loss(logits, labels).item() == pytest.approx(expected, abs=1e-5)


def test_losses_have_gradients_for_the_student():
    z = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    logits = torch.randn(4, 5, 11, requires_grad=True)
    labels = torch.randint(0, 11, (4, 5))
    total = (
        cosine_alignment_loss(z, t)
        + contrastive_loss(z, t, 10.0, torch.tensor([1, 2, 1, 3]))
        + repetition_unlikelihood_loss(logits, labels)
        + cross_image_similarity_loss(logits, labels)
    )
    total.backward()
    assert z.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0


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
