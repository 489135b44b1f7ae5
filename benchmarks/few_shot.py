"""A new product from a few goods: what `anomaly train` gives from 1 to 16 good images and no defects.

Per data set: a fixed test set (every defect, and 1.5 times as many goods, drawn once), and from the
other goods, ``DRAWS`` random draws of k good images for each k. Each draw is fitted as ``anomaly
train`` fits goods alone (patchcore, the defaults: the bank rule, the orientation check and its
turned copies, leave-one-out cross-fitting, the goods-only threshold) and scored on the test set:
- AUROC, and recall and the false-alarm rate at the model's own threshold;
- the false-alarm rate it announced and its 95 % interval, and whether the test goods' false alarms
  are inside the interval that announcement gives for that many test goods (the count of n new goods
  over the r-th highest of k is Beta-binomial: the interval of the rate, widened by the test's own
  sampling);
- the orientation decision, the turns learnt, the bank's size and the fit's time.
The draws of the most goods are also grown: their first quarter fitted, then `anomaly adapt` given
the rest, as a new product's model learns the goods that arrive later; scored beside the fit on
them all. One good image is refused (cross-fitting needs two): said, not fitted. Last, every good image of
the pool fitted the same way and scored on the same test set: the full-data model the few-goods
bar is measured against (its AUROC less ``FULL_DATA_MARGIN``), and whole `anomaly predict`
processes of it and of the first draw of the most goods on the test set, in turn (the bar: the
few goods' model within ``PREDICT_RATIO_BAR`` of its time an image).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import numpy as np

from anomalycli.data.layouts import discover
from anomalycli.errors import UserError
from anomalycli.judgement.metrics import auroc
from anomalycli.judgement.thresholds import goods_only_rank
from anomalycli.workflows import adapt, evaluate, train
from benchmarks.common import QUICK_IMAGE_SIZE, interleaved_process_seconds, predict_commands, shipped_options

TITLE = "A new product from a few goods"
SHOTS, DRAWS = (1, 2, 4, 8, 16), 5
QUICK_SHOTS, QUICK_DRAWS = (1, 2, 8), 2
TEST_GOODS_PER_DEFECT = 1.5
FULL_DATA_MARGIN = 0.05  # the few-goods issue's bar: 16 goods within this of the full-data model
PREDICT_RATIO_BAR = 1.5  # and its predict's time an image within this of the full-data model's


def predictive_interval(n_goods: int, n_test: int, max_fpr: float = 0.01, level: float = 0.95) -> tuple[int, int]:
    """The central ``level`` interval of the number of ``n_test`` new goods over a goods-only threshold set on ``n_goods``."""
    from scipy import stats

    rank = goods_only_rank(n_goods, max_fpr)
    tail = (1 - level) / 2
    low, high = stats.betabinom.ppf([tail, 1 - tail], n_test, rank, n_goods + 1 - rank)
    return int(low), int(high)


def run(data: Path, quick: bool, log=print) -> dict:
    shots, draws = (QUICK_SHOTS, QUICK_DRAWS) if quick else (SHOTS, DRAWS)
    samples = discover(data).samples
    goods, defects = [s for s in samples if s.label == 0], [s for s in samples if s.label == 1]
    random.Random(0).shuffle(goods)
    n_test_goods = min(len(goods) // 2, int(round(TEST_GOODS_PER_DEFECT * len(defects))))
    test, pool = goods[:n_test_goods] + defects, goods[n_test_goods:]
    labels = np.array([s.label for s in test])
    types = [s.defect_type for s in test]
    rows = []
    most_goods = None  # (k, the model) of the first fitted draw of the most goods
    grown = []
    for k in shots:
        for draw in range(draws):
            picked = random.Random(1000 * k + draw).sample(pool, k)
            if k == max(shots):  # the most goods' draws also grown from their first quarter by adapt
                first = max(2, k // 4)
                grown.append(_grown(data, picked[:first], picked[first:], test, labels, quick, draw))
                log(f"  {data.name} k={k} draw {draw} grown from {first} by adapt: AUROC {grown[-1]['auroc']:.3f}, bank {grown[-1]['bank']}")
            row = {"k": k, "draw": draw}
            try:
                model, raw, row["fit_seconds"] = _fitted_and_scored(data, picked, test, quick)
            except UserError as exc:
                rows.append({**row, "refused": str(exc)})
                log(f"  {data.name} k={k} draw {draw}: refused ({exc})")
                continue
            if most_goods is None or k > most_goods[0]:
                most_goods = (k, model)
            flagged = raw >= model.calibration.threshold
            expected = model.calibration.expected
            low, high = predictive_interval(k, int((labels == 0).sum()))
            false_alarms = int(flagged[labels == 0].sum())
            row.update(
                auroc=auroc(labels, raw),
                auroc_by_type=auroc_by_type(types, raw),
                recall=float(flagged[labels == 1].mean()),
                false_alarm_rate=false_alarms / int((labels == 0).sum()),
                announced=expected["false_alarm_rate"],
                announced_ci=expected["false_alarm_rate_ci"],
                false_alarms_inside=low <= false_alarms <= high,
                orientation=model.config["orientation"]["kind"],
                mirrored=model.config["orientation"]["mirrored"],
                turns=model.config["orientation"]["turns"],
                bank=model.config["bank_size"],
            )
            rows.append(row)
            log(
                f"  {data.name} k={k} draw {draw}: AUROC {row['auroc']:.3f}, recall {row['recall']:.2f}, false alarms {row['false_alarm_rate']:.3f} "
                f"(announced {row['announced']:.3f}, {row['announced_ci'][0]:.3f}-{row['announced_ci'][1]:.3f}; inside: {row['false_alarms_inside']}), "
                f"{row['orientation']}{' mirrored' if row['mirrored'] else ''} x{row['turns']}, bank {row['bank']}, fit {row['fit_seconds']:.1f} s"
            )
    model, raw, fit_seconds = _fitted_and_scored(data, pool, test, quick)
    full = {"goods": len(pool), "fit_seconds": fit_seconds, "auroc": auroc(labels, raw), "auroc_by_type": auroc_by_type(types, raw)}
    full["recall"] = float((raw >= model.calibration.threshold)[labels == 1].mean())
    log(f"  {data.name} all {len(pool)} goods: AUROC {full['auroc']:.3f}, recall {full['recall']:.2f}, fit {full['fit_seconds']:.1f} s")
    if most_goods is not None:
        k, few = most_goods
        ms = _predict_ms({"few": few, "full": model}, test, 1 if quick else 3)
        full.update(predict_ms=ms["full"], few_predict_ms=ms["few"], few_predict_goods=k, few_bank=few.config["bank_size"], bank=model.config["bank_size"])
        log(f"  {data.name} predict: {k} goods' model {ms['few']:.1f} ms an image, the full-data model's {ms['full']:.1f} ms")
    return {
        "data": data.name,
        "test_goods": int((labels == 0).sum()),
        "test_defects": int((labels == 1).sum()),
        "rows": rows,
        "full_data": full,
        "grown": grown,
    }


def _grown(data: Path, first: list, more: list, test: list, labels: np.ndarray, quick: bool, draw: int) -> dict:
    """``first`` goods fitted, then `anomaly adapt` given ``more``: what a model of a new product's
    first goods becomes as more arrive, beside the fit on them all."""
    model, _, _ = _fitted_and_scored(data, first, test, quick)
    start = time.perf_counter()
    adapted = adapt.adapt(model, more).model
    seconds = time.perf_counter() - start
    _, scored = evaluate.evaluate(adapted, test, n_boot=0, show_progress=False)
    raw = np.array([r.raw for r in scored])
    flagged = raw >= adapted.calibration.threshold
    low, high = predictive_interval(len(first) + len(more), int((labels == 0).sum()))
    false_alarms = int(flagged[labels == 0].sum())
    return {
        "draw": draw,
        "first": len(first),
        "added": len(more),
        "auroc": auroc(labels, raw),
        "recall": float(flagged[labels == 1].mean()),
        "false_alarm_rate": false_alarms / int((labels == 0).sum()),
        "announced": adapted.calibration.expected["false_alarm_rate"],
        "false_alarms_inside": low <= false_alarms <= high,
        "bank": adapted.config["bank_size"],
        "turns": adapted.config["orientation"]["turns"],
        "adapt_seconds": seconds,
    }


def auroc_by_type(types: list[str | None], raw: np.ndarray) -> dict[str, float]:
    """The AUROC of each defect type (``types``: None for a good image) against all the goods: where a gap lies."""
    goods = np.array([t is None for t in types])
    out = {}
    for kind in sorted({t for t in types if t is not None}):
        chosen = goods | np.array([t == kind for t in types])
        out[kind] = auroc((~goods[chosen]).astype(int), raw[chosen])
    return out


def _fitted_and_scored(data: Path, goods: list, test: list, quick: bool):
    """``goods`` fitted as ``anomaly train`` fits goods alone (patchcore, the defaults), and
    ``test`` scored: the model, its raw scores on ``test`` and the fit's seconds."""
    options = shipped_options(data, goods, method="patchcore", image_size=QUICK_IMAGE_SIZE if quick else 320)
    start = time.perf_counter()
    model, _, _ = train.fit(options, goods, [], show_progress=False)
    fit_seconds = time.perf_counter() - start
    _, scored = evaluate.evaluate(model, test, n_boot=0, show_progress=False)
    return model, np.array([r.raw for r in scored]), fit_seconds


