"""Resolution: the input size `anomaly train` chooses from the data, against every size it tried.

Per data set (screws at 512 and 256 px, magtiles), 5 folds. In each, the default fit (no
`--image-size`) fits every size the data plans (`data/resolution.py`) and keeps one
(`workflows/input_size.py`); each size's model is scored on the held-out fold too, so the
default and each size it tried are compared on the same fits: AUROC, the announced recall and
false alarms against those measured on the held-out images at the model's own threshold, pixel
AUROC, fit time. Fold 0's model at each size is then timed in the whole `anomaly predict`
process on the set's images as they are (ms an image, peak memory).

Tiles at native resolution (a 512 px image as 2 x 2 overlapping 320 px tiles) were weighed, not
built: on these images a tile sees the same pixels at the same scale as the 512 px square, which
the backbone already takes whole, and overlapping tiles cost 1.56 x its pixels (see the section).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from anomalycli.workflows import input_size, train
from benchmarks import folds
from benchmarks.common import DATA, fmt, mean, percent, predict_commands, run_measured, samples_of, shipped_options

TITLE = "Resolution: the input size chosen from the data"
SCREWS_512 = DATA[0].parent / "screws-512"
DEFAULT = "default (chosen)"
QUICK_DEFAULT = 32  # --quick: sizes planned from 32 px, so that the 64 px smoke set tries two


def data_sets(given: list[Path], quick: bool) -> list[Path]:
    """The given sets, with the 512 px screws first where they are (not in a quick run)."""
    extra = [SCREWS_512] if SCREWS_512.is_dir() and not quick and SCREWS_512 not in given else []
    return extra + list(given)


def run_set(data: Path, quick: bool, log=print) -> dict:
    samples = samples_of(data, quick)
    start = time.perf_counter()
    default = QUICK_DEFAULT if quick else None
    plan = input_size.plan_for(samples, train.choose_method(samples, 5), default)
    plan_seconds = time.perf_counter() - start
    log(f"  {data.name}: plan {plan.candidates} in {plan_seconds:.2f} s: {plan.reason}")
    outcomes: dict[str, list[folds.Outcome]] = {}
    chosen_sizes, trials = [], []
    fold_zero = {}
    for fold in folds.cv_folds(samples, 2 if quick else 5):
        options = shipped_options(data, fold.training, image_size=None)
        fitted = {}

        def fit_at(sized, fold=fold, fitted=fitted):
            result = train.fit(sized, fold.training, [], show_progress=False)
            fitted[sized.image_size] = result[0]
            return result

        start = time.perf_counter()
        model, _, notes = input_size.fit_best_size(options, fold.training, fit_at, default)
        total = time.perf_counter() - start
        choice = model.config["input_size"]
        chosen_sizes.append(choice["chosen"])
        trials.append({"fold": fold.name, "chosen": choice["chosen"], "why": choice["why"], "trials": choice["trials"]})
        outcomes.setdefault(DEFAULT, []).append(folds.scored(model, fold, total, notes, with_masks=True))
        for trial in choice["trials"]:
            size = trial["size"]
            outcomes.setdefault(f"{size} px", []).append(folds.scored(fitted[size], fold, trial["fit_seconds"], notes, with_masks=True))
        if not fold_zero:
            fold_zero = dict(fitted)
        log(
            f"    {fold.name}: chose {choice['chosen']} px ({choice['why']}); "
            + ", ".join(f"{name} auroc {folds.auroc(o[-1]):.4f}" for name, o in outcomes.items())
        )
    out = {"data": data.name, "plan": plan.to_dict(), "plan_seconds": plan_seconds, "chosen_sizes": chosen_sizes, "trials": trials, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="bench-resolution-") as tmp:
        predict = {}
        for size, command in predict_commands(fold_zero, samples, Path(tmp)).items():
            seconds, peak = run_measured(command)
            predict[f"{size} px"] = (1000 * seconds / len(samples), peak)
    for name, results in outcomes.items():
        size = chosen_sizes[0] if name == DEFAULT and len(set(chosen_sizes)) == 1 else None
        timing = predict.get(name) or (predict.get(f"{size} px") if size else None)
        out["rows"][name] = {
            "auroc": mean([folds.auroc(o) for o in results]),
            "announced_recall": mean([o.expected.get("recall") for o in results]),
            "announced_fpr": mean([o.expected.get("false_alarm_rate") for o in results]),
            "measured_recall": mean([folds.measured(o)["recall"] for o in results]),
            "measured_fpr": mean([folds.measured(o)["false_alarm_rate"] for o in results]),
            "pixel_auroc": mean([o.pixel_auroc for o in results]),
            "fit_seconds": statistics.median(o.fit_seconds for o in results),
            "predict_ms": timing[0] if timing else None,
            "predict_peak_mib": timing[1] if timing else None,
            "n_images": len(samples),
        }
    return out


def run(given: list[Path], quick: bool, log=print) -> dict:
    return {"runs": [run_set(data, quick, log) for data in data_sets(given, quick)]}


def headline(result: dict, data: str) -> dict:
    r = next((r for r in result["runs"] if r["data"] == data), None)
    if r is None:
        return {}
    d = r["rows"][DEFAULT]
    return {
        "input size train chose (5 folds) / AUROC / held-out recall, false alarms / fit, median of folds": (
            f"{', '.join(f'{s} px' for s in sorted(set(r['chosen_sizes'])))} / {fmt(d['auroc'])} / {percent(d['measured_recall'])}, "
            f"{percent(d['measured_fpr'])} / {d['fit_seconds']:.0f} s"
        )
    }


def section(result: dict) -> str:
    lines = [
        __doc__.split("\n\n", 1)[1].split("\n\nTiles", 1)[0].replace("\n", " ").strip(),
        "",
        "| data | what train planned (the plan's own time) | model | AUROC | recall announced / held out | false alarms announced / held out | pixel AUROC | fit, median s | predict ms an image (whole process) / peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        plan = f"{' and '.join(f'{s} px' for s in r['plan']['candidates'])} ({r['plan_seconds']:.2f} s): {r['plan']['reason']}"
        for name, d in r["rows"].items():
            chosen = f", chose {', '.join(f'{s} px' for s in sorted(set(r['chosen_sizes'])))} in {len(r['chosen_sizes'])} folds" if name == DEFAULT else ""
            timing = f"{d['predict_ms']:.1f} / {d['predict_peak_mib']:.0f}" if d["predict_ms"] is not None else "-"
            lines.append(
                f"| {r['data']} ({d['n_images']} images) | {plan} | {name}{chosen} | {fmt(d['auroc'])} | {percent(d['announced_recall'])} / {percent(d['measured_recall'])} "
                f"| {percent(d['announced_fpr'])} / {percent(d['measured_fpr'])} | {fmt(d['pixel_auroc'])} | {d['fit_seconds']:.0f} | {timing} |"
            )
            plan = ""
    lines += [
        "",
        "Tiles at native resolution were weighed and not built. On square images up to 640 px the chosen square already takes every pixel "
        "at its own scale, and 2 x 2 overlapping 320 px tiles of a 512 px image feed the backbone 1.56 x the pixels of the 512 px square for "
        "the same patches (the bank is position-free, so a tile's patches match the square's but for a few cells at the tile edges). They "
        "would pay where a side is far over 640 px; no development set has such images.",
    ]
    return "\n".join(lines)
