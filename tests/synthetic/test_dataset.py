"""The examples rendered to PNG files."""

from clipcap import synthetic


def test_render_examples_in_two_processes_writes_the_same_files(tmp_path):
    one = synthetic.render_examples(tmp_path / "one", 5, 2, seed=2, image_size=48, num_proc=1, progress=False)
    two = synthetic.render_examples(tmp_path / "two", 5, 2, seed=2, image_size=48, num_proc=2, progress=False)
    assert [(s, p.name, sc, c) for s, p, sc, c in one] == [(s, p.name, sc, c) for s, p, sc, c in two]
    assert [p.read_bytes() for _, p, _, _ in one] == [p.read_bytes() for _, p, _, _ in two]
    assert [str(p.relative_to(tmp_path / "one")) for _, p, _, _ in one][-2:] == [
        "validation/000000.png",
        "validation/000001.png",
    ]
