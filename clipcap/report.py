# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The reports of `run_eval.py`: a Markdown table, the training curves of `trainer_state.json`, and one
self-contained HTML page (images inlined, no network) with a sortable gallery of every evaluated image."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from clipcap.files import atomic_write_text

# (key, label, decimals) in the order every report lists them.
METRIC_ROWS = [
    ("clip_s", "CLIP-S", 3),
    ("ref_clip_s", "RefCLIP-S", 3),
    ("bleu_1", "BLEU-1", 3),
    ("bleu_2", "BLEU-2", 3),
    ("bleu_3", "BLEU-3", 3),
    ("bleu_4", "BLEU-4", 3),
    ("meteor", "METEOR", 3),
    ("rouge_l", "ROUGE-L", 3),
    ("cider", "CIDEr", 3),
    ("spice", "SPICE", 3),
    ("distinct_1", "distinct-1", 3),
    ("distinct_2", "distinct-2", 3),
    ("vocabulary_size", "vocabulary (words)", 0),
    ("unique_captions_pct", "unique captions %", 1),
    ("novel_captions_pct", "novel captions %", 1),
    ("mean_length", "mean length (words)", 2),
    ("semantic_accuracy", "semantic accuracy", 3),
]


def _rows(results: dict) -> list[tuple[str, str, int]]:
    """METRIC_ROWS, plus the per-object-count accuracies and error counts present in `results`."""
    keys = {key for system in results.values() for key in system}
    rows = [row for row in METRIC_ROWS if row[0] in keys]
    counts = sorted((key for key in keys if key.endswith("obj")), key=lambda key: int(key.split("_")[-1][:-3]))
    rows += [(key, f"semantic accuracy, {key.split('_')[-1][:-3]}-object scenes", 3) for key in counts]
    errors = [key for key in next(iter(results.values())) if key.startswith("errors_")]
    rows += [(key, f"errors: {key[len('errors_') :].replace('_', ' ')}", 0) for key in errors]
    return rows


def summary_rows(results: dict) -> list[tuple[str, list[str]]]:
    """(label, one formatted value per captioner) for each row of the summary, in the order every report lists them."""
    systems = list(results)
    return [
        (label, [_format(results[system].get(key), decimals) for system in systems])
        for key, label, decimals in _rows(results)
    ]


def decoding_settings(generation: dict) -> str:
    """The decoding options of a generation config, without its token ids."""
    return ", ".join(f"{k}={v}" for k, v in sorted(generation.items()) if not k.endswith(("_token_id", "_version")))


def _format(value, decimals: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{decimals}f}" if decimals else f"{value:,.0f}"


def summary_table(report: dict) -> str:
    """A Markdown summary: what was evaluated, then one row per metric and one column per captioner."""
    results, systems = report["results"], list(report["results"])
    lines = [
        f"# Evaluation of `{report['model']}`",
        "",
        f"- Data: `{report['dataset']}`, split `{report['split']}`, {report['images']} images",
        f"- CLIP scorer: {report['teacher']}",
        f"- Decoding: {decoding_settings(report['generation'])}",
        f'- Baseline: "{report["baseline_caption"]}" for every image',
        f"- References: {report['notes']['references']}",
        f"- SPICE: {report['notes']['spice']}",
        "",
        "| metric | " + " | ".join(systems) + " |",
        "| --- |" + " ---: |" * len(systems),
    ]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in summary_rows(results)]
    return "\n".join(lines) + "\n"


