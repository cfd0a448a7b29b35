# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The COCO caption metrics (pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), as an `evaluate` module."""

import datasets
import evaluate

from clipcap.metrics import COCO_METRICS, coco_caption_scores

_CITATION = """\
@article{chen2015microsoft,
  title={Microsoft {COCO} Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
          Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""

_DESCRIPTION = """\
BLEU-1..4 (Papineni et al. 2002), METEOR 1.5 (Denkowski & Lavie 2014), ROUGE-L (Lin 2004) and CIDEr-D (Vedantam et
al. 2015) exactly as the COCO caption evaluation computes them: pycocoevalcap after its PTB tokenizer (Stanford
CoreNLP, needs Java). Corpus BLEU has the brevity penalty over the corpus. SPICE is left out: it downloads Stanford
CoreNLP models on first use.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one caption per image.
    references (`list[list[str]]`): each image's reference captions (at least one).
    metrics (`tuple[str]`, *optional*): a subset of ("bleu", "meteor", "rouge_l", "cider"); default all.
    per_caption (`bool`, *optional*, defaults to `False`): also return each caption's scores under "per_caption".
Returns:
    bleu_1 .. bleu_4, meteor, rouge_l, cider (`float`), per_caption (`dict[str, list[float]]`).
Examples:
    >>> coco = evaluate.load("clipcap/evaluate_modules/coco_captions")
    >>> coco.compute(predictions=["a red fridge"], references=[["a red fridge", "a fridge"]], metrics=("cider",))
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class COCOCaptions(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(self, predictions, references, metrics=COCO_METRICS, per_caption=False):
        corpus, each = coco_caption_scores(predictions, references, tuple(metrics))
        if per_caption:
            corpus["per_caption"] = each
        return corpus
