"""Rendering: image size and mode, variety, and a drawer for every kind."""

import numpy as np
import pytest

from clipcap.synthetic import KINDS, Scene, SceneObject, Unit, make_example, render_scene


def test_render_size_mode_and_variety():
    images = [np.asarray(render_scene(make_example(0, "train", i)[0], 96)) for i in range(4)]
    assert all(image.shape == (96, 96, 3) and image.dtype == np.uint8 for image in images)
    assert len({image.tobytes() for image in images}) == 4


def one_object(kind: str) -> Scene:
    return Scene("single", [Unit(kind, "red", 1)], [SceneObject(kind, "red", 0, [0.2, 0.3, 0.5, 0.6])], "", 7)


def test_every_kind_has_its_own_drawing_and_an_unknown_kind_is_refused():
    images = {kind: np.asarray(render_scene(one_object(kind), 64)).tobytes() for kind in KINDS}
    assert len(set(images.values())) == len(KINDS)  # same room, same box: only the drawer differs
    with pytest.raises(ValueError, match="unknown kind 'Dishwasher'"):
        render_scene(one_object("Dishwasher"), 64)
