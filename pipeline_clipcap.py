# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The `image-text-to-text` pipeline of a ClipCap captioner, the task that serves captioning models in transformers 5.

    from transformers import pipeline
    captioner = pipeline("image-text-to-text", model="outputs/demo", trust_remote_code=True)
    captioner("photo.jpg")                          # [{'input_text': '', 'generated_text': 'a red fridge'}]
    captioner(["a.jpg", image], text="a red")       # one list per image; each caption continues "a red"

A saved model's config names this class in `custom_pipelines` and carries this file, so `pipeline()` builds it from
the model directory or Hub repository with `trust_remote_code=True`. It is transformers' `ImageTextToTextPipeline`
with what captioning needs: the text is optional (BLIP's captioning pipeline requires one), a list of images is
captioned image by image (`batch_size=` batches them), and the output is what `model.generate` writes: with a text,
the caption starts with it (`return_full_text=False` leaves only the continuation).
"""

from transformers import GenerationConfig
from transformers.image_utils import load_image
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline, ReturnType


class ClipCapCaptioningPipeline(ImageTextToTextPipeline):
    def check_model_type(self, supported_models):
        # A model served by its own code is in no built-in mapping: its config's `auto_map` is what names it.
        if "AutoModelForImageTextToText" not in (getattr(self.model.config, "auto_map", None) or {}):
            super().check_model_type(supported_models)

    def _sanitize_parameters(self, **kwargs):
        # Generation options given to the call go to `generate` (transformers' pipeline would pass them to the
        # processor, which ignores them), as those given to `pipeline()` do.
        names = {key for key in vars(GenerationConfig()) if not key.startswith("_")} | {"generation_config"}
        if given := {key: kwargs.pop(key) for key in names & kwargs.keys()}:
            kwargs["generate_kwargs"] = {**(kwargs.get("generate_kwargs") or {}), **given}
        return super()._sanitize_parameters(**kwargs)

    def __call__(self, images=None, text=None, **kwargs):
        """Caption `images`: a PIL image, a local path or a URL, or a list of them. `text` (optional): the start of
        every caption (a string) or of each image's (a list, one per image). Returns a list of
        `{"input_text", "generated_text"}` per image (one per returned sequence), for a list of images a list of those."""
        if images is None:
            raise ValueError("a ClipCap captioner needs `images` (a PIL image, a path or URL, or a list of them)")
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        texts = [text] * len(images) if text is None or isinstance(text, str) else list(text)
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts for {len(images)} images: give one text, or one per image")
        results = super(ImageTextToTextPipeline, self).__call__(
            [{"images": image, "text": start or ""} for image, start in zip(images, texts)], **kwargs
        )
        return results[0] if single else results

    def preprocess(self, inputs, timeout=None, **processing_kwargs):
        image = load_image(inputs["images"], timeout=timeout)
        text = inputs["text"]
        model_inputs = self.processor(images=[image], text=[text] if text else None)
        model_inputs.pop("labels", None)
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.dtype)
        return {**model_inputs, "text": text}

    def _forward(self, model_inputs, generate_kwargs=None):
        text = model_inputs.pop("text")
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs or {}, return_dict_in_generate=False)
        return {"generated_sequence": self.model.generate(**model_inputs, **generate_kwargs), "prompt_text": text}

    def postprocess(self, model_outputs, return_type=ReturnType.FULL_TEXT, skip_special_tokens=None, **kwargs):
        texts = model_outputs["prompt_text"]
        sequences = model_outputs["generated_sequence"]
        # The pipeline's loader hands each image's outputs over one by one.
        sequences = sequences.reshape(-1, sequences.shape[-1])
        text = texts[0] if isinstance(texts, list) else texts
        if return_type == ReturnType.TENSORS:
            return [{"input_text": text, "generated_token_ids": sequence} for sequence in sequences]
        skip = True if skip_special_tokens is None else skip_special_tokens
        captions = self.processor.batch_decode(sequences, skip_special_tokens=skip)
        if return_type == ReturnType.NEW_TEXT and text:
            captions = [caption[len(text) :].strip() if caption.startswith(text) else caption for caption in captions]
        return [{"input_text": text, "generated_text": caption} for caption in captions]


__all__ = ["ClipCapCaptioningPipeline"]
