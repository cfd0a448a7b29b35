"""clipcap/images.py: image inputs found from files, folders and globs, and image files validated: each kind of bad
file dropped with its reason, the odd but good ones converted to RGB."""

import io

import numpy as np
from PIL import Image

from clipcap.images import find_images, validate_image
from tests.helpers import CONVERSIONS, DROPS, make_bad_corpus


def test_find_images_expands_folders_globs_and_reports_what_matches_nothing(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.png", "a/deep/2.JPG", "a/notes.txt", "b.png"):
        (tmp_path / name).write_bytes(b"")
    paths, problems = find_images(
        [str(tmp_path / "a"), str(tmp_path / "*.png"), str(tmp_path / "a" / "1.png"), str(tmp_path / "none*.jpg")]
    )
    assert paths == [str(tmp_path / "a" / "1.png"), str(tmp_path / "a" / "deep" / "2.JPG"), str(tmp_path / "b.png")]
    assert problems == [f"{tmp_path / 'none*.jpg'}: the pattern matches no file"]


def test_validate_image_drops_each_bad_kind_and_converts_the_rest(tmp_path):
    files = make_bad_corpus(tmp_path / "corpus")
    for name, reason in DROPS.items():
        data, got, _ = validate_image(files[name], min_side=32, max_pixels=4_000_000)
        assert (data, got) == (None, reason), name
    for name, conversions in CONVERSIONS.items():
        data, reason, got = validate_image(files[name], min_side=32, max_pixels=4_000_000)
        assert reason == "" and got == conversions, name
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.mode == "RGB", name
        assert image.size == ((48, 64) if name == "rotated.jpg" else (40, 40) if name == "sixteen.png" else (64, 48))
    unchanged, _, _ = validate_image(files["good.png"])
    assert unchanged == (tmp_path / "corpus" / "good.png").read_bytes()  # nothing to do: the original bytes
    white = Image.open(io.BytesIO(validate_image(files["rgba.png"])[0])).getpixel((0, 0))
    assert white == (255, 255, 255)
    grey = np.asarray(Image.open(io.BytesIO(validate_image(files["sixteen.png"])[0])))
    assert (grey == 128).all()
    shrunk = Image.open(io.BytesIO(validate_image(files["good.jpg"], max_side=32)[0]))
    assert shrunk.size == (32, 24) and shrunk.format == "JPEG"
    assert validate_image(files["bomb.png"], max_pixels=10_000_000)[1] == ""  # under the limit it is a fine image
