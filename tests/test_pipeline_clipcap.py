"""pipeline_clipcap.py: `pipeline("image-text-to-text", model=DIR, trust_remote_code=True)`, in a fresh process
outside the repository, captions as `generate` does."""

import torch
from PIL import Image

from processing_clipcap import ClipCapProcessor
from tests.conftest import tiny_model
from tests.helpers import run_isolated

PIPELINE_RUN = """
import json, sys
from PIL import Image
from transformers import pipeline
path = sys.argv[1]
captioner = pipeline("image-text-to-text", model=path, trust_remote_code=True)
image = Image.open("scene0.png")
outputs = {
    "pil": captioner(image, max_new_tokens=6),
    "path": captioner("scene1.png", max_new_tokens=6),
    "list": captioner([image, "scene1.png", "scene2.png"], max_new_tokens=6),
    "prefix": captioner(["scene0.png", "scene1.png"], text="a photo of", max_new_tokens=6),
    "prefixes": captioner(["scene0.png", "scene1.png", "scene2.png"], text=["a photo of", "", "two"], max_new_tokens=6),
    "new_text": captioner(image, text="a photo of", max_new_tokens=6, return_full_text=False),
    "beams": captioner(image, max_new_tokens=6, num_beams=3, num_return_sequences=2),
    "batched": captioner([image, "scene1.png", "scene2.png"], max_new_tokens=6, batch_size=2),
}
print(json.dumps({"class": type(captioner).__name__, "module": type(captioner).__module__, "outputs": outputs}))
"""


def test_image_text_to_text_pipeline_captions_as_generate_does(tmp_path):
    """`pipeline("image-text-to-text", model=DIR, trust_remote_code=True)` from a working directory outside the
    repository, on a PIL image, a path and lists, with and without a text start: the captions equal `generate`'s."""
    model = tiny_model()
    processor = ClipCapProcessor.from_config(model.config)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    generator = torch.Generator().manual_seed(3)
    images = []
    for i in range(3):
        pixels = torch.randint(0, 256, (72, 72, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"scene{i}.png")
        images.append(Image.open(tmp_path / f"scene{i}.png").convert("RGB"))

    def generate(texts=None, **kwargs):
        inputs = processor(images=images[: len(texts)] if texts else images, text=texts)
        return processor.batch_decode(model.generate(**inputs, max_new_tokens=6, **kwargs))

    plain = generate()
    started = generate(["a photo of", "a photo of"])
    mixed = generate(["a photo of", "", "two"])
    assert all(caption.startswith("a photo of") for caption in started) and mixed[1] == plain[1]
    beams = generate(num_beams=3, num_return_sequences=2)[:2]

    ran = run_isolated(PIPELINE_RUN, tmp_path / "model", tmp_path)
    assert ran["class"] == "ClipCapCaptioningPipeline" and ran["module"].startswith("transformers_modules.")
    out = ran["outputs"]

    def texts(results):
        return [result["generated_text"] for result in results]

    assert texts(out["pil"]) == plain[:1] and texts(out["path"]) == plain[1:2]
    assert [texts(results) for results in out["list"]] == [[caption] for caption in plain]
    assert [texts(results) for results in out["batched"]] == [[caption] for caption in plain]
    assert [texts(results) for results in out["prefix"]] == [[caption] for caption in started]
    assert [texts(results) for results in out["prefixes"]] == [[caption] for caption in mixed]
    assert out["prefix"][0][0]["input_text"] == "a photo of"
    assert texts(out["new_text"]) == [started[0][len("a photo of") :].strip()]
    assert texts(out["beams"]) == beams and len(set(beams)) == 2
