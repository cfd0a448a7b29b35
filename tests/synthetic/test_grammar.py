"""The captions' language: what a caption states, what lies outside the language, and every pattern derived from the
one definition of it (`GRAMMAR`)."""

import dataclasses
import re

import pytest

from clipcap import synthetic
from clipcap.synthetic import caption_errors, grammar, make_example, parse_caption


def test_parse_caption_normalises_relations_to_subject_relation_object():
    parsed = parse_caption("a yellow oven below two red kettles, which is to the right of a white fan")
    kettle, oven = synthetic.Mention(2, "red", "Kettle"), synthetic.Mention(1, "yellow", "Oven")
    assert parsed.mentions == [oven, kettle]  # "fan" alone is not a kind: "mechanical fan" is
    assert parsed.relations == [(kettle, "above", oven)]
    assert parsed.problems == ["dangling_relation"]


@pytest.mark.parametrize(
    ("caption", "problems"),
    [
        ("a photo of two red kettles, which is above a white oven", []),
        ("there are three blue coffeemakers", []),
        ("a red toaster above a blue kettle, and a green oven to the left of a blue kettle", []),
        ("a red kettle to the left of", ["dangling_relation"]),
        ("a red kettle kettle", ["unknown_object"]),
        ("a photo of", ["no_object"]),
        ("a photo of a red kettle!", ["ungrammatical"]),
        ("a shiny red kettle", ["unknown_object", "no_object"]),  # "red kettle" lacks its count word
        ("a red kettle to the very left of a blue oven", ["ungrammatical"]),  # "the very" belongs to no phrase
        ("a red kettle next a blue oven a blue oven", ["ungrammatical"]),  # reward hacking of one SCST run
        ("a red kettle a blue oven", ["ungrammatical"]),
    ],
)
def test_a_caption_outside_the_captions_grammar_is_a_parse_problem(caption, problems):
    assert parse_caption(caption).problems == problems
    assert synthetic.is_parseable(caption) == (problems == [])


@pytest.mark.parametrize("frame", ["an image of {}", "{} in a kitchen", "{}, seen from the door"])
def test_a_new_caption_frame_keeps_the_reference_captions_grammatical(monkeypatch, frame):
    extended = dataclasses.replace(grammar.GRAMMAR, frames=(*grammar.GRAMMAR.frames, frame))
    monkeypatch.setattr(grammar, "GRAMMAR", extended)
    examples = [make_example(0, "train", i) for i in range(100)]
    for scene, captions in examples:
        for caption in captions:
            assert caption_errors(caption, scene) == [], caption
    before, after = frame.split("{}")
    framed = [c for _, captions in examples for c in captions if c.startswith(before) and c.endswith(after)]
    assert len(framed) > 20  # the references speak the new frame ...
    scene, captions = next(example for example in examples if example[0].layout == "single")
    one, several = extended.one_unit_frames
    frames = (*extended.frames, several if scene.units[0].count > 1 else one)
    assert captions == [f.format(synthetic.noun_phrase(scene.units[0])) for f in frames]
    monkeypatch.undo()
    assert all(parse_caption(caption).problems == ["ungrammatical"] for caption in framed)  # ... new to the language


@pytest.mark.parametrize(
    ("field", "extension", "caption", "stated"),
    [
        ("colours", ("purple",), "a purple kettle above a red oven", "colour='purple'"),
        ("count_words", {"five": 5}, "five red kettles above a red oven", "count=5"),
        ("nouns", {"dishwasher": "Dishwasher"}, "a red dishwasher above a red oven", "kind='Dishwasher'"),
        ("relation_phrases", {"in front of": ("in_front_of", False)}, "a red kettle in front of a red oven", "front"),
    ],
)
def test_every_pattern_is_derived_from_the_grammar(monkeypatch, field, extension, caption, stated):
    words = getattr(grammar.GRAMMAR, field)
    words = {**words, **extension} if isinstance(words, dict) else (*words, *extension)
    monkeypatch.setattr(grammar, "GRAMMAR", dataclasses.replace(grammar.GRAMMAR, **{field: words}))
    parsed = parse_caption(caption)  # noun phrases, bare nouns, relation phrases and the sentence: all know the word
    assert parsed.problems == [] and len(parsed.mentions) == 2 and len(parsed.relations) == 1
    assert stated in repr(parsed)
    monkeypatch.undo()
    assert parse_caption(caption).problems != []


def test_the_noun_phrase_and_relation_patterns_are_written_once():
    named, plain = grammar.GRAMMAR.noun_phrase_pattern(named=True), grammar.GRAMMAR.noun_phrase_pattern(named=False)
    assert re.sub(r"\?P<\w+>", "?:", named) == plain
    assert named in grammar.GRAMMAR.noun_phrase.pattern and plain in grammar.GRAMMAR.sentence.pattern
    relation = grammar.GRAMMAR.relation_pattern
    assert relation in grammar.GRAMMAR.relation.pattern and relation in grammar.GRAMMAR.sentence.pattern
    assert set(synthetic.NUMBERS.values()) <= set(grammar.GRAMMAR.count_words)  # what the references say, it reads
