"""The evaluation report: one offline HTML page, its plots as PNG files beside it, and a gallery
of what the model missed, what it flagged wrongly, and the closest calls on both sides.

Nothing on the page is fetched: the CSS is inline and every image is a file in the report
folder. The metrics are ``workflows.evaluate.evaluate``'s report, embedded whole as JSON, so the page
and ``eval --json`` cannot disagree.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomalycli import __version__, files
from anomalycli.data.bit_depth import windows_of
from anomalycli.data.images import load_image
from anomalycli.data.layouts import Sample
from anomalycli.data.tensors import load_mask
from anomalycli.deploy.scoring import Scored, iter_scores
from anomalycli.errors import UserError
from anomalycli.views import heatmaps

CLOSEST_CALLS = 6  # correct verdicts nearest the threshold, on each side, after the mistakes
GALLERY_SIZE = 320  # pixels per panel half


@dataclass
class GalleryItem:
    sample: Sample
    scored: Scored
    kind: str  # missed defect | false alarm | closest call (defect) | closest call (good)
    threshold: float  # on the 0..1 score

    @property
    def distance(self) -> float:
        return abs(self.scored.score - self.threshold)


def gallery(samples: list[Sample], rows: list[Scored], threshold: float, closest: int = CLOSEST_CALLS) -> list[GalleryItem]:
    """Every missed defect and false alarm (farthest from the threshold first), then the closest calls."""
    pairs = [(s, r) for s, r in zip(samples, rows) if r.verdict != "unreadable"]

    def items(kind: str, label: int, verdict: str) -> list[GalleryItem]:
        chosen = [GalleryItem(s, r, kind, threshold) for s, r in pairs if s.label == label and r.verdict == verdict]
        return sorted(chosen, key=lambda item: item.distance, reverse=not kind.startswith("closest"))

    return [
        *items("missed defect", 1, "normal"),
        *items("false alarm", 0, "anomaly"),
        *items("closest call (defect)", 1, "anomaly")[:closest],
        *items("closest call (good)", 0, "normal")[:closest],
    ]


def plot_files(folder: Path, labels: np.ndarray, raw: np.ndarray, raw_threshold: float) -> dict[str, str]:
    """ROC, precision-recall and score histogram with the operating point: {name: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    flagged = raw >= raw_threshold
    saved = {}
    both = labels.min() != labels.max()

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=110)
        plt.close(fig)
        saved[name] = f"{name}.png"

    if both:
        fpr, tpr, _ = roc_curve(labels, raw)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.plot(fpr, tpr, color="#1f4e79")
        ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":")
        ax.plot(flagged[labels == 0].mean(), flagged[labels == 1].mean(), "o", color="#d62728", label="the model's threshold")
        ax.set(xlabel="false-alarm rate (good parts flagged)", ylabel="recall (defects caught)", title="ROC")
        ax.legend(loc="lower right")
        save(fig, "roc")
        precision, recall, _ = precision_recall_curve(labels, raw)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.plot(recall, precision, color="#1f4e79")
        at = labels[flagged].mean() if flagged.any() else 1.0
        ax.plot(flagged[labels == 1].mean(), at, "o", color="#d62728", label="the model's threshold")
        ax.set(xlabel="recall (defects caught)", ylabel="precision (flags that are defects)", title="precision-recall", ylim=(0, 1.02))
        ax.legend(loc="lower left")
        save(fig, "precision_recall")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.histogram_bin_edges(raw, bins=40)
    ax.hist(raw[labels == 0], bins=bins, alpha=0.6, color="#2ca02c", label=f"good ({int((labels == 0).sum())})")
    if (labels == 1).any():
        ax.hist(raw[labels == 1], bins=bins, alpha=0.6, color="#d62728", label=f"defective ({int((labels == 1).sum())})")
    ax.axvline(raw_threshold, color="black", linestyle="--", label="threshold")
    ax.set(xlabel="raw score", ylabel="images", title="scores")
    ax.legend()
    save(fig, "scores")
    return saved


