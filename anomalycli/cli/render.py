"""Everything a person sees: Rich tables, curve plots and heat-map overlays. Imported by cli/ only."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from anomalycli import files

console = Console()
err_console = Console(stderr=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_json(path: str | Path, data, overwrite: bool) -> None:
    files.write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", overwrite)


# --- inspect -----------------------------------------------------------------------------


def _heading(text: str, style: str = "bold") -> Text:
    """A heading on a line of its own: a table's title would wrap inside the table's width."""
    return Text(text, style=style)


def _note(text: str) -> Text:
    return Text(text, style="dim")


def inspection_tables(facts: dict) -> list:
    """What ``anomaly inspect`` prints: headings and notes as lines of their own, tables between."""
    classes = sorted({c for counts in facts["counts"].values() for c in counts})
    counts = Table()
    counts.add_column("split")
    for c in classes:
        counts.add_column(c + (" (normal)" if c == facts["normal_class"] else ""), justify="right")
    counts.add_column("total", justify="right")
    for split, row in facts["counts"].items():
        counts.add_row(split, *[str(row.get(c, 0)) for c in classes], str(sum(row.values())))
    ratio = facts["imbalance_ratio"]
    imbalance = f"imbalance {ratio:.1f}:1 — {facts['imbalance_verdict']}" if ratio else facts["imbalance_verdict"]
    out = [_heading(f"{facts['root']}: {facts['layout']}"), counts, Text(imbalance)]
    if "test" not in facts["counts"]:
        out.append(
            _note(
                "no test split: train fits on every image here, so eval on them would be optimistic; to measure a model on images "
                "it has not seen, hold some out: anomaly split --test-ratio 0.2, then train and eval with --manifest split.csv"
            )
        )
    turned = facts.get("orientation")
    if turned:
        out.append(Text(f"orientation (patchcore, from a few goods): {turned['kind']}: {turned['reason']}"))
    levels = facts.get("levels")
    if levels:
        out.append(Text(f"levels (patchcore, hybrid): {levels['kind']}: {levels['reason']}"))

    if facts["defect_types"]:
        types = Table()
        types.add_column("defect type")
        types.add_column("images", justify="right")
        for name, n in facts["defect_types"].items():
            types.add_row(name, str(n))
        out += [_heading("defect types"), types]

    out += [_heading("image sizes"), *size_lines(facts)]

    if facts["unreadable"]:
        bad = Table()
        bad.add_column("problem")
        for item in facts["unreadable"]:
            bad.add_row(item["error"])
        out += [_heading(f"unreadable files ({len(facts['unreadable'])})", "bold red"), bad]
    if facts["duplicates"]:
        dup = Table()
        dup.add_column("files")
        dup.add_column("splits")
        for group in facts["duplicates"]:
            style = "bold red" if group["leak"] or group["conflicting_labels"] else None
            note = " LEAK between splits" if group["leak"] else ""
            note += " CONFLICTING labels" if group["conflicting_labels"] else ""
            dup.add_row("\n".join(group["paths"]), ", ".join(group["splits"]) + note, style=style)
        out += [_heading(f"exact duplicates ({len(facts['duplicates'])} groups)"), dup]
    return out


def size_lines(facts: dict) -> list:
    """The sizes section: a few lines whatever the number of sizes (``--json`` lists every one)."""
    summary = facts["size_summary"]
    modes = "modes: " + ", ".join(f"{m} ({n})" for m, n in facts["image_modes"].items())
    saved_as = ", ".join(f"{e} ({n})" for e, n in facts.get("saved_as", {}).items())
    modes += (f"; saved as: {saved_as}" if saved_as else "") + f"; masks found: {facts['masks']}"
    if summary is None:
        return [Text("no readable images"), Text(modes)]
    if summary["n_distinct"] == 1:
        lines = [Text(f"{summary['most_common'][0]['size']}, all {summary['n_images']} images")]
    else:
        grid = Table.grid(padding=(0, 2))
        for _ in range(4):
            grid.add_column(justify="right")
        grid.add_row("", "min", "median", "max")
        for side in ("width", "height"):
            grid.add_row(side, *(f"{summary[side][k]:g}" for k in ("min", "median", "max")))
        aspect = summary["aspect"]
        common = ", ".join(f"{c['size']} ({c['images']})" for c in summary["most_common"])
        others = f"; {summary['n_other_sizes']} other sizes" if summary["n_other_sizes"] else ""
        lines = [
            Text(f"{summary['n_distinct']} distinct sizes over {summary['n_images']} images"),
            grid,
            Text(f"width / height {aspect['min']:.2f} to {aspect['max']:.2f}; {summary['square_share']:.0%} square"),
            Text(f"most common: {common}{others}"),
        ]
    lines.append(Text(modes))
    if facts.get("resize_note"):
        lines.append(_note(facts["resize_note"]))
    plan = facts.get("input_sizes")
    if plan:
        sizes = " and ".join(f"{size} px" for size in plan["candidates"])
        lines.append(Text(f"train (patchcore, hybrid) would try {sizes}: {plan['reason']}"))
    return lines


# --- eval --------------------------------------------------------------------------------


def confusion_table(report: dict, class_names: list[str]) -> Table:
    cm = report["confusion_matrix"]
    table = Table(title="confusion matrix (rows actual, columns predicted)")
    table.add_column("")
    table.add_column(f"predicted {class_names[0]}", justify="right")
    table.add_column(f"predicted {class_names[1]}", justify="right")
    table.add_row(f"actual {class_names[0]}", str(cm["tn"]), f"[red]{cm['fp']}[/red]")
    table.add_row(f"actual {class_names[1]}", f"[red]{cm['fn']}[/red]", str(cm["tp"]))
    return table


def metrics_table(report: dict) -> Table:
    table = Table(title=f"metrics on {report['n_images']} images (anomaly = positive)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    cis = {"f1": report.get("f1_ci"), "auroc": report.get("auroc_ci")}
    for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc", "average_precision", "pixel_auroc", "aupro"):
        if key in ("pixel_auroc", "aupro") and report.get(key) is None:
            continue
        ci = cis.get(key)
        table.add_row(key, _fmt(report.get(key)), f"{ci[0]:.3f} – {ci[1]:.3f}" if ci else "")
    cal = report["calibration"]
    table.caption = f"threshold chosen by {cal['rule']}"
    return table


def _rate(value, interval) -> str:
    text = f"{100 * value:.1f}%"
    return text + (f" (95% CI {100 * interval[0]:.1f}-{100 * interval[1]:.1f}%)" if interval else "")


def operating_point_text(point: dict | None, when: str) -> str:
    """'recall 91.0% (95% CI ...), false alarms 4.1% (...), on 320 good and 50 defective images'."""
    if not point:
        return "no expected recall or false-alarm rate: the model file predates them (anomaly calibrate MODEL DATA adds them)"
    parts = []
    if point["recall"] is not None:
        parts.append(f"defects caught {_rate(point['recall'], point['recall_ci'])}")
    if point["false_alarm_rate"] is not None:
        parts.append(f"good parts flagged {_rate(point['false_alarm_rate'], point['false_alarm_rate_ci'])}")
    return f"{when}: " + ", ".join(parts) + f"; from {point['n_normal']} good and {point['n_anomaly']} defective images"


def trade_off_table(rows: list[dict], model_point: dict) -> Table:
    """Recall at fixed false-alarm rates on the evaluated images, beside the model's own point."""
    table = Table(title="trade-off on these images: recall at a false-alarm rate")
    table.add_column("false alarms at most", justify="right")
    table.add_column("recall", justify="right")
    table.add_column("false alarms", justify="right")
    table.add_column("--threshold", justify="right")
    for row in rows:
        table.add_row(f"{100 * row['max_false_alarm_rate']:g}%", _fmt(row["recall"]), _fmt(row["false_alarm_rate"]), row["threshold_text"])
    table.add_row("model's point", _fmt(model_point["recall"]), _fmt(model_point["false_alarm_rate"]), f"{model_point['threshold']:.3f}", style="bold")
    return table


