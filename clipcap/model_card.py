# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The model card `run_train.py` writes next to a trained model (and `push_to_hub` uploads)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData


def write_model_card(output_dir: str, summary: dict, args_by_group: dict, metadata: dict, teacher, config) -> None:
    """A model card (`README.md` in `output_dir`) naming the data, the teacher, the loss weights and the final metrics:
    `summary` holds the metrics (`eval_*`, `epoch`, `step`), `args_by_group` the run's arguments by group (`data`,
    `guidance`), `metadata` the dataset card's."""
    guidance = args_by_group["guidance"]
    eval_rows = "\n".join(
        f"| {key[len('eval_') :]} | {value:.4g} |"
        for key, value in summary.items()
        if key.startswith("eval_")
        and isinstance(value, (int, float))
        and "runtime" not in key
        and "per_second" not in key
    )
    teacher_line = teacher.identity.describe() if teacher is not None else "none (cross-entropy only)"
    loss_line = (
        f"L_ce + {guidance['lambda_cos']} L_cos + {guidance['lambda_con']} L_con + {guidance['lambda_div']} L_div"
    )
    scst = args_by_group.get("scst") or {}
    if scst.get("scst"):  # the self-critical stage, from a trained captioner
        loss_line = (
            f"self-critical (SCST) from `{args_by_group['model']['model_name_or_path']}`: "
            f"{scst['scst_num_samples']} samples per image, reward {scst['scst_clip_weight']} CLIP-S + "
            f"{scst['scst_cider_weight']} CIDEr-D + {scst.get('scst_matcher_weight', 0.0)} matcher, "
            f"{scst['scst_baseline']} baseline, guard "
            f"{scst['scst_ce_weight']} L_ce"
        )
    card_data = ModelCardData(
        library_name="transformers",
        # transformers 5 serves captioning models (BLIP, GIT) under this task; `pipeline_clipcap.py` implements it.
        pipeline_tag="image-text-to-text",
        tags=["image-captioning", "clipcap", "clip-guided"],
        license="apache-2.0",
    )
    body = f"""
# ClipCap captioner (CLIP-guided)

`{config.encoder_name}` encoder ({config.encoder_features} features, {config.image_size} px) ->
{config.mapper_type} prefix mapper ({config.prefix_length} tokens) -> GPT-2 decoder
({config.text_config.n_layer} layers, width {config.text_config.n_embd}), trained by `run_train.py` with CLIP as the
teacher (training only; the teacher is not part of this model).

- Data: `{args_by_group["data"]["dataset_dir"]}` ({metadata.get("source", "unknown source")}), captions from
  `{args_by_group["data"]["caption_column"]}`.
- Teacher: {teacher_line}
- Loss: {loss_line}
- Trained for {summary.get("epoch", 0):.3g} epochs, {summary.get("step", summary.get("global_step", 0))} steps.

## Evaluation ({args_by_group["data"]["eval_split"]} split)

| metric | value |
| --- | ---: |
{eval_rows}

## Use

```python
from transformers import pipeline
captioner = pipeline("image-text-to-text", model="{output_dir}", trust_remote_code=True)
captioner("photo.jpg")  # [{{'input_text': '', 'generated_text': '...'}}]; text="a photo of" starts the caption
```

or with the model and processor:

```python
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("{output_dir}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{output_dir}", trust_remote_code=True)
captions = processor.batch_decode(model.generate(**processor(images=[image])))
```
"""
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}").save(Path(output_dir, "README.md"))
