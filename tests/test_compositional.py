"""The compositional test on hand-made embeddings: exact fractions, a bag of words at zero on the swaps (ties are
wrong), a model that tells every caption apart at one, and the pairs it is scored on."""

import torch

from clipcap.compositional import compositional_pairs, compositional_scores, compositional_test, format_table
from clipcap.synthetic import COLOURS, KINDS, RELATION_PHRASES, caption_errors
from tests.synthetic.scenes import COLUMN, ROW

SCENES = [ROW.to_json(), COLUMN.to_json()]
REFERENCES = [
    ["a red toaster next to two blue kettles", "a red toaster to the left of two blue kettles"],
    ["a white microwave oven above a black refrigerator"],
]


def test_scores_by_hand():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    true = torch.tensor([[0.9, 0.1], [0.6, 0.8], [0.0, 1.0]])
    negative = torch.tensor([[0.1, 0.9], [0.8, 0.6], [0.0, 1.0]])
    rows = torch.tensor([0, 1, 1])
    # row 0: 0.9 > 0.1 right; row 1: 0.8 > 0.6 right; the tie 1.0 = 1.0 counts as wrong.
    assert compositional_scores(images, true, negative, rows) == {"accuracy": 2 / 3, "scenes": 3}


def test_pairs_take_the_first_reference_with_a_false_negative():
    pairs = compositional_pairs(SCENES, REFERENCES)
    # "next to" swapped is still true, so the row scene's relation pair comes from its second reference.
    assert pairs["swap_phrases"] == [
        (0, "a red toaster to the left of two blue kettles", "two blue kettles to the left of a red toaster"),
        (1, REFERENCES[1][0], "a black refrigerator above a white microwave oven"),
    ]
    assert [row for row, _, _ in pairs["swap_colours"]] == [0, 1]
    for kind, found in pairs.items():
        for row, true, negative in found:
            scene = [ROW, COLUMN][row]
            assert caption_errors(true, scene) == [] and caption_errors(negative, scene), (kind, negative)


VOCABULARY = sorted(
    {"two", "three", "a", *COLOURS, *(w for noun, plural, _ in KINDS.values() for w in f"{noun} {plural}".split())}
    | {w for phrase in RELATION_PHRASES for w in phrase.split()}
)


def _bag_of_words(texts):
    vocabulary = VOCABULARY
    vectors = torch.zeros(len(texts), len(vocabulary))
    for i, text in enumerate(texts):
        for word in text.split():
            vectors[i, vocabulary.index(word)] += 1
    return torch.nn.functional.normalize(vectors, dim=-1)


def test_a_bag_of_words_is_at_zero_on_the_swaps_and_an_exact_model_at_one():
    pairs = compositional_pairs(SCENES, REFERENCES)
    texts = sorted(
        {t for found in pairs.values() for _, a, b in found for t in (a, b)} | {t for refs in REFERENCES for t in refs}
    )

    def bag(batch):
        return _bag_of_words(batch)

    # Images embedded as the words of their references: a negative with the same words ties, and a tie is wrong.
    images = torch.nn.functional.normalize(torch.stack([bag(refs).sum(0) for refs in REFERENCES]), dim=-1)
    results = compositional_test(images, bag, SCENES, REFERENCES)
    assert results["swap_colours"] == {"accuracy": 0.0, "scenes": 2}
    assert results["swap_phrases"] == {"accuracy": 0.0, "scenes": 2}

    # A model that tells every caption apart and puts each image on its references.
    def exact(batch):
        return torch.nn.functional.one_hot(torch.tensor([texts.index(t) for t in batch]), len(texts)).float()

    images = torch.nn.functional.normalize(torch.stack([exact(refs).sum(0) for refs in REFERENCES]), dim=-1)
    results = compositional_test(images, exact, SCENES, REFERENCES)
    assert all(score["accuracy"] == 1.0 for score in results.values()), results
    assert results["other_kind"]["scenes"] == 2 and results["converse_relation"]["scenes"] == 2
    table = format_table(results, {"image_to_text_R@1": 0.5})
    assert "| colours of two objects swapped | 2 | 1.000 |" in table and "image_to_text_R@1 0.500" in table
