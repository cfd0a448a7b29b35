# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""A small BPE tokenizer for a decoder trained from scratch on one domain's captions.

GPT-2's tokenizer has 50,257 tokens; the synthetic scenes' captions use fewer than 60 of them, yet a from-scratch
decoder pays for all 50,257 in its output layer (about 40% of a training step on CPU) and has to learn to ignore the
rest. `train_domain_tokenizer` retrains GPT-2's byte-level BPE on the training captions with transformers'
`train_new_from_iterator` (the `tokenizers` library underneath), as the Hugging Face course does for a new language:
same pre-tokenisation and byte fallback (any text still encodes), `<|endoftext|>` as BOS, EOS and padding, a
vocabulary of `vocab_size` tokens. A pretrained decoder keeps its own tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from transformers import PreTrainedTokenizerFast

from processing_clipcap import gpt2_tokenizer

# Byte-level BPE starts from the 256 byte tokens plus <|endoftext|>; merges come on top.
MIN_VOCAB_SIZE = 257 + 1


def _texts(captions: Iterable[list[str]]) -> Iterator[list[str]]:
    for references in captions:
        yield list(references)


def train_domain_tokenizer(captions: Iterable[list[str]], vocab_size: int) -> PreTrainedTokenizerFast:
    """GPT-2's byte-level BPE retrained on `captions` (each row's list of references) to `vocab_size` tokens."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"domain_tokenizer_vocab_size={vocab_size} must be at least {MIN_VOCAB_SIZE} (256 bytes + EOS + a merge)"
        )
    base = gpt2_tokenizer()
    tokenizer = base.train_new_from_iterator(_texts(captions), vocab_size=vocab_size)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer
