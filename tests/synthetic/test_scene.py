"""A scene's description survives its JSON form."""

from clipcap.synthetic import Scene, make_example


def test_scene_json_round_trip():
    scene, _ = make_example(0, "validation", 5)
    assert Scene.from_json(scene.to_json()) == scene