def defect_table(report: dict) -> Table:
    table = Table(title="recall per defect type")
    table.add_column("type")
    table.add_column("images", justify="right")
    table.add_column("recall", justify="right")
    for kind, row in report["per_defect_type"].items():
        table.add_row(kind, str(row["n"]), _fmt(row["recall"]))
    return table


# --- predict -----------------------------------------------------------------------------


def prediction_table(rows: list[dict], limit: int = 200) -> Table:
    table = Table(title=f"{len(rows)} image{'' if len(rows) == 1 else 's'}" + (f" (first {limit} shown; use --output for all)" if len(rows) > limit else ""))
    table.add_column("path", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("verdict")
    for row in rows[:limit]:
        style = {"anomaly": "bold red", "unreadable": "yellow"}.get(row["verdict"])
        table.add_row(row["path"], _fmt(row["score"]), row["verdict"] if not row["error"] else row["error"], style=style)
    return table


def write_rows(path: str | Path, rows: list[dict], overwrite: bool, about: dict | None = None) -> None:
    """The rows as CSV, or as JSON ``{"images": rows, **about}`` (``about``: facts of the whole run)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        write_json(path, {"images": rows, **(about or {})}, overwrite)
        return
    with files.atomic_path(path, overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path", "score", "raw_score", "verdict", "error"])
            writer.writeheader()
            writer.writerows(rows)


# --- train -------------------------------------------------------------------------------


def curves_png(history: list[dict], path: Path) -> None:
    """Loss, accuracy and per-class validation accuracy per epoch, as the seed script showed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    per_class = [k for k in history[0] if k.startswith("val_acc_")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], label="val")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [r["train_acc"] for r in history], label="train")
    axes[1].plot(epochs, [r["val_acc"] for r in history], label="val")
    axes[1].set_title("accuracy")
    for key in per_class:
        axes[2].plot(epochs, [r[key] for r in history], label=key.removeprefix("val_acc_"))
    axes[2].set_title("validation accuracy per class")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
