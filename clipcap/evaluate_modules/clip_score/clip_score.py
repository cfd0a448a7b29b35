# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""CLIPScore and RefCLIPScore (Hessel et al. 2021) with a given open_clip model, as an `evaluate` module."""

import datasets
import evaluate
import torch

from clipcap.metrics import clip_score, ref_clip_score
from clipcap.teacher import CLIPTeacher

_CITATION = """\
@inproceedings{hessel2021clipscore,
  title={{CLIPScore}: A Reference-free Evaluation Metric for Image Captioning},
  author={Hessel, Jack and Holtzman, Ari and Forbes, Maxwell and Le Bras, Ronan and Choi, Yejin},
  booktitle={EMNLP},
  year={2021}
}
"""

_DESCRIPTION = """\
CLIP-S = 2.5 * max(cos(image, caption), 0) with the image and caption embedded by a CLIP model; RefCLIP-S is the
harmonic mean of CLIP-S and the caption's best cosine with one of the image's reference captions (clamped at 0).
Both depend on the CLIP model, which the result names (`clip_model`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one caption per image.
    references (`list[list[str]]`, *optional*): each image's reference captions, for RefCLIP-S (an empty list: no
        RefCLIP-S for that image).
    images (`list[PIL.Image]`, *optional*): the images, embedded with the CLIP model's own preprocessing.
    image_embeds (`torch.Tensor` of shape `(N, D)`, *optional*): the images' embeddings by the same CLIP model,
        instead of `images`.
    per_caption (`bool`, *optional*, defaults to `False`): also return each caption's scores under "per_caption".
Returns:
    clip_s (`float`): the mean CLIP-S; ref_clip_s (`float`, with references): the mean RefCLIP-S over the images
    that have references; clip_model (`str`): the CLIP model that embedded; per_caption (`dict[str, list]`).
Examples:
    >>> clip_s = evaluate.load("clipcap/evaluate_modules/clip_score", clip_model="ViT-B-32", clip_pretrained="openai")
    >>> clip_s.compute(predictions=["a red fridge"], images=[image], references=[["a red refrigerator"]])
    {'clip_s': 0.74, 'ref_clip_s': 0.8, 'clip_model': "ViT-B-32 'openai'"}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CLIPScore(evaluate.Metric):
    """`evaluate.load(path, teacher=CLIPTeacher)` or `evaluate.load(path, clip_model=..., clip_pretrained=...)`."""

    def __init__(self, teacher=None, clip_model=None, clip_pretrained=None, device=None, **kwargs):
        super().__init__(**kwargs)
        if teacher is None and not (clip_model and clip_pretrained):
            raise ValueError("clip_score needs a CLIP model: teacher=CLIPTeacher, or clip_model= and clip_pretrained=")
        self.teacher, self.clip_model, self.clip_pretrained, self.device = teacher, clip_model, clip_pretrained, device

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://arxiv.org/abs/2104.08718"],
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """`evaluate.Metric.compute`, with `references` optional: CLIP-S alone needs none."""
        if references is None and predictions is not None:  # CLIP-S alone needs no references
            references = [[] for _ in predictions]
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings of `texts`, each distinct text embedded once (a generic caption given for every
        image costs one text)."""
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            return torch.empty(0, self.teacher.identity.embed_dim or 0)
        embeds = self.teacher.embed_texts(distinct).cpu()
        index = {text: i for i, text in enumerate(distinct)}
        return embeds[[index[text] for text in texts]]

    def _compute(self, predictions, references, images=None, image_embeds=None, per_caption=False):
        if self.teacher is None:
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.teacher = CLIPTeacher.from_pretrained(self.clip_model, self.clip_pretrained, device)
        if (images is None) == (image_embeds is None):
            raise ValueError("clip_score needs the images, or their embeddings (image_embeds), and not both")
        if image_embeds is None:
            image_embeds = self.teacher.embed_pil_images(images)
        image_embeds = torch.as_tensor(image_embeds).cpu()
        if len(image_embeds) != len(predictions):
            raise ValueError(f"{len(predictions)} captions for {len(image_embeds)} images")
        caption_embeds = self._embed(predictions)
        scores = clip_score(image_embeds, caption_embeds)
        result = {"clip_s": float(scores.mean()) if len(scores) else float("nan")}
        per = {"clip_s": scores.tolist()}
        scored = [i for i, refs in enumerate(references) if refs]
        if scored:
            flat = self._embed([text for refs in references for text in refs])
            reference_embeds = list(torch.split(flat, [len(refs) for refs in references]))
            ref_scores = ref_clip_score(scores, caption_embeds, reference_embeds)
            result["ref_clip_s"] = float(ref_scores[scored].mean())
            per["ref_clip_s"] = ref_scores.tolist()
        result["clip_model"] = self.teacher.identity.describe()
        if per_caption:
            result["per_caption"] = per
        return result
