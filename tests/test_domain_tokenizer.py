"""clipcap/domain_tokenizer.py: a small BPE tokenizer trained on the captions round-trips every caption, in fewer
tokens than GPT-2's, and still encodes text outside the domain."""

import pytest

from tests.conftest import tiny_dataset


def test_domain_tokenizer_round_trips_every_caption_in_few_tokens():
    from clipcap.domain_tokenizer import train_domain_tokenizer
    from processing_clipcap import gpt2_tokenizer

    captions = tiny_dataset(num_train=40, num_validation=0)["train"]["captions"]
    tokenizer = train_domain_tokenizer(captions, vocab_size=500)
    # 40 scenes' captions run out of merges before 500 tokens: every word has become one token.
    assert 258 < len(tokenizer) < 500 and tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    texts = [text for references in captions for text in references]
    for text in texts:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
        words = text.replace(",", " ,").split()
        assert len(tokenizer(text)["input_ids"]) == len(words)
    gpt2 = gpt2_tokenizer()
    domain_tokens = sum(len(tokenizer(text)["input_ids"]) for text in texts)
    gpt2_tokens = sum(len(gpt2(text)["input_ids"]) for text in texts)
    assert domain_tokens < gpt2_tokens  # every caption word is one token: "refrigerator" is 3 of GPT-2's
    # Byte fallback: text outside the domain still encodes and decodes.
    assert tokenizer.decode(tokenizer("Zebra 42!")["input_ids"]) == "Zebra 42!"
    with pytest.raises(ValueError, match="at least 258"):
        train_domain_tokenizer(captions, vocab_size=100)
