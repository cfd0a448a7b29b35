# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The captioning app that `app.py` serves (Gradio, the `app` extra): one image in, its captions by greedy search,
beam search and sampling side by side, each with its CLIP-S by the teacher when there is one and, for a synthetic
validation scene, the checker's verdict.

    demo = CaptioningDemo(model, processor, teacher, scenes)
    demo.caption(image)        # [{"decoding": "greedy", "caption": ..., "clip_s": ..., "verdict": ...}, ...]
    demo.build().launch()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clipcap.metrics import load_metric
from clipcap.synthetic import Scene, caption_errors

# The three decodings shown side by side; the rest of each comes from the model's generation_config.
DECODINGS = {
    "greedy": {"num_beams": 1, "do_sample": False},
    "beam search": {"num_beams": 5, "do_sample": False},
    "sampling": {"num_beams": 1, "do_sample": True, "top_p": 0.9},
}


def element_id(decoding: str) -> str:
    """The HTML id of a decoding's caption box (`caption-greedy`, `caption-beam-search`, `caption-sampling`)."""
    return "caption-" + decoding.replace(" ", "-")


@dataclass
class ValidationScene:
    """A synthetic validation scene the app offers: its image, its description and its true caption."""

    image: object  # PIL image
    scene: Scene
    caption: str


class CaptioningDemo:
    """Captions an image three ways (`DECODINGS`); `teacher` (a `CLIPTeacher`, optional) scores each caption's CLIP-S
    through the `clip_score` evaluate module; `scenes` are synthetic validation scenes to pick from, whose captions
    the checker (`synthetic.caption_errors`) marks right or wrong."""

    def __init__(self, model, processor, teacher=None, scenes: list[ValidationScene] | None = None, title: str = ""):
        self.model, self.processor, self.teacher = model.eval(), processor, teacher
        self.scenes = scenes or []
        self.title = title or "ClipCap captioner"
        self.clip_metric = load_metric("clip_score", teacher=teacher) if teacher is not None else None

    @torch.no_grad()
    def caption(self, image, scene: Scene | None = None, seed: int = 0) -> list[dict]:
        """The image's caption by each decoding, with its CLIP-S (None without a teacher) and, given the image's
        `scene`, the checker's verdict ("correct", or the errors found; None without a scene)."""
        pixel_values = self.processor(images=[image.convert("RGB")])["pixel_values"].to(self.model.device)
        rows = []
        for decoding, settings in DECODINGS.items():
            torch.manual_seed(seed)  # sampling is reproducible for a given seed
            sequence = self.model.generate(pixel_values, **settings)
            rows.append({"decoding": decoding, "caption": self.processor.batch_decode(sequence)[0]})
        if self.clip_metric is not None:
            image_embeds = self.teacher.embed_pil_images([image]).cpu().expand(len(rows), -1)
            scores = self.clip_metric.compute(
                predictions=[row["caption"] for row in rows], image_embeds=image_embeds, per_caption=True
            )["per_caption"]["clip_s"]
        for i, row in enumerate(rows):
            row["clip_s"] = scores[i] if self.clip_metric is not None else None
            errors = caption_errors(row["caption"], scene) if scene is not None else None
            row["verdict"] = None if errors is None else ("correct" if not errors else ", ".join(errors))
        return rows

    @staticmethod
    def describe(row: dict) -> str:
        """One line under a caption: its CLIP-S and the checker's verdict, where there are any."""
        parts = []
        if row["clip_s"] is not None:
            parts.append(f"CLIP-S {row['clip_s']:.3f}")
        if row["verdict"] is not None:
            parts.append("checker: correct" if row["verdict"] == "correct" else f"checker: wrong ({row['verdict']})")
        return " · ".join(parts) or "no teacher, no scene: nothing to score against"

    def build(self):
        """The Gradio Blocks app."""
        import gradio as gr

        choices = [f"{i}: {scene.caption}" for i, scene in enumerate(self.scenes)]
        with gr.Blocks(title=self.title) as app:
            gr.Markdown(f"# {self.title}\nDrop an image, or pick a validation scene; the captions come three ways.")
            scene_index = gr.State(None)
            with gr.Row():
                with gr.Column(scale=3):
                    # PNG, not Gradio's default WebP: a picture sent back and forth stays exactly the same.
                    image = gr.Image(type="pil", format="png", label="Image", elem_id="image", height=320)
                with gr.Column(scale=2):
                    picker = gr.Dropdown(
                        choices, value=None, label="...or a validation scene", elem_id="scene-picker", visible=bool(choices)
                    )
                    truth = gr.Markdown(elem_id="truth")
                    seed = gr.Number(value=0, precision=0, label="sampling seed", elem_id="seed")
                    button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            captions, details = [], []
            with gr.Row():
                for decoding in DECODINGS:
                    with gr.Column():
                        captions.append(gr.Textbox(label=decoding, elem_id=element_id(decoding), interactive=False))
                        details.append(gr.Markdown(elem_id=element_id(decoding) + "-details"))

            def run(picture, index, sampling_seed):
                if picture is None:
                    return ["" for _ in captions] + ["" for _ in details]
                if index is not None:  # a validation scene: its own image (not the browser's copy) and its scene
                    picture, scene = self.scenes[index].image, self.scenes[index].scene
                else:
                    scene = None
                rows = self.caption(picture, scene, int(sampling_seed or 0))
                return [row["caption"] for row in rows] + [self.describe(row) for row in rows]

            def pick(choice):
                if not choice:
                    return gr.update(), None, ""
                index = int(choice.split(":", 1)[0])
                return self.scenes[index].image, index, f"True description: *{self.scenes[index].caption}*"

            picker.select(pick, picker, [image, scene_index, truth]).then(
                run, [image, scene_index, seed], captions + details
            )
            # A dropped image is not a validation scene: no verdict for it.
            image.upload(lambda: (None, None, ""), None, [picker, scene_index, truth]).then(
                run, [image, scene_index, seed], captions + details
            )
            button.click(run, [image, scene_index, seed], captions + details)
        return app