def find_trainer_state(model_dir: str) -> Path | None:
    """`trainer_state.json` of the model directory, else of its last checkpoint."""
    path = Path(model_dir, "trainer_state.json")
    if path.is_file():
        return path
    checkpoints = Path(model_dir).glob("checkpoint-*/trainer_state.json")
    checkpoints = sorted(checkpoints, key=lambda path: int(path.parent.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def read_log_history(model_dir: str) -> tuple[Path, list[dict]] | None:
    """The Trainer's log history of a model directory (`find_trainer_state`) and the file it came from, or None."""
    state_path = find_trainer_state(model_dir)
    if state_path is None:
        return None
    return state_path, json.loads(state_path.read_text())["log_history"]


def metric_series(history: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged `key`, in step order; a step logged twice (a final evaluation that repeats the
    last one) counts once, with its last value."""
    return sorted({entry["step"]: entry[key] for entry in history if key in entry and "step" in entry}.items())


def plot_training_curves(model_dir: str, output: Path) -> Path | None:
    """Plot every loss term (training and evaluation) and the evaluation caption metrics against the step.
    Returns the PNG written, or None when the model directory has no `trainer_state.json`."""
    found = read_log_history(model_dir)
    if found is None:
        return None
    state_path, history = found
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        points = metric_series(history, key)
        return list(zip(*points, strict=True)) if points else None

    loss_keys = ["loss", "loss_ce", "loss_cos", "loss_con", "loss_div"]
    metric_keys = ["eval_clip_s", "eval_cider", "eval_bleu_4", "eval_semantic_accuracy"]
    figure, (losses, metrics) = plt.subplots(1, 2, figsize=(12, 4.2))
    for key in loss_keys:
        if points := series(key):
            line = losses.plot(*points, label=key, linewidth=1.2)[0]
            if eval_points := series(f"eval_{key}"):
                losses.plot(*eval_points, "o--", color=line.get_color(), label=f"eval_{key}", markersize=4)
    losses.set(xlabel="step", ylabel="loss", title="Loss terms (lines: training, dots: evaluation)")
    losses.legend(fontsize=8)
    for key in metric_keys:
        if points := series(key):
            metrics.plot(*points, "o-", label=key[len("eval_") :], markersize=4)
    metrics.set(xlabel="step", title="Evaluation captions")
    if metrics.lines:
        metrics.legend(fontsize=8)
    for axis in (losses, metrics):
        axis.grid(alpha=0.3)
    figure.suptitle(f"Training curves from {state_path}", fontsize=9)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def _thumbnail(image, size: int = 160) -> str:
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
th { background: #f4f4f4; }
#summary td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
#gallery th[data-sort] { cursor: pointer; white-space: nowrap; }
#gallery th[data-sort]:hover { background: #e4e4ff; }
#gallery td.num { text-align: right; font-variant-numeric: tabular-nums; }
#gallery .caption { font-weight: 600; }
#gallery ul { margin: 0; padding-left: 18px; color: #555; }
.errors { color: #b00; }
.meta { color: #555; }
.name { color: #555; font-size: 11px; max-width: 160px; overflow-wrap: anywhere; }
"""

_SCRIPT = """
document.querySelectorAll("#gallery th[data-sort]").forEach(th => th.addEventListener("click", () => {
  const body = document.querySelector("#gallery tbody"), key = th.dataset.sort;
  const ascending = th.dataset.order !== "ascending";
  document.querySelectorAll("#gallery th[data-sort]").forEach(other => delete other.dataset.order);
  th.dataset.order = ascending ? "ascending" : "descending";
  const value = row => { const v = parseFloat(row.dataset[key]); return isNaN(v) ? -Infinity : v; };
  [...body.rows].sort((a, b) => (ascending ? 1 : -1) * (value(a) - value(b))).forEach(row => body.appendChild(row));
}));
"""


def write_html_report(
    output: Path,
    report: dict,
    images: list,
    captions: list[str],
    references: list[list[str]],
    per_image: dict[str, list],
    curves: Path | None,
    names: list[str] | None = None,
) -> None:
    """One page: the summary table, the training curves, and the gallery (worst CLIP-S first; click a score's
    heading to sort by it). `names` (file paths or sample ids) label the images."""
    escape = html.escape
    results, systems = report["results"], list(report["results"])
    summary = "\n".join(
        f"<tr><td>{escape(label)}</td>" + "".join(f"<td>{value}</td>" for value in values) + "</tr>"
        for label, values in summary_rows(results)
    )
    curves_html = "<p class=meta>No trainer_state.json next to the model: no training curves.</p>"
    if curves is not None:
        encoded = base64.b64encode(Path(curves).read_bytes()).decode()
        curves_html = f'<img alt="training curves" src="data:image/png;base64,{encoded}" style="max-width:100%">'

    scores = [key for key in ("clip_s", "ref_clip_s", "cider", "meteor", "bleu_4") if key in per_image]
    order = sorted(range(len(captions)), key=lambda i: per_image["clip_s"][i])
    rows = []
    for i in order:
        values = {key: per_image[key][i] for key in scores}
        data = " ".join(f'data-{key}="{"nan" if v is None else f"{v:.6f}"}"' for key, v in values.items())
        cells = "".join(f'<td class="num">{_format(values[key], 3)}</td>' for key in scores)
        errors = ""
        if "errors" in per_image:
            found = per_image["errors"][i]
            errors = f'<td class="errors">{escape(", ".join(found)) if found else "✓"}</td>'
        refs = "".join(f"<li>{escape(ref)}</li>" for ref in references[i])
        name = f'<div class="name">{escape(names[i])}</div>' if names else ""
        rows.append(
            f'<tr data-index="{i}" {data}><td class="num">{i}</td>'
            f'<td><img alt="image {i}" src="{_thumbnail(images[i])}">{name}</td>'
            f'<td><div class="caption">{escape(captions[i])}</div><ul>{refs}</ul></td>{cells}{errors}</tr>'
        )
    labels = {key: label for key, label, _ in METRIC_ROWS}
    start_order = {"clip_s": ' data-order="ascending"'}  # the gallery starts so: a first click there flips it
    headings = "".join(
        f'<th data-sort="{key}"{start_order.get(key, "")}>{escape(labels[key])} ⇅</th>' for key in scores
    )
    errors_heading = "<th>semantic errors</th>" if "errors" in per_image else ""
    generation = decoding_settings(report["generation"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ClipCap evaluation: {escape(report["model"])}</title>
<style>{_STYLE}</style></head><body>
<h1>ClipCap evaluation</h1>
<p class=meta>Model <code>{escape(report["model"])}</code> on <code>{escape(report["dataset"])}</code>, split
<code>{escape(report["split"])}</code>, {report["images"]} images. CLIP scorer: {escape(report["teacher"])}.
Decoding: {escape(generation)}. Baseline: “{escape(report["baseline_caption"])}” for every image.
References: {escape(report["notes"]["references"])}. SPICE: {escape(report["notes"]["spice"])}.</p>
<h2>Scores</h2>
<table id="summary"><thead><tr><th>metric</th>{"".join(f"<th>{escape(s)}</th>" for s in systems)}</tr></thead>
<tbody>
{summary}
</tbody></table>
<h2>Training curves</h2>
{curves_html}
<h2>Every image, worst CLIP-S first</h2>
<p class=meta>Generated caption in bold, references below. Click a score's heading to sort by it.</p>
<table id="gallery"><thead><tr><th>#</th><th>image</th><th>caption / references</th>{headings}{errors_heading}</tr>
</thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<script>{_SCRIPT}</script>
</body></html>
"""
    atomic_write_text(output, page)


def write_caption_grid(
    output: Path, images: list, captions: list[str], errors: list[list[str]], columns: int = 4, count: int = 16
) -> Path:
    """A PNG of the first `count` images with the caption under each, framed green and marked "right" when the
    checker finds it entirely true, red with its errors when not (the README's picture of the demo)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    count = min(count, len(images))
    cell, text_height, pad = 224, 80, 8
    rows = math.ceil(count / columns)
    sheet = Image.new("RGB", (columns * (cell + pad) + pad, rows * (cell + text_height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i in range(count):
        x = pad + (i % columns) * (cell + pad)
        y = pad + (i // columns) * (cell + text_height + pad)
        sheet.paste(images[i].convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC), (x, y))
        right = not errors[i]
        verdict = "right" if right else "wrong: " + ", ".join(sorted(set(errors[i])))
        lines = textwrap.wrap(captions[i], width=36)[:4] + [verdict]
        colour = (20, 120, 40) if right else (180, 20, 20)
        for line_number, line in enumerate(lines):
            draw.text(
                (x, y + cell + 2 + 15 * line_number), line, fill=colour if line is lines[-1] else "black", font=font
            )
        draw.rectangle([x - 2, y - 2, x + cell + 1, y + cell + 1], outline=colour, width=3)
    output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output)
    return output


def plot_metric_curves(runs: dict[str, str], output: Path, key: str = "eval_semantic_accuracy") -> Path | None:
    """One evaluation metric against the step for several training runs (label -> model directory), e.g. semantic
    accuracy of a CE-only and a CLIP-guided run. Returns the PNG written, or None when no run logged `key`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for label, model_dir in runs.items():
        found = read_log_history(model_dir)
        if found is not None and (points := metric_series(found[1], key)):
            axis.plot(*zip(*points, strict=True), "o-", label=label, markersize=4)
    if not axis.lines:
        plt.close(figure)
        return None
    axis.set(xlabel="step", ylabel=key.removeprefix("eval_").replace("_", " "), ylim=(0, 1))
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def comparison_table(results: dict[tuple[str, str], dict], runs: list[str], rows: list[tuple[str, str, str]]) -> str:
    """A Markdown table with a column per run: `results[run, scorer]` is a run's `run_eval.py` scores by one CLIP
    scorer, and each of `rows` is (label, score key, scorer). Floats to 3 decimals; a score a run lacks is "-"."""
    lines = [f"| on the validation scenes | {' | '.join(runs)} |", "| --- |" + " ---: |" * len(runs)]
    for label, key, scorer in rows:
        values = [results[run, scorer].get(key) for run in runs]
        cells = ["-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in values]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