def _predict_ms(models: dict, test: list, repeats: int) -> dict[str, float]:
    """ms an image of a whole ``anomaly predict`` process of each model (saved as train saves it) over
    ``test``, the processes run in turn, ``repeats`` rounds (medians)."""
    with tempfile.TemporaryDirectory(prefix="bench-few-shot-") as tmp:
        commands = {name: (command, None, None) for name, command in predict_commands(models, test, Path(tmp)).items()}
        return {name: 1000 * seconds / len(test) for name, (seconds, _, _) in interleaved_process_seconds(commands, repeats).items()}


def by_shot(run: dict) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in run["rows"]:
        out.setdefault(row["k"], []).append(row)
    return out


def headline(result: dict, data: str) -> dict:
    run = next((r for r in result["runs"] if r["data"] == data), None)
    if run is None:
        return {}
    cells = []
    for k, rows in by_shot(run).items():
        fitted = [r for r in rows if "auroc" in r]
        if fitted:
            cells.append(f"{k}: {np.mean([r['auroc'] for r in fitted]):.3f} ({sum(r['false_alarms_inside'] for r in fitted)}/{len(fitted)})")
    grown = run.get("grown") or []
    if grown:
        k = grown[0]["first"] + grown[0]["added"]
        inside = sum(g["false_alarms_inside"] for g in grown)
        cells.append(f"{k} grown from {grown[0]['first']} by adapt: {np.mean([g['auroc'] for g in grown]):.3f} ({inside}/{len(grown)})")
    return {"a few goods, no defects: AUROC by goods, mean of draws (draws whose false alarms are inside the announced interval)": "; ".join(cells)}


