"""Stands in for transformers' `tests/generation/test_utils.py`, which its sdist does not ship.

`ModelTesterMixin.test_generation_tester_mixin_inheritance` asks every model that can `generate` for a tester that
inherits `GenerationTesterMixin`; this one is ours, written for a captioner whose `generate` takes images. It checks
what transformers' mixin checks, on the model tester's inputs (`pixel_values`, a caption start in `input_ids`):
greedy, sampling, beam search and beam sampling with dict outputs (scores, logits, attentions and hidden states per
step, beam indices), the cache returned and continued, `inputs_embeds` in place of `input_ids`, left padding, a
batch against its rows one by one, `logits_to_keep`, and a clear error for assisted decoding.

The model tester provides `prepare_config_and_inputs_for_common()` and `prefix_length`; the test class sets
`all_generative_model_classes`.
"""

import copy

import torch
from transformers import set_seed

MAX_NEW_TOKENS = 3


class GenerationTesterMixin:
    all_generative_model_classes = ()

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _generation_models(self):
        """(model in eval mode with eager attention, inputs) for each generative class; no token ends a caption
        early, so every sequence has MAX_NEW_TOKENS new tokens (transformers' mixin removes EOS the same way)."""
        for model_class in self.all_generative_model_classes:
            config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
            config._attn_implementation = "eager"  # attentions are returned by the eager path only
            config.text_config._attn_implementation = "eager"
            set_seed(0)
            model = model_class(config).eval()
            model.generation_config.eos_token_id = None
            model.generation_config.no_repeat_ngram_size = 0
            yield model, inputs

    @staticmethod
    def _kwargs(**overrides):
        kwargs = {"max_new_tokens": MAX_NEW_TOKENS, "min_new_tokens": MAX_NEW_TOKENS, "num_beams": 1}
        kwargs.update(overrides)
        return kwargs

    def _check_step_outputs(self, output, model, inputs, rows: int):
        """Scores, logits, attentions and hidden states of every generation step: the first over the whole prefix
        and caption start, each next over the new position, attending to one position more."""
        config = model.config.text_config
        start = self.model_tester.prefix_length + inputs["input_ids"].shape[1]
        self.assertEqual(len(output.scores), MAX_NEW_TOKENS)
        self.assertEqual(len(output.logits), MAX_NEW_TOKENS)
        self.assertEqual(len(output.attentions), MAX_NEW_TOKENS)
        self.assertEqual(len(output.hidden_states), MAX_NEW_TOKENS)
        for step in range(MAX_NEW_TOKENS):
            self.assertEqual(tuple(output.scores[step].shape), (rows, config.vocab_size))
            self.assertEqual(tuple(output.logits[step].shape), (rows, config.vocab_size))
            total = start + step
            queries = total if step == 0 else 1
            self.assertEqual(len(output.attentions[step]), config.n_layer)
            for layer in output.attentions[step]:
                self.assertEqual(tuple(layer.shape), (rows, config.n_head, queries, total))
            self.assertEqual(len(output.hidden_states[step]), config.n_layer + 1)
            for layer in output.hidden_states[step]:
                self.assertEqual(tuple(layer.shape), (rows, queries, config.n_embd))

    def _dict_kwargs(self, **overrides):
        return self._kwargs(
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            output_attentions=True,
            output_hidden_states=True,
            **overrides,
        )

    # -- the tests -------------------------------------------------------------------------------------------------

    def test_greedy_generate(self):
        for model, inputs in self._generation_models():
            sequences = model.generate(**inputs, **self._kwargs())
            batch, start = inputs["input_ids"].shape
            self.assertEqual(tuple(sequences.shape), (batch, start + MAX_NEW_TOKENS))
            self.assertTrue(torch.equal(sequences[:, :start], inputs["input_ids"]))

    def test_greedy_generate_dict_outputs(self):
        for model, inputs in self._generation_models():
            output = model.generate(**inputs, **self._dict_kwargs())
            self._check_step_outputs(output, model, inputs, len(inputs["input_ids"]))
            # Greedy picks the best score of each step.
            start = inputs["input_ids"].shape[1]
            for step, scores in enumerate(output.scores):
                self.assertTrue(torch.equal(scores.argmax(-1), output.sequences[:, start + step]))
            self.assertIsNotNone(output.cache)

    def test_generate_with_and_without_the_prefix_cache(self):
        """`generate` runs the prefix through the decoder once per image (the prefix cache) unless told
        `use_cache=False`; transformers keeps a cache either way for a decoder fed `inputs_embeds` (it forces
        `use_cache=True` then, for BLIP-2 too). Both give the same captions."""
        for model, inputs in self._generation_models():
            for kwargs in (self._kwargs(), self._kwargs(num_beams=2)):
                with_prefix_cache = model.generate(**inputs, **kwargs)
                without = model.generate(**inputs, **kwargs, use_cache=False)
                self.assertTrue(torch.equal(with_prefix_cache, without))

    def test_greedy_generate_equals_forward_argmax(self):
        """Each greedy token is the argmax of a forward pass over the images and the sequence so far."""
        for model, inputs in self._generation_models():
            sequences = model.generate(**inputs, **self._kwargs())
            start = inputs["input_ids"].shape[1]
            for step in range(MAX_NEW_TOKENS):
                so_far = sequences[:, : start + step]
                logits = model(pixel_values=inputs["pixel_values"], input_ids=so_far, logits_to_keep=1).logits
                self.assertTrue(torch.equal(logits[:, -1].argmax(-1), sequences[:, start + step]))

    def test_sample_generate(self):
        for model, inputs in self._generation_models():
            kwargs = self._kwargs(do_sample=True, top_k=0, num_return_sequences=2)
            set_seed(1)
            first = model.generate(**inputs, **kwargs)
            set_seed(1)
            again = model.generate(**inputs, **kwargs)
            self.assertEqual(tuple(first.shape), (2 * len(inputs["input_ids"]), inputs["input_ids"].shape[1] + 3))
            self.assertTrue(torch.equal(first, again))
            self.assertTrue(torch.equal(first[::2, : inputs["input_ids"].shape[1]], inputs["input_ids"]))

    def test_sample_generate_dict_output(self):
        for model, inputs in self._generation_models():
            set_seed(1)
            output = model.generate(**inputs, **self._dict_kwargs(do_sample=True, num_return_sequences=2))
            self._check_step_outputs(output, model, inputs, 2 * len(inputs["input_ids"]))

    def test_beam_search_generate_dict_output(self):
        for model, inputs in self._generation_models():
            kwargs = self._dict_kwargs(num_beams=2, num_return_sequences=2)
            output = model.generate(**inputs, **kwargs)
            batch, start = inputs["input_ids"].shape
            self.assertEqual(tuple(output.sequences.shape), (2 * batch, start + MAX_NEW_TOKENS))
            self.assertEqual(tuple(output.sequences_scores.shape), (2 * batch,))
            self.assertEqual(tuple(output.beam_indices.shape), (2 * batch, MAX_NEW_TOKENS))
            self._check_step_outputs(output, model, inputs, 2 * batch)
            # The best beam of each image is what plain beam search returns.
            best = model.generate(**inputs, **self._kwargs(num_beams=2))
            self.assertTrue(torch.equal(output.sequences[::2], best))

    def test_beam_sample_generate(self):
        for model, inputs in self._generation_models():
            kwargs = self._kwargs(num_beams=2, do_sample=True, num_return_sequences=2)
            set_seed(3)
            first = model.generate(**inputs, **kwargs)
            set_seed(3)
            again = model.generate(**inputs, **kwargs)
            self.assertTrue(torch.equal(first, again))
            self.assertEqual(first.shape[0], 2 * len(inputs["input_ids"]))

    def test_generate_without_caption_start(self):
        """Images alone: the caption starts right after the prefix (what the pipeline does)."""
        for model, inputs in self._generation_models():
            sequences = model.generate(pixel_values=inputs["pixel_values"], **self._kwargs())
            self.assertEqual(tuple(sequences.shape), (len(inputs["pixel_values"]), MAX_NEW_TOKENS))

    def test_generate_from_inputs_embeds(self):
        """A caption start as embeddings continues as the same start as tokens; only new tokens come back."""
        for model, inputs in self._generation_models():
            from_ids = model.generate(**inputs, **self._kwargs())
            embeds = model.get_input_embeddings()(inputs["input_ids"])
            from_embeds = model.generate(pixel_values=inputs["pixel_values"], inputs_embeds=embeds, **self._kwargs())
            self.assertTrue(torch.equal(from_embeds, from_ids[:, inputs["input_ids"].shape[1] :]))

    def test_generate_continue_from_cache(self):
        """Generating 2 x 3 tokens with the first call's cache handed to the second equals generating 6 at once."""
        for model, inputs in self._generation_models():
            whole = model.generate(**inputs, **self._kwargs(max_new_tokens=6, min_new_tokens=6))
            first = model.generate(**inputs, **self._kwargs(return_dict_in_generate=True))
            self.assertIsNotNone(first.cache)
            prefix = self.model_tester.prefix_length
            self.assertEqual(first.cache.get_seq_length(), prefix + first.sequences.shape[1] - 1)
            rest = model.generate(
                pixel_values=inputs["pixel_values"],
                input_ids=first.sequences,
                cache=copy.deepcopy(first.cache),
                **self._kwargs(),
            )
            self.assertTrue(torch.equal(rest, whole))

    def test_forward_cache_continues(self):
        """A forward pass with `use_cache=True`, then one token without the images, scores as the whole at once."""
        for model, inputs in self._generation_models():
            ids = inputs["input_ids"]
            whole = model(pixel_values=inputs["pixel_values"], input_ids=ids)
            head = model(pixel_values=inputs["pixel_values"], input_ids=ids[:, :-1])
            self.assertEqual(head.cache.get_seq_length(), self.model_tester.prefix_length + ids.shape[1] - 1)
            step = model(input_ids=ids[:, -1:], cache=head.cache)
            torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1], rtol=1e-4, atol=1e-4)
            self.assertIsNone(model(pixel_values=inputs["pixel_values"], input_ids=ids, use_cache=False).cache)

    def test_left_padding_compatibility(self):
        """A left-padded caption start gives what the unpadded start gives."""
        for model, inputs in self._generation_models():
            ids = inputs["input_ids"]
            plain = model.generate(pixel_values=inputs["pixel_values"], input_ids=ids, **self._kwargs())
            padded = torch.cat([torch.full_like(ids[:, :2], 7), ids], dim=1)
            mask = torch.cat([torch.zeros_like(ids[:, :2]), torch.ones_like(ids)], dim=1)
            left = model.generate(
                pixel_values=inputs["pixel_values"], input_ids=padded, attention_mask=mask, **self._kwargs()
            )
            self.assertTrue(torch.equal(left, plain))

    def test_batched_generate_equals_one_by_one(self):
        for model, inputs in self._generation_models():
            for kwargs in (self._kwargs(), self._kwargs(num_beams=2)):
                batched = model.generate(**inputs, **kwargs)
                for row in range(len(batched)):
                    single = {key: value[row : row + 1] for key, value in inputs.items()}
                    self.assertTrue(torch.equal(model.generate(**single, **kwargs)[0], batched[row]))

    def test_forward_with_logits_to_keep(self):
        for model, inputs in self._generation_models():
            batch, length = inputs["input_ids"].shape
            every = model(**inputs, logits_to_keep=0).logits
            last = model(**inputs, logits_to_keep=1).logits
            vocab = model.config.text_config.vocab_size
            self.assertEqual(tuple(every.shape), (batch, self.model_tester.prefix_length + length, vocab))
            self.assertEqual(tuple(last.shape), (batch, 1, vocab))
            torch.testing.assert_close(every[:, -1:], last, rtol=1e-5, atol=1e-5)

    def test_assisted_decoding_is_refused(self):
        for model, inputs in self._generation_models():
            for kwargs in ({"assistant_model": model}, {"prompt_lookup_num_tokens": 2}):
                with self.assertRaisesRegex(ValueError, "does not support assisted decoding"):
                    model.generate(**inputs, **self._kwargs(**kwargs))
