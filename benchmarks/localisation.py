"""Where the defects are: how well the default model's anomaly maps find them, 5-fold.

Each fold is fitted as ``anomaly train`` fits (shipped defaults) on the other four and its
held-out images scored with maps. Per fold: pixel AUROC (every fourth pixel, as ``eval``) and
AUPRO to a false-positive rate of 30 %, normalised (``judgement.localisation.aupro``, every
second pixel); per defect type: AUPRO of that type's images with every held-out good image.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from anomalycli.data.tensors import load_mask
from anomalycli.deploy.scoring import iter_scores
from anomalycli.judgement.localisation import aupro
from anomalycli.judgement.metrics import pixel_auroc
from benchmarks import folds
from benchmarks.common import fmt, mean, pm, samples_of, shipped_options

TITLE = "Localisation: pixel AUROC and AUPRO"
K = 5


def run(data_sets: list[Path], quick: bool, log=print) -> dict:
    runs = []
    for data in data_sets:
        samples = samples_of(data, quick)
        out = {"data": data.name, "folds": []}
        for fold in folds.cv_folds(samples, 2 if quick else K):
            options = shipped_options(data, fold.training, quick=quick)
            model, _ = folds.fit(options, fold.training)
            out["method"], out["image_size"] = model.method, model.config["image_size"]
            truth, maps, kinds = [], [], []
            held = [s for s in fold.held_out if s.label == 0 or s.mask]
            for sample, scored in zip(held, iter_scores(model, [s.path for s in held], with_maps=True, show_progress=False)):
                if scored.map is None:
                    continue
                size = scored.map.shape[-1]
                mask = load_mask(sample.mask, size).numpy() if sample.mask else np.zeros((size, size), bool)
                truth.append(mask[::2, ::2])
                maps.append(np.asarray(scored.map, dtype=np.float32)[::2, ::2])
                kinds.append(sample.defect_type or "" if sample.label else "")
            good = [i for i, k in enumerate(kinds) if not k]
            per_type = {}
            for kind in sorted({k for k in kinds if k}):
                chosen = good + [i for i, k in enumerate(kinds) if k == kind]
                per_type[kind] = aupro([truth[i] for i in chosen], [maps[i] for i in chosen])
            row = {
                "fold": fold.name,
                "pixel_auroc": pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in truth]), np.concatenate([m[::2, ::2].ravel() for m in maps])),
                "aupro": aupro(truth, maps),
                "per_type": per_type,
                "images": len(truth),
            }
            out["folds"].append(row)
            log(f"  {data.name} {fold.name}: pixel AUROC {fmt(row['pixel_auroc'])}, AUPRO {fmt(row['aupro'])}")
        runs.append(out)
    return {"runs": runs}


def _per_type(run: dict) -> dict:
    values = defaultdict(list)
    for row in run["folds"]:
        for kind, value in row["per_type"].items():
            if value is not None:
                values[kind].append(value)
    return values


def headline(result: dict, data: str) -> dict:
    run = next((r for r in result["runs"] if r["data"] == data), None)
    if run is None:
        return {}
    return {
        f"{len(run['folds'])}-fold pixel AUROC / AUPRO (to 30 % FPR)": f"{pm([r['pixel_auroc'] for r in run['folds']])} / {pm([r['aupro'] for r in run['folds']])}"
    }


# The levers tried on the maps, each measured once (5-fold, the default model of each set, pixel
# AUROC / AUPRO, means over folds), with what became of it.
LEVERS = [
    (
        "the map's blur sigma 8 px (the maps' only change)",
        "magtiles 0.855 / 0.801, screws 0.991 / 0.949",
        "shipped (4 px before: 0.841 / 0.792, 0.990 / 0.949)",
        "2026-12-02",
    ),
    ("the map's blur sigma 2 px", "magtiles 0.835 / 0.788, screws 0.988 / 0.945", "worse on both", "2026-12-02"),
]


def section(result: dict) -> str:
    lines = [
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
        "",
        "| data | method | pixel AUROC | AUPRO | AUPRO per defect type (mean over folds) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        types = ", ".join(f"{kind} {fmt(mean(v))}" for kind, v in sorted(_per_type(run).items()))
        lines.append(
            f"| {run['data']} | {run['method']} ({run['image_size']} px) | {pm([r['pixel_auroc'] for r in run['folds']])} "
            f"| {pm([r['aupro'] for r in run['folds']])} | {types} |"
        )
    lines += ["", "Levers tried on the maps (records, measured once):", "", "| lever | pixel AUROC / AUPRO | outcome | measured |", "| --- | --- | --- | --- |"]
    lines += [f"| {lever} | {effect} | {outcome} | {date} |" for lever, effect, outcome, date in LEVERS]
    return "\n".join(lines)
