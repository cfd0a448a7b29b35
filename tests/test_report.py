"""clipcap/report.py: the comparison table of runs and scorers, the grid of captioned scenes marked right or wrong,
and the learning curves."""

import json

from PIL import Image


def test_comparison_table_puts_each_run_in_a_column_and_each_score_by_its_scorer():
    from clipcap.report import comparison_table

    results = {
        ("before", "teacher"): {"semantic_accuracy": 0.585, "errors_wrong_kind": 0, "clip_s": 1.7918},
        ("after", "teacher"): {"semantic_accuracy": 0.48, "errors_wrong_kind": 4, "clip_s": 1.7828},
        ("before", "held out"): {"clip_s": 1.8},
        ("after", "held out"): {},
    }
    rows = [
        ("semantic accuracy", "semantic_accuracy", "teacher"),
        ("  errors: wrong_kind", "errors_wrong_kind", "teacher"),
        ("CLIP-S (held out)", "clip_s", "held out"),
    ]
    assert comparison_table(results, ["before", "after"], rows) == (
        "| on the validation scenes | before | after |\n"
        "| --- | ---: | ---: |\n"
        "| semantic accuracy | 0.585 | 0.480 |\n"
        "|   errors: wrong_kind | 0 | 4 |\n"
        "| CLIP-S (held out) | 1.800 | - |\n"
    )


def test_caption_grid_marks_each_caption_right_or_wrong(tmp_path):
    from clipcap import synthetic
    from clipcap.report import plot_metric_curves, write_caption_grid

    scenes = [synthetic.make_example(0, "validation", i) for i in range(5)]
    images = [synthetic.render_scene(scene, 64) for scene, _ in scenes]
    captions = [references[0] for _, references in scenes[:4]] + ["a red toaster"]
    errors = [synthetic.caption_errors(caption, scene) for caption, (scene, _) in zip(captions, scenes)]
    assert [not e for e in errors] == [True, True, True, True, False]
    path = write_caption_grid(tmp_path / "grid.png", images, captions, errors, columns=4)
    grid = Image.open(path).convert("RGB")
    assert grid.size == (4 * 232 + 8, 2 * 312 + 8)
    # Each image is framed green (right) or red (wrong): the pixel just outside the top-left corner of each cell.
    frames = [grid.getpixel((8 + (i % 4) * 232 - 1, 8 + (i // 4) * 312 - 1)) for i in range(5)]
    assert frames == [(20, 120, 40)] * 4 + [(180, 20, 20)]
    # Learning curves: nothing to plot without a trainer_state.json.
    assert plot_metric_curves({"none": str(tmp_path)}, tmp_path / "curve.png") is None
    state = {"log_history": [{"step": 5, "eval_semantic_accuracy": 0.25}, {"step": 10, "eval_semantic_accuracy": 0.5}]}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps(state))
    assert plot_metric_curves({"run": str(tmp_path / "run")}, tmp_path / "curve.png").is_file()
