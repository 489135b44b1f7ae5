"""Separation: 5-fold and leave-one-type-out AUROC of the shipped methods, on every data set.

The fits here are also what the operating-point topic reads (``operating_point.py``): one set of
held-out scores per data set and method, from ``folds.run``.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import folds
from benchmarks.common import fmt, mean, pm, samples_of, shipped_options

METHODS = ("hybrid", "patchcore")  # the default with labelled defects, and without
TITLE = "Separation: cross-validated and a defect type never seen"


def run(data_sets: list[Path], quick: bool, methods=METHODS, log=print) -> dict:
    runs = []
    for data in data_sets:
        samples = samples_of(data, quick)
        for method in methods:
            options = shipped_options(data, samples, method, quick)
            log(f"  {data.name} {method}: {len(samples)} images, cross-validation and leave-one-type-out")
            cv = folds.run(options, folds.cv_folds(samples, 2 if quick else 5), with_masks=True, log=log)
            loto = folds.run(options, folds.loto_folds(samples)[: 2 if quick else None], log=log)
            runs.append(
                {
                    "data": data.name,
                    "method": method,
                    "backbone": options.backbone,
                    "image_size": options.image_size,
                    "n_good": sum(s.label == 0 for s in samples),
                    "n_defective": sum(s.label == 1 for s in samples),
                    "cv": [o.to_json() for o in cv],
                    "loto": [o.to_json() for o in loto],
                }
            )
    return {"runs": runs}


def default_run(result: dict, data: str) -> dict | None:
    """The run of the method ``anomaly train`` picks for this data set (hybrid: both sets have 5+ defects)."""
    return next((r for r in result["runs"] if r["data"] == data and r["method"] == METHODS[0]), None) or next(
        (r for r in result["runs"] if r["data"] == data), None
    )


def summary(run: dict) -> dict:
    cv, loto = folds.outcomes_from(run["cv"]), folds.outcomes_from(run["loto"])
    points = [folds.measured(o) for o in loto]
    return {
        "auroc": [folds.auroc(o) for o in cv],
        "pixel_auroc": [o.pixel_auroc for o in cv],
        "loto_auroc": [folds.auroc(o) for o in loto],
        "loto_recall": [point["recall"] for point in points],
        "per_type": {o.withheld_type: (folds.auroc(o), point["recall"], point["n_anomaly"]) for o, point in zip(loto, points)},
    }


def headline(result: dict, data: str) -> dict:
    run = default_run(result, data)
    if run is None:
        return {}
    s = summary(run)
    return {
        f"{len(s['auroc'])}-fold AUROC": pm(s["auroc"]),
        "AUROC, a defect type never seen (mean over types)": fmt(mean(s["loto_auroc"])),
    }


def _size(image_size: int | None) -> str:
    """The input size a run fitted at: the shipped default leaves it to train (data/resolution.py)."""
    return f"{image_size} px" if image_size else "the size train chose"


def section(result: dict) -> str:
    lines = [
        "Stratified 5-fold cross-validation (`splits.k_folds`, seed 0): each fold is fitted by `train.fit` on the other four "
        "as `anomaly train` fits (shipped defaults, `--precision auto`), and scored by `inference.evaluate`. Leave-one-type-out: "
        "each defect type in turn is never fitted or calibrated on; it is scored with one of k folds of the good images "
        "(k = the number of types). Mean ± std over folds; recall of the withheld type is at the threshold calibrated without it. "
        "Fit times are the speed topic's (a whole `anomaly train`), not these folds'.",
        "",
        "| data | method | cross-validated AUROC | pixel AUROC | AUROC, type never seen | its recall |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    summaries = [(run, summary(run)) for run in result["runs"]]
    for run, s in summaries:
        lines.append(
            f"| {run['data']} ({run['n_good']} good, {run['n_defective']} defective) | {run['method']} ({run['backbone']}, {_size(run['image_size'])}) "
            f"| {pm(s['auroc'])} | {pm(s['pixel_auroc'])} | {pm(s['loto_auroc'])} | {pm(s['loto_recall'], 2)} |"
        )
    lines += [
        "",
        "Each defect type withheld (AUROC against the held-out good images / recall at the calibrated threshold / defects):",
        "",
        "| data | method | withheld type | AUROC | recall | defects |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run, s in summaries:
        for kind, (auc, recall, n) in s["per_type"].items():
            lines.append(f"| {run['data']} | {run['method']} | {kind} | {fmt(auc)} | {fmt(recall, 2)} | {n} |")
    return "\n".join(lines)
