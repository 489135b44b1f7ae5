"""Image-level metrics, bootstrap intervals, and the decision threshold (scikit-learn underneath)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
from sklearn import metrics as skm


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(skm.roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def _f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(skm.f1_score(labels, predicted, zero_division=0))


def bootstrap_ci(labels, scores, predicted, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap over images for F1 and AUROC: {'f1_ci': [lo, hi], 'auroc_ci': [lo, hi]}."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    f1s, aurocs = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        f1s.append(_f1(labels[idx], predicted[idx]))
        auroc = _auroc(labels[idx], scores[idx])
        if auroc is not None:
            aurocs.append(auroc)
    tail = (1 - level) / 2 * 100

    def interval(values):
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] if values else None

    return {"f1_ci": interval(f1s), "auroc_ci": interval(aurocs)}


def binary_report(labels, scores, predicted, defect_types=None, n_boot: int = 1000) -> dict:
    """Every metric ``eval`` shows; anomaly is the positive class. ``scores`` rank, ``predicted`` decide."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    predicted = np.asarray(predicted, dtype=int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    both = len(set(labels.tolist())) == 2
    report = {
        "n_images": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predicted)) if both else None,
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": _f1(labels, predicted),
        "auroc": _auroc(labels, scores),
        "average_precision": float(skm.average_precision_score(labels, scores)) if both else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "per_defect_type": per_defect_recall(labels, predicted, defect_types) if defect_types is not None else {},
    }
    report.update(bootstrap_ci(labels, scores, predicted, n_boot=n_boot))
    return report


def per_defect_recall(labels, predicted, defect_types) -> dict:
    found: dict[str, list[int]] = defaultdict(list)
    for label, pred, kind in zip(labels, predicted, defect_types):
        if label == 1:
            found[kind or "unknown"].append(int(pred))
    return {kind: {"n": len(v), "recall": float(np.mean(v))} for kind, v in sorted(found.items())}


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    masks = np.asarray(masks).ravel().astype(int)
    return _auroc(masks, np.asarray(maps, dtype=np.float32).ravel())


# --- the decision threshold -----------------------------------------------------------


@dataclass
class Calibration:
    """Raw score -> [0, 1] with the threshold at 0.5 (min-max on each side, clipped)."""

    threshold: float
    low: float  # raw score mapped to 0
    high: float  # raw score mapped to 1
    rule: str  # how the threshold was chosen, in words
    n_normal: int = 0
    n_anomaly: int = 0

    def normalise(self, raw):
        raw = np.asarray(raw, dtype=np.float64)
        below = 0.5 * (raw - self.low) / max(self.threshold - self.low, 1e-12)
        above = 0.5 + 0.5 * (raw - self.threshold) / max(self.high - self.threshold, 1e-12)
        return np.clip(np.where(raw < self.threshold, below, above), 0.0, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)


def best_f1_threshold(labels, scores, sample_weight=None) -> float:
    """The score cut that maximises (weighted) F1; ties go to the stricter (higher) cut."""
    precision, recall, thresholds = skm.precision_recall_curve(labels, scores, sample_weight=sample_weight)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def calibrate(labels, scores, max_fpr: float = 0.01, prevalence: float | None = None) -> tuple[Calibration, str | None]:
    """Pick the threshold on validation scores. Returns it and a warning for the user, if any.

    F1 depends on the share of anomalies: when the calibration set holds more of them than the
    data does (PatchCore calibrates on every unfitted anomaly), ``prevalence`` re-weights the
    normal images so the F1 maximised is the one expected on data like the training set.
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    normal, anomaly = scores[labels == 0], scores[labels == 1]
    warning = None
    if len(anomaly) and len(normal):
        weights = None
        if prevalence is not None and 0 < prevalence < 1:
            normal_weight = len(anomaly) * (1 - prevalence) / prevalence / len(normal)
            weights = np.where(labels == 0, normal_weight, 1.0)
        threshold = best_f1_threshold(labels, scores, weights)
        rule = f"max F1 on {len(normal)} normal and {len(anomaly)} anomalous validation images"
        if weights is not None:
            rule += f" (weighted to {100 * prevalence:.0f}% anomalies, as in the training data)"
    elif len(normal):
        # With no anomalies to pick from, a "best F1" threshold would flag everything.
        threshold = float(np.quantile(normal, 1 - max_fpr, method="higher")) + 1e-9
        rule = f"{100 * (1 - max_fpr):g}th percentile of {len(normal)} normal validation scores (--max-fpr {max_fpr:g})"
        warning = (
            f"validation data has no anomalous images: threshold set so about {100 * max_fpr:g}% of normal "
            "images are flagged (--max-fpr); add labelled defects to validation for a better threshold"
        )
    else:
        raise ValueError("calibration needs at least one normal validation score")
    low, high = float(scores.min()), float(scores.max())
    calibration = Calibration(threshold, min(low, threshold), max(high, threshold), rule, len(normal), len(anomaly))
    return calibration, warning