def grown_line(grown: list[dict], fitted: dict[int, dict]) -> str:
    """One sentence: the models grown by adapt against the same draws fitted at once (``fitted`` by draw)."""
    at_once = [fitted[g["draw"]]["auroc"] for g in grown]
    each = ", ".join(f"{g['auroc']:.3f} against {a:.3f}" for g, a in zip(grown, at_once))
    banks = ", ".join(sorted({f"{g['bank']:,}" for g in grown}))
    k = grown[0]["first"] + grown[0]["added"]
    return (
        f"As goods arrive: each draw of {k} goods also fitted on its first {grown[0]['first']} and given the other {grown[0]['added']} by "
        f"`anomaly adapt`: mean AUROC {np.mean([g['auroc'] for g in grown]):.3f} against {np.mean(at_once):.3f} fitted on all {k} at once ({each}); "
        f"recall {np.mean([g['recall'] for g in grown]):.2f}, false alarms {np.mean([g['false_alarm_rate'] for g in grown]):.3f} measured against "
        f"{grown[0]['announced']:.3f} announced (inside its interval: {sum(g['false_alarms_inside'] for g in grown)} of {len(grown)}); bank {banks}, "
        f"the new goods learnt at {grown[0]['turns']} orientation(s); adapt {np.median([g['adapt_seconds'] for g in grown]):.1f} s (median)."
    )