def gallery_files(folder: Path, model, items: list[GalleryItem]) -> list[str]:
    """One panel per item (image | heat map with the flagged region and the true defect outlined)."""
    names = []
    maps = {}
    if model.has_maps and items:
        paths = [item.sample.path for item in items]
        maps = {r.path: r.map for r in iter_scores(model, paths, with_maps=True, show_progress=False)}
    scale = heatmaps.map_scale(model) if maps else None
    for i, item in enumerate(items):
        image = load_image(item.sample.path, windows_of(model.config))
        image.thumbnail((GALLERY_SIZE, GALLERY_SIZE))
        picture = image.convert("RGB")
        anomaly_map = maps.get(item.sample.path)
        if anomaly_map is not None:
            truth = load_mask(item.sample.mask, anomaly_map.shape[-1]).numpy() if item.sample.mask else None
            picture = heatmaps.panel(image, heatmaps.overlay(image, anomaly_map, scale, truth, flagged=item.scored.verdict == "anomaly"))
        name = f"gallery/{i:03d}.png"
        picture.save(folder / name)
        names.append(name)
    return names


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _interval(values) -> str:
    return f" ({_fmt(values[0])}–{_fmt(values[1])})" if values else ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.plots img { max-width: 32%; margin-right: 1%; } .wide img { max-width: 60%; }
