"""Hard negative captions: each kind's exact edit on hand-made captions, the same words where the kind promises it,
false by the checker (or by the labels), and true edits dropped."""

import random

import pytest

from clipcap.hard_negatives import (
    BINDING_KINDS,
    CONVERSE_PHRASES,
    NEGATIVE_KINDS,
    candidates,
    hard_negatives,
    label_judge,
    scene_judge,
)
from clipcap.synthetic import RELATION_PHRASES, caption_errors
from tests.synthetic.scenes import COLUMN, ROW

TRUE_ROW = "a photo of a red toaster to the left of two blue kettles"


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("swap_colours", ["a photo of a blue toaster to the left of two red kettles"]),
        ("swap_kinds", ["a photo of a red kettle to the left of two blue toasters"]),
        ("swap_phrases", ["a photo of two blue kettles to the left of a red toaster"]),
        ("converse_relation", ["a photo of a red toaster to the right of two blue kettles"]),
        (
            "change_count",
            [
                "a photo of two red toasters to the left of two blue kettles",
                "a photo of three red toasters to the left of two blue kettles",
                "a photo of a red toaster to the left of a blue kettle",
                "a photo of a red toaster to the left of three blue kettles",
            ],
        ),
    ],
)
def test_each_kind_makes_the_exact_edit_and_the_checker_finds_it_false(kind, expected):
    assert candidates(TRUE_ROW, kind) == expected
    assert caption_errors(TRUE_ROW, ROW) == []
    for negative in expected:
        errors = caption_errors(negative, ROW)
        assert errors and set(errors) <= {"wrong_colour", "wrong_kind", "wrong_count", "wrong_relation"}, errors
    assert hard_negatives(TRUE_ROW, scene_judge(ROW), [kind], per_kind=None) == {kind: expected}


@pytest.mark.parametrize("kind", ["swap_colours", "swap_phrases"])
def test_swaps_keep_exactly_the_same_words(kind):
    """What a bag of words cannot tell apart: the same multiset of words, another meaning."""
    for negative in candidates(TRUE_ROW, kind):
        assert sorted(negative.split()) == sorted(TRUE_ROW.split())


def test_kind_swaps_keep_each_phrase_number():
    """The nouns move, and each takes its new phrase's number: "two blue kettles" -> "two blue toasters"."""
    assert candidates("a red toaster next to two blue kettles", "swap_kinds") == [
        "a red kettle next to two blue toasters"
    ]


def test_other_colour_and_other_kind_name_only_what_the_caption_does_not():
    out = candidates("a white microwave oven above a black refrigerator", "other_colour")
    assert len(out) == 2 * 4  # each of two phrases x the four colours not named
    assert "a red microwave oven above a black refrigerator" in out
    assert not any("white microwave oven above a white" in c or "black microwave" in c for c in out)
    kinds = candidates("a white microwave oven above a black refrigerator", "other_kind")
    assert len(kinds) == 2 * 6 and "a white toaster above a black refrigerator" in kinds


def test_a_true_edit_is_not_a_negative():
    """ "next to" is symmetric: swapping its two sides is still true, so the judge drops it."""
    caption = "a red toaster next to two blue kettles"
    assert candidates(caption, "swap_phrases") == ["two blue kettles next to a red toaster"]
    assert caption_errors("two blue kettles next to a red toaster", ROW) == []
    assert hard_negatives(caption, scene_judge(ROW), ["swap_phrases"]) == {}
    assert candidates(caption, "converse_relation") == []  # "next to" has no converse


def test_an_ungrammatical_edit_is_not_a_negative():
    judge = scene_judge(ROW)
    assert not judge("a red toaster toaster to the left of two blue kettles")  # false, but not a caption
    assert judge("a blue toaster to the left of two red kettles")
    assert not judge(TRUE_ROW)


def test_converse_phrases_name_the_converse_relation():
    assert CONVERSE_PHRASES["above"] == "below" and CONVERSE_PHRASES["to the left of"] == "to the right of"
    for phrase, converse in CONVERSE_PHRASES.items():
        relation, swapped = RELATION_PHRASES[phrase]
        assert RELATION_PHRASES[converse] == (relation, not swapped)
    assert "next to" not in CONVERSE_PHRASES and "beside" not in CONVERSE_PHRASES


def test_converse_relation_on_a_column():
    caption = "a white microwave oven above a black refrigerator"
    assert hard_negatives(caption, scene_judge(COLUMN), ["converse_relation"]) == {
        "converse_relation": ["a white microwave oven below a black refrigerator"]
    }


def test_a_caption_with_one_object_has_no_binding_negatives():
    assert hard_negatives("a photo of three black ovens", lambda caption: True, BINDING_KINDS) == {}
    assert candidates("a photo of three black ovens", "change_count") == [
        "a photo of a black oven",
        "a photo of two black ovens",
    ]


def test_labels_judge_counts_and_kinds():
    """For captions made from Open Images labels: a kind with no label, or a count the labels contradict."""
    judge = label_judge(["Refrigerator", "Refrigerator", "Toaster"])
    assert not judge("a photo of two refrigerators and a toaster")
    assert judge("a photo of a refrigerator and a toaster")  # count
    assert judge("a photo of two refrigerators and a kettle")  # kind
    assert not judge("a photo of the refrigerators")  # "the": no count stated
    found = hard_negatives("two refrigerators and a toaster", judge, ["change_count"], per_kind=None)
    assert found == {
        "change_count": [
            "a refrigerator and a toaster",
            "three refrigerators and a toaster",
            "two refrigerators and two toasters",
            "two refrigerators and three toasters",
        ]
    }


def test_per_kind_and_rng_draw_among_the_negatives():
    caption = "a red toaster to the left of two blue kettles"
    every = hard_negatives(caption, scene_judge(ROW), ["change_count"], per_kind=None)["change_count"]
    drawn = {
        hard_negatives(caption, scene_judge(ROW), ["change_count"], rng=random.Random(s))["change_count"][0]
        for s in range(40)
    }
    assert drawn == set(every)


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown hard negative kind 'shuffle'"):
        candidates(TRUE_ROW, "shuffle")
    assert set(BINDING_KINDS) < set(NEGATIVE_KINDS)
