"""The metric Space's app: an image and a caption (and references, one per line) -> CLIP-S and RefCLIP-S by
ViT-B-32 (OpenAI's weights, downloaded on first use)."""

from pathlib import Path

import evaluate
import gradio as gr

metric = evaluate.load(str(Path(__file__).parent), clip_model="ViT-B-32", clip_pretrained="openai")


def score(image, caption, references):
    references = [line.strip() for line in (references or "").splitlines() if line.strip()]
    return metric.compute(predictions=[caption], references=[references], images=[image])


gr.Interface(
    score,
    [gr.Image(type="pil"), gr.Textbox(label="caption"), gr.Textbox(label="references, one per line", lines=3)],
    gr.JSON(label="scores"),
    title="CLIPScore",
).launch()
