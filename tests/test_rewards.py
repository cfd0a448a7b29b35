"""clipcap/rewards.py: the CIDEr-D reward of sampled captions is pycocoevalcap's, with the training corpus's document
frequencies."""

import pytest

from clipcap.rewards import CiderDReward, reward_tokens


def test_cider_d_reward_is_pycocoevalcaps_with_the_training_corpus_document_frequencies():
    from pycocoevalcap.cider.cider import Cider

    corpus = [
        ["a red kettle", "a photo of a red kettle"],
        ["two blue ovens above a white toaster", "a white toaster below two blue ovens"],
        ["a green mechanical fan"],
    ]
    captions = ["a red kettle", "two blue ovens", "A green kettle."]
    reward = CiderDReward(corpus)
    gts = {i: [reward_tokens(r) for r in refs] for i, refs in enumerate(corpus)}
    _, expected = Cider().compute_score(gts, {i: [reward_tokens(c)] for i, c in enumerate(captions)})
    assert reward(captions, corpus).tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    # One caption scored alone keeps the corpus's document frequencies (the batch's would make every n-gram rare).
    assert reward(captions[:1], corpus[:1]).item() == pytest.approx(expected[0], rel=1e-6)
    assert reward_tokens("A green kettle.") == "a green kettle"
