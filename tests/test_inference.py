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