.gallery { display: flex; flex-wrap: wrap; gap: 16px; } figure { margin: 0; width: 520px; }
figure img { max-width: 100%; border: 1px solid #ccc; } figcaption { font-size: .9em; }
.missed, .alarm, .warning { color: #b00020; font-weight: bold; } .settings td { text-align: left; } code { background: #f3f3f3; padding: 0 .3em; }
"""


def page(report: dict, plots: dict[str, str], items: list[GalleryItem], pictures: list[str], about: dict, legend: str) -> str:
    cm = report["confusion_matrix"]
    point = report["operating_point"]
    headline = _table(
        ["metric", "value (95 % interval)"],
        [
            ["recall (defects caught)", _fmt(point["recall"]) + _interval(point.get("recall_ci"))],
            ["false-alarm rate (good parts flagged)", _fmt(point["false_alarm_rate"]) + _interval(point.get("false_alarm_rate_ci"))],
            ["precision", _fmt(report["precision"])],
            ["F1", _fmt(report["f1"]) + _interval(report.get("f1_ci"))],
            ["AUROC", _fmt(report["auroc"]) + _interval(report.get("auroc_ci"))],
            ["balanced accuracy", _fmt(report["balanced_accuracy"])],
            ["average precision", _fmt(report["average_precision"])],
            ["pixel AUROC", _fmt(report.get("pixel_auroc"))],
            ["AUPRO (to 30% FPR)", _fmt(report.get("aupro"))],
            ["true defect regions a predicted region touches", _fmt(report.get("regions_touched"))],
            ["false regions per good image", _fmt(report.get("false_regions_per_good_image"))],
        ],
    )
    confusion = _table(
        ["", "predicted good", "predicted defective"],
        [
            ["good", str(cm["tn"]), str(cm["fp"])],
            ["defective", str(cm["fn"]), str(cm["tp"])],
        ],
    )
    per_type = (
        _table(["defect type", "images", "recall"], [[html.escape(name), str(v["n"]), _fmt(v["recall"])] for name, v in report["per_defect_type"].items()])
        if report["per_defect_type"]
        else ""
    )
    trade = (
        _table(
            ["false alarms at most", "recall", "false alarms", "--threshold"],
            [
                [f"{100 * row['max_false_alarm_rate']:g} %", _fmt(row["recall"]), _fmt(row["false_alarm_rate"]), row["threshold_text"]]
                for row in report["trade_off"]
            ]
            + [["<b>the model's point</b>", _fmt(point["recall"]), _fmt(point["false_alarm_rate"]), f"{point['threshold']:.3f}"]],
        )
        if report["trade_off"]
        else ""
    )
    settings = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in about.items())
    figures = []
    for item, picture in zip(items, pictures):
        css = {"missed defect": "missed", "false alarm": "alarm"}.get(item.kind, "")
        kind = item.sample.defect_type or item.sample.class_name
        figures.append(
            f'<figure><img src="{html.escape(picture)}" alt="{html.escape(item.sample.path.name)}"><figcaption>'
            f'<span class="{css}">{html.escape(item.kind)}</span>: {html.escape(str(item.sample.path))} ({html.escape(kind)})<br>'
            f"score {item.scored.score:.3f} against the threshold {item.threshold:.3f} (raw {item.scored.raw:.4g})</figcaption></figure>"
        )
    counts = {k: sum(i.kind == k for i in items) for k in ("missed defect", "false alarm")}
    plot_html = "".join(f'<img src="{plots[name]}" alt="{name}">' for name in ("roc", "precision_recall") if name in plots)
    metrics_json = html.escape(json.dumps(report, default=str), quote=False)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anomalycli evaluation</title><style>{STYLE}</style></head>
<body>
<h1>Evaluation of {html.escape(str(about["model"]))}</h1>
<p>{report["n_images"]} images of {html.escape(str(about["data"]))}; the model calls an image defective at a score of
{report["threshold"]:.3f} or more ({html.escape(str(report["calibration"]["rule"]))}).</p>
{_drift_html(report.get("drift"))}
{_trained_on_html(report.get("trained_on"))}
<h2>Headline</h2>{headline}
<h2>Confusion matrix</h2>{confusion}
{"<h2>Recall per defect type</h2>" + per_type if per_type else ""}
{"<h2>Trade-off on these images</h2><p>Recall at a false-alarm rate, and the <code>--threshold</code> that gives it (predict and eval take it; <code>anomaly calibrate</code> makes it the model's own).</p>" + trade if trade else ""}
<h2>Curves</h2><div class="plots">{plot_html}</div>
{f'<div class="wide"><img src="{plots["scores"]}" alt="score histogram"></div>' if "scores" in plots else ""}
<h2>Gallery</h2>
<p>{counts["missed defect"]} missed defect(s) and {counts["false alarm"]} false alarm(s), farthest from the threshold first,
then the closest calls on each side. Left: the image; right: {html.escape(legend)}. Green outlines the true defect where a mask is known.</p>
<div class="gallery">{"".join(figures)}</div>
<h2>Made from</h2><table class="settings">{settings}</table>
<script type="application/json" id="metrics">{metrics_json}</script>
</body></html>
"""


def _drift_html(drift: dict | None) -> str:
    """The drift check's verdict, above the headline: the numbers below may not hold when it warns."""
    if not drift:
        return ""
    if not drift["checked"] or not drift["drift"]:
        text = drift["message"] or f"Drift check: these {drift['n_images']} images look like the training data (no test significant)."
        return f"<p>{html.escape(text)}</p>"
    return f'<p class="warning">{html.escape(drift["message"])}</p>'


def _trained_on_html(trained_on: dict | None) -> str:
    """Above the headline too: figures on images the model has seen are optimistic."""
    if not trained_on or not trained_on["message"]:
        return ""
    text = f'<p class="warning">{html.escape(trained_on["message"][0].upper() + trained_on["message"][1:])}.</p>'
    point = trained_on.get("unseen_point")
    if point:
        text += (
            f"<p>Measured on the {point['n_normal'] + point['n_anomaly']} images it was not trained on: recall {_fmt(point['recall'])}"
            f"{_interval(point['recall_ci'])}, false-alarm rate {_fmt(point['false_alarm_rate'])}{_interval(point['false_alarm_rate_ci'])}.</p>"
        )
    return text


def check_folder(folder: Path, overwrite: bool) -> None:
    """Refuse to replace anything unasked (checked before scoring, and again before writing)."""
    if folder.exists() and not (folder.is_dir() and not any(folder.iterdir())) and not overwrite:
        raise UserError(f"{folder} already exists; choose another --report folder or pass --overwrite to replace it")


def write_report(folder: str | Path, report: dict, samples: list[Sample], rows: list[Scored], model, about: dict, overwrite: bool = False) -> Path:
    """Write the report folder whole or not at all: built beside it, then renamed into place."""
    folder = Path(folder)
    check_folder(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    build = files.staging_folder(folder)
    try:
        (build / "gallery").mkdir()
        readable = [(s, r) for s, r in zip(samples, rows) if r.verdict != "unreadable"]
        labels = np.array([s.label for s, _ in readable])
        raw = np.array([r.raw for _, r in readable])
        plots = plot_files(build, labels, raw, model.calibration.raw_threshold(report["threshold"])) if len(readable) else {}
        items = gallery(samples, rows, report["threshold"])
        pictures = gallery_files(build, model, items)
        legend = heatmaps.map_scale(model).describe() if model.has_maps else "no heat map (this method has none)"
        about = {**about, "anomalycli": __version__}
        (build / "index.html").write_text(page(report, plots, items, pictures, about, legend), encoding="utf-8")
        (build / "metrics.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            os.replace(folder, old / "report")
            os.replace(build, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(build, folder)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return folder / "index.html"
