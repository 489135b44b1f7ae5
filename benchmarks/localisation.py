"""Where the defects are: how well the default model's anomaly maps find them, 5-fold.

Each fold is fitted as ``anomaly train`` fits (shipped defaults) on the other four and its
held-out images scored with maps. Per fold: pixel AUROC (every fourth pixel, as ``eval``) and
AUPRO to a false-positive rate of 30 %, normalised (``judgement.localisation.aupro``, every
second pixel); per defect type: AUPRO of that type's images with every held-out good image.
The regions, at the model's own pixel threshold: the share of true defect regions one touches,
false regions per good image, the share of good pixels above the threshold (against the share
the model announced, out of fold) and the median over defects of predicted / true area. The size rule: each fold's model recalibrated with
``--min-area`` at the 25th percentile of its training defects' largest region areas, its
announced recall and false alarms against the held-out verdicts under that rule.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from anomalycli.data.tensors import load_mask
from anomalycli.deploy.regions import image_regions
from anomalycli.deploy.scoring import iter_scores
from anomalycli.judgement.localisation import aupro, largest_area, touched_and_false
from anomalycli.judgement.metrics import operating_point, pixel_auroc
from anomalycli.judgement.size_rule import sized_scores
from anomalycli.judgement.thresholds import OperatingRule
from anomalycli.workflows.calibrate import PixelChoices, recalibrate
from benchmarks import folds
from benchmarks.common import fmt, mean, pm, samples_of, shipped_options
from benchmarks.localisation_levers import LEVERS

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
            truth, maps, kinds, labels, raw, largest = [], [], [], [], [], []
            pixel_threshold = model.config["pixel_threshold"]["value"]
            held = [s for s in fold.held_out if s.label == 0 or s.mask]
            for sample, scored in zip(held, iter_scores(model, [s.path for s in held], with_maps=True, show_progress=False)):
                if scored.map is None:
                    continue
                found = image_regions(scored, pixel_threshold)
                labels.append(sample.label)
                raw.append(scored.raw)
                largest.append(largest_area(found))
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
            predicted = [m >= pixel_threshold for m in maps]
            row = {
                "fold": fold.name,
                "map_blur": model.config.get("map_blur"),
                "pixel_head": model.config.get("pixel_head"),  # the kind train kept, and each kind's out-of-fold merit
                "pixel_auroc": pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in truth]), np.concatenate([m[::2, ::2].ravel() for m in maps])),
                "aupro": aupro(truth, maps),
                "per_type": per_type,
                "images": len(truth),
                "pixel_rule": model.config["pixel_threshold"]["rule"],
                **_regions(truth, predicted, kinds),
                "announced_good_pixel_rate": model.config["pixel_threshold"]["good_pixel_rate"],
                # The same held-out maps at the level the goods' rate alone gives: the rule not chosen, where masks chose.
                "by_goods_rate": _regions(truth, [m >= model.config["pixel_threshold"]["goods_value"] for m in maps], kinds),
                "size_rule": _size_rule(model, labels, raw, largest),
            }
            out["folds"].append(row)
            log(
                f"  {data.name} {fold.name}: pixel AUROC {fmt(row['pixel_auroc'])}, AUPRO {fmt(row['aupro'])}, regions touched "
                f"{fmt(row['regions_touched'])}, false regions per good image {fmt(row['false_regions_per_good_image'])}"
            )
        runs.append(out)
    return {"runs": runs}


def _regions(truth: list, predicted: list, kinds: list[str]) -> dict:
    """Predicted regions against the true ones (``touched_and_false``), per defect type too, the
    share of good pixels inside them, and the median over defects of predicted / true area."""
    good = [i for i, k in enumerate(kinds) if not k]
    areas = [p.sum() / t.sum() for t, p, k in zip(truth, predicted, kinds) if k and t.any()]
    return {
        **touched_and_false(truth, predicted),
        "touched_per_type": {
            kind: touched_and_false([truth[i] for i, k in enumerate(kinds) if k == kind], [predicted[i] for i, k in enumerate(kinds) if k == kind])[
                "regions_touched"
            ]
            for kind in sorted({k for k in kinds if k})
        },
        "good_pixel_rate": float(np.mean(np.concatenate([predicted[i].ravel() for i in good]))),
        "area_ratio_median": float(np.median(areas)) if areas else None,
    }


def _size_rule(model, labels: list[int], raw: list[float], largest: list[float]) -> dict:
    """The fold's model under a size rule passing about a quarter of its training defects: what
    calibration announces for it, and the held-out verdicts it gives (``size_rule``)."""
    stored = model.calibration
    defect_areas = [a for a, label in zip(stored.areas, stored.labels) if label == 1 and a > 0]
    if not defect_areas:
        return None
    min_area = float(np.percentile(defect_areas, 25))
    sized, _ = recalibrate(model, OperatingRule(), pixel=PixelChoices(min_area_px=min_area))
    measured = operating_point(labels, sized_scores(raw, largest, min_area), sized.calibration.threshold)
    plain = operating_point(labels, raw, model.calibration.threshold)
    keys = ("recall", "false_alarm_rate")
    return {
        "min_area_px": min_area,
        "announced": {k: sized.calibration.expected[k] for k in keys},
        "measured": {k: measured[k] for k in keys},
        "without_rule": {k: plain[k] for k in keys},
    }


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


def _rate(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


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
    with_regions = [run for run in result["runs"] if all("regions_touched" in r for r in run["folds"])]
    if with_regions:
        lines += [
            "",
            "The regions at the model's pixel threshold (chosen on the defect masks where a fold has 5 or more, as on both sets: "
            "the most true regions touched less false regions per good image), "
            "and at the level the goods' rate of 0.1 % alone gives, on the same held-out maps (means over folds):",
            "",
            "| data | level | true regions touched | per defect type | false regions per good image | good pixels above (announced) | predicted / true area, median |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for run in with_regions:
            folds_ = run["folds"]
            for name, parts, announced in (
                ("the model's", folds_, [r["announced_good_pixel_rate"] for r in folds_]),
                ("goods' 0.1 %", [r["by_goods_rate"] for r in folds_], None),
            ):
                kinds = sorted({k for r in parts for k in r["touched_per_type"]})
                per_type = ", ".join(f"{k} {_rate(mean([r['touched_per_type'][k] for r in parts if r['touched_per_type'].get(k) is not None]))}" for k in kinds)
                said = f" ({100 * mean(announced):.2f} %)" if announced else ""
                lines.append(
                    f"| {run['data']} | {name} | {_rate(mean([r['regions_touched'] for r in parts]))} | {per_type} "
                    f"| {fmt(mean([r['false_regions_per_good_image'] for r in parts]))} "
                    f"| {100 * mean([r['good_pixel_rate'] for r in parts]):.2f} %{said} | {fmt(mean([r['area_ratio_median'] for r in parts]))} |"
                )
        lines += [
            "",
            "The size rule (`calibrate --min-area` at the 25th percentile of each fold's training defects' largest regions): "
            "announced against held-out, means over folds:",
            "",
            "| data | min area (px) | recall: announced / held-out | false alarms: announced / held-out | without the rule, held-out |",
            "| --- | --- | --- | --- | --- |",
        ]
        for run in with_regions:
            rules = [r["size_rule"] for r in run["folds"] if r["size_rule"]]
            if not rules:
                continue

            def avg(part: str, key: str) -> float:
                return mean([rule[part][key] for rule in rules])

            lines.append(
                f"| {run['data']} | {mean([r['min_area_px'] for r in rules]):.0f} | {_rate(avg('announced', 'recall'))} / {_rate(avg('measured', 'recall'))} "
                f"| {_rate(avg('announced', 'false_alarm_rate'))} / {_rate(avg('measured', 'false_alarm_rate'))} "
                f"| recall {_rate(avg('without_rule', 'recall'))}, false alarms {_rate(avg('without_rule', 'false_alarm_rate'))} |"
            )
    lines += ["", "Levers tried on the maps (records, measured once):", "", "| lever | pixel AUROC / AUPRO | outcome | measured |", "| --- | --- | --- | --- |"]
    lines += [f"| {lever} | {effect} | {outcome} | {date} |" for lever, effect, outcome, date in LEVERS]
    return "\n".join(lines)
