#!/usr/bin/env python
"""Does the calibrated operating point hold on images no one tuned on? (issue 13)

    python benchmarks/operating_point.py                      # screws and magtiles, patchcore and hybrid, CV and leave-one-type-out
    python benchmarks/operating_point.py --methods classifier --folds 5 --no-loto
    python benchmarks/operating_point.py --quick --data DIR   # 2 folds of a small subset, for the test suite

For every data set and method, with the shipped defaults: stratified k-fold CV, where
``train.fit`` sees only the other folds (patchcore and hybrid cross-fit inside them; the
classifier cuts a stratified 0.1 validation split), and leave-one-type-out (``bench.loto_parts``:
a defect type never fitted or calibrated on). On each held-out fold, at the model's own
threshold: recall, false-alarm rate, balanced accuracy, F1 at the data's defect share and at
50 %, the best of each that any threshold gives on that fold, and whether the recall and
false-alarm rate fall inside the 95 % intervals that calibration announced. Other threshold
rules are compared on the same models from the calibration scores each model file keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn import metrics as skm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import QUICK_MAX_IMAGES, fmt, loto_parts, mean_std, shipped, subsample  # noqa: E402

from anomalycli import inference, io, runtime, splits, train  # noqa: E402
from anomalycli.data import discover  # noqa: E402
from anomalycli.calibration import OperatingRule, choose_threshold  # noqa: E402
from anomalycli.metrics import operating_point  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = [REPO.parent / "shared" / "data" / name for name in ("screws", "magtiles")]


def f1_at_share(labels, scores, threshold: float, share: float) -> float:
    """F1 at ``threshold`` on data where defects make up ``share`` (normal images re-weighted)."""
    labels, flagged = np.asarray(labels), np.asarray(scores) >= threshold
    recall = flagged[labels == 1].mean()
    fpr = flagged[labels == 0].mean()
    precision_denominator = share * recall + (1 - share) * fpr
    precision = share * recall / precision_denominator if precision_denominator else 0.0
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def best_over_thresholds(labels, scores, share: float) -> dict:
    """The best balanced accuracy and F1 (at ``share`` and at 50 %) any threshold gives on these scores."""
    cuts = np.unique(scores)
    return {
        "balanced_accuracy": max(skm.balanced_accuracy_score(labels, scores >= t) for t in cuts),
        "f1": max(f1_at_share(labels, scores, t, share) for t in cuts),
        "f1_50": max(f1_at_share(labels, scores, t, 0.5) for t in cuts),
    }


def at_threshold(labels, scores, threshold: float, share: float) -> dict:
    point = operating_point(labels, scores, threshold)
    return {
        "recall": point["recall"], "false_alarm_rate": point["false_alarm_rate"],
        "balanced_accuracy": (point["recall"] + 1 - point["false_alarm_rate"]) / 2,
        "f1": f1_at_share(labels, scores, threshold, share), "f1_50": f1_at_share(labels, scores, threshold, 0.5),
    }


def inside(value, interval) -> bool | None:
    return None if value is None or interval is None else bool(interval[0] - 1e-12 <= value <= interval[1] + 1e-12)


def consistent(rate: float, n: int, expected: float) -> bool:
    """Whether a fold's measured rate (of n images) is what the announced rate predicts: two-sided binomial test at 5 %.

    The announced interval is for the rate itself; a fold of 10 defects can only measure 0.8, 0.9
    or 1.0, so 1.0 falls outside an interval of 0.77-0.96 while being exactly what 0.9 predicts.
    """
    return bool(binomtest(round(rate * n), n, min(max(expected, 1e-9), 1 - 1e-9)).pvalue >= 0.05)


RULES = {  # name -> rule given the training data's defect share
    "balanced (default)": lambda share: OperatingRule(),
    "F1 at the training share (before)": lambda share: OperatingRule("f1", share),
    "F1 at 50 %": lambda share: OperatingRule("f1", 0.5),
    "recall >= 0.9": lambda share: OperatingRule("recall", 0.9),
    "false alarms <= 0.05": lambda share: OperatingRule("fpr", 0.05),
}


def evaluate_fold(method: str, data: Path, training, held_out, share: float) -> dict:
    options = shipped(method).options(data, "cpu")
    options.validate()
    if method == "classifier":
        fit_part, val_part = splits.train_val_split(training, 0.1, seed=0)
    else:
        fit_part, val_part = training, []
    start = time.perf_counter()
    model, _history, notes = train.fit(options, fit_part, val_part, show_progress=False)
    fit_seconds = time.perf_counter() - start
    _report, rows = inference.evaluate(model, held_out, n_boot=0, show_progress=False)
    kept = [(s, r) for s, r in zip(held_out, rows) if r.verdict != "unreadable"]
    labels = np.array([s.label for s, _ in kept])
    scores = np.array([r.raw for _, r in kept])
    cal = model.calibration
    measured = at_threshold(labels, scores, cal.threshold, share)
    result = {
        "fit_seconds": fit_seconds, "n_normal": int((labels == 0).sum()), "n_anomaly": int((labels == 1).sum()),
        "auroc": float(skm.roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None,
        "measured": measured, "best": best_over_thresholds(labels, scores, share) if len(set(labels.tolist())) == 2 else None,
        "expected": cal.expected, "calibration_images": [cal.n_normal, cal.n_anomaly],
        "recall_inside": inside(measured["recall"], cal.expected["recall_ci"]),
        "false_alarm_rate_inside": inside(measured["false_alarm_rate"], cal.expected["false_alarm_rate_ci"]),
        "notes": notes, "rules": {},
    }
    training_share = float(np.mean(cal.labels))
    for name, make_rule in RULES.items():
        threshold = choose_threshold(cal.labels, cal.scores, make_rule(training_share))
        result["rules"][name] = at_threshold(labels, scores, threshold, share)
    return result


def run(data: Path, method: str, folds: int, loto: bool, quick: bool, log=print) -> dict:
    samples = discover(data).samples
    if quick and len(samples) > QUICK_MAX_IMAGES:
        samples = subsample(samples, QUICK_MAX_IMAGES)
    share = float(np.mean([s.label for s in samples]))
    out = {"data": str(data), "method": method, "share": share, "cv": [], "loto": []}
    assigned = splits.k_folds(samples, folds, seed=0)
    for fold in range(folds):
        held_out = [s for s in assigned if s.fold == fold]
        training = [s for s in assigned if s.fold != fold]
        result = evaluate_fold(method, data, training, held_out, share)
        out["cv"].append(result)
        m = result["measured"]
        log(f"  {data.name} {method} fold {fold}: auroc {fmt(result['auroc'])} recall {fmt(m['recall'])} fpr {fmt(m['false_alarm_rate'])} "
            f"ba {fmt(m['balanced_accuracy'])}/{fmt(result['best']['balanced_accuracy'])} f1 {fmt(m['f1'])}/{fmt(result['best']['f1'])} "
            f"inside {result['recall_inside']}/{result['false_alarm_rate_inside']} fit {result['fit_seconds']:.1f}s")
    if loto:
        for kind, fit_part, calib_part, held_out in loto_parts(samples):
            result = evaluate_fold(method, data, fit_part + calib_part, held_out, share)
            result["kind"] = kind
            out["loto"].append(result)
            log(f"  {data.name} {method} without {kind}: recall {fmt(result['measured']['recall'])} "
                f"fpr {fmt(result['measured']['false_alarm_rate'])} fit {result['fit_seconds']:.1f}s")
    return out


def _pm(values) -> str:
    mean, std = mean_std([v for v in values if v is not None])
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"


def markdown(results: list[dict], command: str) -> str:
    lines = [
        "## Operating point (issue 13)", "", f"Command: `{command}`", "",
        "At the model's own threshold on each held-out CV fold (mean ± std over folds). Best = the best any threshold gives "
        "on that fold (an oracle); gap = best − at the threshold. F1 is at the data's defect share and at 50 %. "
        "Inside = folds whose measured recall / false-alarm rate fall inside the 95 % intervals calibration announced; "
        "consistent = folds whose measured counts a two-sided binomial test (5 %) finds in line with the announced rates "
        "(a fold of 10 defects can only measure 0.8, 0.9 or 1.0).", "",
        "| data | method | AUROC | recall | false alarms | bal. acc. | gap | F1 | gap | F1 at 50 % | gap | recall inside / consistent | false alarms inside / consistent | calibrated on (good + defective) | fit s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        cv = r["cv"]
        gap = lambda key: _pm([f["best"][key] - f["measured"][key] for f in cv])  # noqa: E731
        lines.append(
            f"| {Path(r['data']).name} ({100 * r['share']:.0f} % defects) | {r['method']} | {_pm([f['auroc'] for f in cv])} "
            f"| {_pm([f['measured']['recall'] for f in cv])} | {_pm([f['measured']['false_alarm_rate'] for f in cv])} "
            f"| {_pm([f['measured']['balanced_accuracy'] for f in cv])} | {gap('balanced_accuracy')} "
            f"| {_pm([f['measured']['f1'] for f in cv])} | {gap('f1')} | {_pm([f['measured']['f1_50'] for f in cv])} | {gap('f1_50')} "
            f"| {sum(bool(f['recall_inside']) for f in cv)}/{len(cv)} / {sum(consistent(f['measured']['recall'], f['n_anomaly'], f['expected']['recall']) for f in cv)}/{len(cv)} "
            f"| {sum(bool(f['false_alarm_rate_inside']) for f in cv)}/{len(cv)} / "
            f"{sum(consistent(f['measured']['false_alarm_rate'], f['n_normal'], f['expected']['false_alarm_rate']) for f in cv)}/{len(cv)} "
            f"| {cv[0]['calibration_images'][0]} + {cv[0]['calibration_images'][1]} | {_pm([f['fit_seconds'] for f in cv])} |"
        )
    lines += ["", "Threshold rules compared on the same CV models (thresholds re-chosen from the calibration scores each model keeps): "
              "mean over folds of balanced accuracy and F1 (data share / 50 %) given away against the best on the fold, recall and false alarms.", "",
              "| data | method | rule | recall | false alarms | bal. acc. gap | F1 gap | F1 at 50 % gap |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for name in RULES:
            cv = r["cv"]
            rows = [f["rules"][name] for f in cv]
            gap = lambda key: fmt(float(np.mean([f["best"][key] - row[key] for f, row in zip(cv, rows)])))  # noqa: E731
            lines.append(f"| {Path(r['data']).name} | {r['method']} | {name} | {fmt(float(np.mean([x['recall'] for x in rows])))} "
                         f"| {fmt(float(np.mean([x['false_alarm_rate'] for x in rows])))} | {gap('balanced_accuracy')} | {gap('f1')} | {gap('f1_50')} |")
    if any(r["loto"] for r in results):
        lines += ["", "Leave-one-type-out: the defect type is never fitted or calibrated on; recall of that type and false alarms on "
                  "held-out good images at the calibrated threshold.", "",
                  "| data | method | held-out type | defects | recall | false alarms | expected recall (95 % CI) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results:
            for f in r["loto"]:
                e = f["expected"]
                lines.append(f"| {Path(r['data']).name} | {r['method']} | {f['kind']} | {f['n_anomaly']} | {fmt(f['measured']['recall'])} "
                             f"| {fmt(f['measured']['false_alarm_rate'])} | {fmt(e['recall'])} ({fmt(e['recall_ci'][0])}–{fmt(e['recall_ci'][1])}) |")
            if r["loto"]:
                lines.append(f"| {Path(r['data']).name} | {r['method']} | **mean** | | {_pm([f['measured']['recall'] for f in r['loto']])} "
                             f"| {_pm([f['measured']['false_alarm_rate'] for f in r['loto']])} | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="labelled folder (repeatable; default: screws and magtiles)")
    parser.add_argument("--methods", default="patchcore,hybrid", help="comma-separated methods (default patchcore,hybrid)")
    parser.add_argument("--folds", type=int, default=None, help="CV folds (default 5; 2 with --quick)")
    parser.add_argument("--no-loto", action="store_true", help="skip leave-one-type-out")
    parser.add_argument("--quick", action="store_true", help=f"2 folds on at most {QUICK_MAX_IMAGES} images, for the test suite")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "operating_point.md", help="Markdown report to write")
    parser.add_argument("--json", type=Path, default=None, help="also write every fold's numbers here")
    parser.add_argument("--report-from", type=Path, nargs="+", default=None, metavar="JSON",
                        help="write the report from the --json files of earlier runs, computing nothing")
    args = parser.parse_args(argv)
    command = "python benchmarks/operating_point.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.report_from:
        results = [r for path in args.report_from for r in json.loads(path.read_text())]
        io.write_text(args.out, markdown(results, command.strip()))
        print(f"report written to {args.out}")
        return 0
    runtime.keep_memory_flat()
    results = []
    for data in args.data or DATA:
        for method in args.methods.split(","):
            results.append(run(data, method, args.folds or (2 if args.quick else 5), not args.no_loto, args.quick))
            io.write_text(args.out, markdown(results, command.strip()))
            if args.json:
                io.write_text(args.json, json.dumps(results, indent=1))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
