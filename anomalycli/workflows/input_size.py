"""``anomaly train``'s input size for patchcore and hybrid models, chosen from the data: the sizes
``data/resolution.py`` plans are each fitted in full, and the one whose out-of-fold verdicts are
best within the budget of predict time an image is kept, its trade-off written into the model's
config (``input_size``) for train to print.

A larger size must earn its cost: it is kept only where its out-of-fold AUROC is higher and, at
the default size's announced false-alarm rate, it catches at least as many of the defects out of
fold, because a ranking that improves at its top can still catch fewer where the line operates.
The two are compared at one false-alarm rate on their out-of-fold scores, not each at its own
threshold: each threshold is chosen on a few dozen defects, and that choice alone moved the
screws' recall by 2-3 defects between sizes whose held-out verdicts both favoured the larger
(BENCHMARKS.md, "Resolution").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from anomalycli.data.bit_depth import windows_of
from anomalycli.data.framing import framing_of
from anomalycli.data.layouts import Sample
from anomalycli.data.resolution import SizePlan, plan_for_samples
from anomalycli.data.tensors import load_all
from anomalycli.detection.defaults import DEFAULT_IMAGE_SIZE
from anomalycli.detection.methods import AnomalyModel
from anomalycli.judgement.metrics import auroc

log = logging.getLogger("anomalycli")

# Images the fitted model's scoring (with maps) is timed on, and in batches of how many.
TIMED_IMAGES, TIMED_BATCH = 16, 8


@dataclass
class Trial:
    size: int
    auroc: float | None
    recall: float | None
    false_alarms: float | None
    ms_per_image: float | None  # None where only one size was planned: nothing to weigh it against
    fit_seconds: float
    bank_patches: int
    recall_at_default_point: float | None = None  # out of fold, at the default size's announced false-alarm rate

    def to_dict(self) -> dict:
        return dict(vars(self))


def plan_for(samples: list[Sample], method: str, default: int | None = None) -> SizePlan:
    """The sizes to try for these samples, from ``default`` (the method's default size unless
    given: the benchmarks' quick run starts small)."""
    return plan_for_samples(samples, default or DEFAULT_IMAGE_SIZE[method])


def fit_best_size(options, samples: list[Sample], fit_at, default: int | None = None) -> tuple[AnomalyModel, list[dict], list[str]]:
    """``fit_at(options)`` at each planned size (``options.image_size`` None: chosen here; ``plan_for``
    from ``default``); the best fit's model, history and notes, its config holding every trial."""
    plan = plan_for(samples, options.method, default)
    log.info(f"input size: {plan.reason}")
    trials: list[Trial] = []
    fits, not_tried = {}, []
    for size in plan.candidates:
        # At least the default size's time by the pixels: the bank grows with them too.
        estimate = trials[0].ms_per_image * (size / plan.default) ** 2 if trials else 0.0
        if estimate > options.max_ms_per_image:
            not_tried.append(
                f"{size} px not tried: about {estimate:.0f} ms an image at least "
                f"(from {plan.default} px's), over the budget of {options.max_ms_per_image:g} ms (--max-ms-per-image)"
            )
            log.info(f"input size {not_tried[-1]}")
            continue
        if len(plan.candidates) > 1:
            log.info(f"input size {size} px: fitting")
        start = time.perf_counter()
        fits[size] = fit_at(replace(options, image_size=size))
        trials.append(_trial(fits[size][0], samples, size, time.perf_counter() - start, timed=len(plan.candidates) > 1))
    point = trials[0].false_alarms
    for trial in trials:
        trial.recall_at_default_point = None if point is None else recall_at(fits[trial.size][0], point)
    chosen = _choose(trials, options.max_ms_per_image)
    model, history, notes = fits[chosen.size]
    model.config["input_size"] = {
        "chosen": chosen.size,
        "why": "; ".join([_why(chosen, trials, options.max_ms_per_image), *not_tried]),
        "plan": plan.to_dict(),
        "trials": [t.to_dict() for t in trials],
        "max_ms_per_image": options.max_ms_per_image,
    }
    return model, history, notes


def recall_at(model: AnomalyModel, false_alarm_rate: float) -> float | None:
    """The share of the model's out-of-fold defect scores above the threshold that flags at most
    ``false_alarm_rate`` of its out-of-fold good scores (None without defects)."""
    labels, scores = np.asarray(model.calibration.labels), np.asarray(model.calibration.scores, dtype=np.float64)
    good, defects = np.sort(scores[labels == 0])[::-1], scores[labels == 1]
    if not len(defects) or not len(good):
        return None
    allowed = int(np.floor(false_alarm_rate * len(good) + 1e-9))  # goods that may score above it
    threshold = good[allowed] if allowed < len(good) else -np.inf
    return float((defects > threshold).mean())


def _choose(trials: list[Trial], budget: float) -> Trial:
    base = trials[0]
    better = [t for t in trials[1:] if t.ms_per_image <= budget and _beats(t, base)]
    return max(better, key=lambda t: (t.recall_at_default_point, t.auroc)) if better else base


def _beats(trial: Trial, base: Trial) -> bool:
    known = None not in (trial.auroc, base.auroc, trial.recall_at_default_point, base.recall_at_default_point)
    return known and trial.auroc > base.auroc and trial.recall_at_default_point >= base.recall_at_default_point


def _why(chosen: Trial, trials: list[Trial], budget: float) -> str:
    if len(trials) == 1:
        return "the only size fitted"
    base = trials[0]
    if chosen is not base:
        return f"higher out-of-fold AUROC than {base.size} px, and as many defects caught or more at {base.size} px's announced false alarms"
    reasons = []
    for t in trials[1:]:
        if t.ms_per_image > budget:
            reasons.append(f"{t.size} px over the budget of {budget:g} ms an image")
        elif not _beats(t, base):
            reasons.append(f"{t.size} px no better out of fold")
    return "; ".join(reasons)


def _trial(model: AnomalyModel, samples: list[Sample], size: int, fit_seconds: float, timed: bool) -> Trial:
    calibration = model.calibration
    expected = calibration.expected or {}
    return Trial(
        size,
        auroc(np.asarray(calibration.labels), np.asarray(calibration.scores)),
        expected.get("recall"),
        expected.get("false_alarm_rate"),
        _ms_per_image(model, samples, size) if timed else None,
        fit_seconds,
        int(model.config.get("bank_size", 0)),
    )


def _ms_per_image(model: AnomalyModel, samples: list[Sample], size: int) -> float:
    """The model's scoring with maps, as predict scores, on a few training images: ms an image on
    this CPU (the images' decoding not counted: predict overlaps it)."""
    images, _, _ = load_all(samples[:TIMED_IMAGES], size, framing_of(model.config), windows_of(model.config))
    if not len(images):
        return float("nan")
    with torch.inference_mode():
        model.score(images[:TIMED_BATCH], with_maps=True)  # warm
        start = time.perf_counter()
        for i in range(0, len(images), TIMED_BATCH):
            model.score(images[i : i + TIMED_BATCH], with_maps=True)
    return 1000 * (time.perf_counter() - start) / len(images)
