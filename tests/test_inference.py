"""clipcap/inference.py: the decoding options pass on only what was set."""

from clipcap import inference


def test_generation_arguments_pass_only_what_was_set():
    assert inference.GenerationArguments().generate_kwargs() == {}
    assert inference.GenerationArguments(num_beams=5, max_new_tokens=9).generate_kwargs() == {
        "num_beams": 5,
        "max_new_tokens": 9,
    }
    sampling = inference.GenerationArguments(do_sample=True, top_p=0.9, temperature=0.7)
    assert sampling.generate_kwargs() == {"do_sample": True, "num_beams": 1, "top_p": 0.9, "temperature": 0.7}


def test_the_app_captions_with_the_onnx_backend(onnx_export_dir):
    from PIL import Image

    from clipcap.captioning_app import CaptioningDemo
    from clipcap.onnx_runtime import ClipCapONNXCaptioner

    model, processor = inference.load_captioner(str(onnx_export_dir / "model"))
    onnx_captioner, onnx_processor = inference.load_captioner(str(onnx_export_dir / "export"), backend="onnx")
    assert isinstance(onnx_captioner, ClipCapONNXCaptioner)
    assert isinstance(inference.load_captioner(str(onnx_export_dir / "export"))[0], ClipCapONNXCaptioner)  # auto
    image = Image.new("RGB", (64, 64), "teal")
    expected = CaptioningDemo(model, processor).caption(image)
    assert CaptioningDemo(onnx_captioner, onnx_processor).caption(image) == expected
