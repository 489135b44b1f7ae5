"""The one held-out routine every topic uses: cross-validation and leave-one-type-out.

A fold is what is fitted on and what is held out. ``cv_folds`` cuts stratified k folds
(``splits.k_folds``, seed 0); ``loto_folds`` withholds each defect type in turn: every defect of
that type plus a 1/k share of the good images are held out, and nothing of that type is fitted or
calibrated on. ``run`` fits each fold with ``train.fit`` exactly as ``anomaly train`` would
(patchcore and hybrid cross-fit over the whole training part; the classifier cuts its validation
split from it) and scores the held-out part with ``evaluate.evaluate``. What comes back is plain
data (an ``Outcome`` per fold) from which each topic computes its own numbers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from anomalycli.data import splits
from anomalycli.data.layouts import Sample
from anomalycli.workflows import evaluate, train


@dataclass
class Fold:
    name: str  # "fold 0", or the withheld defect type
    training: list[Sample]
    held_out: list[Sample]
    withheld_type: str | None = None


def cv_folds(samples: list[Sample], k: int, seed: int = 0) -> list[Fold]:
    assigned = splits.k_folds(samples, k, seed=seed)
    return [Fold(f"fold {i}", [s for s in assigned if s.fold != i], [s for s in assigned if s.fold == i]) for i in range(k)]


def loto_folds(samples: list[Sample], seed: int = 0) -> list[Fold]:
    kinds = sorted({s.defect_type for s in samples if s.label == 1})
    normal = splits.k_folds([s for s in samples if s.label == 0], len(kinds), seed=seed) if kinds else []
    folds = []
    for i, kind in enumerate(kinds):
        held_out = [s for s in normal if s.fold == i] + [s for s in samples if s.label == 1 and s.defect_type == kind]
        training = [s for s in normal if s.fold != i] + [s for s in samples if s.label == 1 and s.defect_type != kind]
        folds.append(Fold(kind, training, held_out, withheld_type=kind))
    return folds


@dataclass
class Outcome:
    """One fitted fold on its held-out images (unreadable ones left out)."""

    fold: str
    withheld_type: str | None
    labels: list[int]
    defect_types: list[str]
    raw: list[float]  # the model's raw scores; an image is flagged when raw >= threshold
    threshold: float
    expected: dict  # what calibration announced: recall, false_alarm_rate and their 95 % intervals
    calibration_images: tuple[int, int]  # (good, defective) the threshold was chosen on
    fit_seconds: float
    pixel_auroc: float | None
    bank_size: int | None
    precision: str
    notes: list[str]
    variants: dict = field(default_factory=dict)  # name -> raw scores of the same model scored another way

    def scores(self, variant: str | None = None) -> list[float]:
        """The raw scores, or those of the same model scored the ``variant`` way."""
        return self.variants[variant] if variant else self.raw

    def flagged(self, variant: str | None = None) -> np.ndarray:
        return np.asarray(self.scores(variant)) >= self.threshold

    def to_json(self) -> dict:
        return asdict(self)


def fit(options: train.TrainOptions, training: list[Sample]):
    """(model, notes) as ``anomaly train`` fits them on ``training``."""
    if options.method in train.CROSS_FITTED:
        fit_part, val_part = training, []
    else:
        fit_part, val_part = splits.train_val_split(training, options.val_ratio, seed=options.seed)
    model, _history, notes = train.fit(options, fit_part, val_part, show_progress=False)
    return model, notes


def run(options: train.TrainOptions, folds: list[Fold], with_masks: bool = False, variants: dict | None = None, log=print) -> list[Outcome]:
    """Fit and score every fold; ``variants`` (name -> context manager factory) scores each model again inside each."""
    outcomes = []
    for fold in folds:
        start = time.perf_counter()
        model, notes = fit(options, fold.training)
        outcome = scored(model, fold, time.perf_counter() - start, notes, with_masks, variants)
        outcomes.append(outcome)
        log(f"    {fold.name}: auroc {auroc(outcome) or float('nan'):.4f}, fit {outcome.fit_seconds:.1f} s" + (f" ({'; '.join(notes)})" if notes else ""))
    return outcomes


def scored(model, fold: Fold, fit_seconds: float, notes: list[str], with_masks: bool = False, variants: dict | None = None) -> Outcome:
    """A model fitted on ``fold.training``, scored on its held-out images."""
    report, rows = evaluate.evaluate(model, fold.held_out, with_masks=with_masks, n_boot=0, show_progress=False)
    kept = [i for i, r in enumerate(rows) if r.verdict != "unreadable"]
    scores = {}
    for name, make in (variants or {}).items():
        with make():
            _, again = evaluate.evaluate(model, fold.held_out, n_boot=0, show_progress=False)
        scores[name] = [round(float(again[i].raw), 7) for i in kept]
    cal = model.calibration
    return Outcome(
        fold.name,
        fold.withheld_type,
        [fold.held_out[i].label for i in kept],
        [fold.held_out[i].defect_type or "" for i in kept],
        [round(float(rows[i].raw), 7) for i in kept],
        float(cal.threshold),
        plain(cal.expected),
        (cal.n_normal, cal.n_anomaly),
        round(fit_seconds, 2),
        report.get("pixel_auroc"),
        model.config.get("bank_size"),
        model.config.get("precision", "fp32"),
        list(notes),
        scores,
    )


def outcomes_from(rows: list[dict]) -> list[Outcome]:
    return [Outcome(**{**row, "calibration_images": tuple(row["calibration_images"])}) for row in rows]


def auroc(outcome: Outcome, variant: str | None = None) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(outcome.labels)) < 2:
        return None
    return float(roc_auc_score(outcome.labels, outcome.scores(variant)))


def measured(outcome: Outcome, variant: str | None = None) -> dict:
    """Recall and false-alarm rate at the model's own threshold on the held-out images."""
    labels, flagged = np.asarray(outcome.labels), outcome.flagged(variant)
    return {
        "recall": float(flagged[labels == 1].mean()) if (labels == 1).any() else None,
        "false_alarm_rate": float(flagged[labels == 0].mean()) if (labels == 0).any() else None,
        "n_anomaly": int((labels == 1).sum()),
        "n_normal": int((labels == 0).sum()),
    }


def plain(value):
    """JSON-ready copies of calibration's numbers (tuples and numpy scalars become lists and floats)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value
