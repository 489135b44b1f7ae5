#!/usr/bin/env python
"""What the int8 backbone and the bfloat16 bank search change in the scores (issue 25).

    python benchmarks/precision.py                    # screws and magtiles, 5 folds (about 25 min)
    python benchmarks/precision.py --quick --data DIR # 2 folds of a small subset, for the test suite

For each data set, stratified k-fold CV with the shipped default (``train.fit`` on the other
folds): the model fitted with ``--precision fp32`` and the one fitted with the default int8
backbone score the held-out fold, each at its own threshold; then the int8 model again with the
bank search forced to float32; and, as the control, the fp32 model refitted with another seed
(the verdicts a refit alone flips). Reported: the AUROC of each path (mean over folds), the
verdicts that flip between paths on the same images, recall and false alarms at each model's
own threshold, and each fit's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import QUICK_MAX_IMAGES, subsample  # noqa: E402

from anomalycli import coreset, inference, splits, train  # noqa: E402
from anomalycli.data import discover  # noqa: E402
from anomalycli.metrics import operating_point  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = [REPO.parent / "shared" / "data" / name for name in ("screws", "magtiles")]


def held_out_scores(model, held_out) -> tuple[np.ndarray, np.ndarray]:
    _report, rows = inference.evaluate(model, held_out, n_boot=0, show_progress=False)
    kept = [(s, r) for s, r in zip(held_out, rows) if r.verdict != "unreadable"]
    return np.array([s.label for s, _ in kept]), np.array([r.raw for _, r in kept])


# name -> (backbone precision, seed); "fp32 seed 1" is the control: how many verdicts a refit
# alone flips (other cross-fitting folds, another coreset start), with no change of precision.
PATHS = {"fp32": ("fp32", 0), "int8": ("int8", 0), "fp32 seed 1": ("fp32", 1)}


def fit(data: Path, training, precision: str, seed: int = 0):
    options = train.TrainOptions(data=str(data), precision=precision, device="cpu", seed=seed)
    options.method = train.choose_method(training, options.cv_folds)
    options.validate()
    start = time.perf_counter()
    model, _, _ = train.fit(options, training, [], show_progress=False)
    return model, time.perf_counter() - start


def path_result(labels, scores, threshold) -> dict:
    point = operating_point(labels, scores, threshold)
    return {"auroc": float(skm.roc_auc_score(labels, scores)), "recall": point["recall"], "false_alarm_rate": point["false_alarm_rate"],
            "flagged": (scores >= threshold).tolist()}


def run(data: Path, folds: int, quick: bool, paths=tuple(PATHS), log=print) -> dict:
    samples = discover(data).samples
    if quick and len(samples) > QUICK_MAX_IMAGES:
        samples = subsample(samples, QUICK_MAX_IMAGES)
    assigned = splits.k_folds(samples, folds, seed=0)
    out = {"data": str(data), "folds": []}
    native = coreset.bfloat16_native
    for fold in range(folds):
        held_out = [s for s in assigned if s.fold == fold]
        training = [s for s in assigned if s.fold != fold]
        fold_out = {}
        for name in paths:
            model, seconds = fit(data, training, *PATHS[name])
            labels, scores = held_out_scores(model, held_out)
            fold_out[name] = {**path_result(labels, scores, model.calibration.threshold), "fit_seconds": seconds}
            if name == "int8":
                coreset.bfloat16_native = lambda: False
                try:
                    labels, scores = held_out_scores(model, held_out)
                finally:
                    coreset.bfloat16_native = native
                fold_out["int8 float32 search"] = path_result(labels, scores, model.calibration.threshold)
        out["folds"].append(fold_out)
        log(f"  {data.name} fold {fold}: " + "; ".join(f"{k} auroc {v['auroc']:.4f}" for k, v in fold_out.items()))
    return out


def summary(result: dict) -> dict:
    folds = result["folds"]
    paths = list(folds[0])

    def flips(a: str, b: str) -> tuple[int, int]:
        pairs = [(x, y) for f in folds for x, y in zip(f[a]["flagged"], f[b]["flagged"])]
        return sum(x != y for x, y in pairs), len(pairs)

    pairs = {"int8": "fp32", "int8 float32 search": "int8", "fp32 seed 1": "fp32"}
    return {
        "auroc": {p: statistics.mean(f[p]["auroc"] for f in folds) for p in paths},
        "recall": {p: statistics.mean(f[p]["recall"] for f in folds) for p in paths},
        "false_alarm_rate": {p: statistics.mean(f[p]["false_alarm_rate"] for f in folds) for p in paths},
        "flips": {p: (other, *flips(p, other)) for p, other in pairs.items() if p in paths and other in paths},
        "fit_seconds": {p: statistics.median(f[p]["fit_seconds"] for f in folds) for p in paths if "fit_seconds" in folds[0][p]},
    }


LABELS = {"fp32": "fp32 backbone, float32 search (before)", "int8": "int8 backbone, bfloat16 search (default)",
          "int8 float32 search": "int8 backbone, float32 search", "fp32 seed 1": "fp32 backbone, refitted with --seed 1 (control)"}


def markdown(results: list[dict], command: str) -> str:
    lines = [f"`{command}`", "", "| set | path | AUROC (mean of folds) | recall | false alarms | verdicts flipped against | fit, median of folds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for result in results:
        s, name = summary(result), Path(result["data"]).name
        for path in s["auroc"]:
            flipped = ""
            if path in s["flips"]:
                other, k, n = s["flips"][path]
                flipped = f"{LABELS[other].split(',')[0]}: {k} of {n} ({k / n:.1%})"
            fit_time = f"{s['fit_seconds'][path]:.1f} s" if path in s["fit_seconds"] else ""
            lines.append(f"| {name} | {LABELS[path]} | {s['auroc'][path]:.4f} | {s['recall'][path]:.3f} | {s['false_alarm_rate'][path]:.3f} | {flipped} | {fit_time} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="data set (repeatable; default: screws and magtiles)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 folds of a small subset")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"the fits to compare, of {', '.join(PATHS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here (and the JSON beside it)")
    args = parser.parse_args(argv)
    folds = 2 if args.quick else args.folds
    paths = [p.strip() for p in args.paths.split(",")]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"--paths: unknown {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    results = [run(data, folds, args.quick, paths) for data in (args.data or DATA)]
    command = "python benchmarks/precision.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(results, command.strip())
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
