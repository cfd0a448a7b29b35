"""Hand-made scenes whose true captions are known, shared by the checker's tests and the evaluation tests."""

from clipcap.synthetic import Scene, SceneObject, Unit

# A red toaster on the left, two blue kettles on the right; and a two-storey column beside it for "above".
ROW = Scene(
    layout="row",
    units=[Unit("Toaster", "red", 1), Unit("Kettle", "blue", 2)],
    objects=[
        SceneObject("Toaster", "red", 0, [0.1, 0.5, 0.2, 0.3]),
        SceneObject("Kettle", "blue", 1, [0.4, 0.5, 0.15, 0.3]),
        SceneObject("Kettle", "blue", 1, [0.6, 0.5, 0.15, 0.3]),
    ],
    side="",
    render_seed=0,
)
COLUMN = Scene(
    layout="column",
    units=[Unit("Microwave oven", "white", 1), Unit("Refrigerator", "black", 1)],
    objects=[
        SceneObject("Microwave oven", "white", 0, [0.3, 0.1, 0.4, 0.2]),
        SceneObject("Refrigerator", "black", 1, [0.35, 0.31, 0.3, 0.6]),
    ],
    side="",
    render_seed=0,
)