def section(result: dict) -> str:
    parts = []
    for run in result["runs"]:
        lines = [
            f"**{run['data']}**: test set {run['test_goods']} good and {run['test_defects']} defective images; each k drawn {len(by_shot(run)[max(by_shot(run))])} times from the other goods.",
            "",
            "| good images | AUROC, mean (each draw) | recall at the model's threshold, mean | false alarms measured, mean | announced (95 % interval), first draw | draws inside it | orientation (turns), bank | fit, median |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        most = None  # (k, mean AUROC) of the most goods fitted
        for k, rows in by_shot(run).items():
            fitted = [r for r in rows if "auroc" in r]
            if not fitted:
                lines.append(f"| {k} | refused: {rows[0]['refused']} | | | | | | |")
                continue
            most = (k, float(np.mean([r["auroc"] for r in fitted])))
            first = fitted[0]
            kinds = sorted({f"{r['orientation']}{' mirrored' if r['mirrored'] else ''} ({r['turns']})" for r in fitted})
            each = ", ".join(f"{r['auroc']:.3f}" for r in fitted)
            lines.append(
                f"| {k} | {np.mean([r['auroc'] for r in fitted]):.3f} ({each}) | "
                f"{np.mean([r['recall'] for r in fitted]):.2f} | {np.mean([r['false_alarm_rate'] for r in fitted]):.3f} | "
                f"{first['announced']:.3f} ({first['announced_ci'][0]:.3f}-{first['announced_ci'][1]:.3f}) | "
                f"{sum(r['false_alarms_inside'] for r in fitted)} of {len(fitted)} | {', '.join(kinds)}, {first['bank']:,} | "
                f"{np.median([r['fit_seconds'] for r in fitted]):.1f} s |"
            )
        grown = run.get("grown") or []
        if grown and most is not None:
            lines += ["", grown_line(grown, {r["draw"]: r for r in by_shot(run)[most[0]] if "auroc" in r})]
        full = run.get("full_data")
        if full and most is not None:
            most_k, most_auroc = most
            lines += [
                "",
                f"All {full['goods']} goods of the pool, fitted the same way and scored on the same test set (the full-data model): "
                f"AUROC {full['auroc']:.3f}, recall {full['recall']:.2f} at its threshold, fit {full['fit_seconds']:.0f} s. "
                f"{most_k} goods (the most above), mean AUROC {most_auroc:.3f}: {most_auroc - full['auroc']:+.3f} against it (the few-goods "
                f"issue's bar on the tiles: {-FULL_DATA_MARGIN:+.2f}).",
            ]
            fitted = [r for r in by_shot(run)[most_k] if "auroc_by_type" in r]
            if fitted and "auroc_by_type" in full:
                by_type = ", ".join(
                    f"{kind} {np.mean([r['auroc_by_type'][kind] for r in fitted]):.3f} against {value:.3f}" for kind, value in full["auroc_by_type"].items()
                )
                lines += ["", f"AUROC by defect type (against all the test goods), {most_k} goods (mean of draws) against the full-data model: {by_type}."]
            if "predict_ms" in full:
                lines += [
                    "",
                    f"Whole `anomaly predict` on the test set, processes in turn: the first draw of {full['few_predict_goods']} goods "
                    f"(bank {full['few_bank']:,}) {full['few_predict_ms']:.1f} ms an image against the full-data model's "
                    f"{full['predict_ms']:.1f} (bank {full['bank']:,}): **{full['few_predict_ms'] / full['predict_ms']:.2f}x** (the bar: "
                    f"within {PREDICT_RATIO_BAR}x).",
                ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
