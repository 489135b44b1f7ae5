"""Image-level metrics, bootstrap intervals, and the rates at a threshold (scikit-learn underneath).
How the threshold is chosen is ``calibration.py``."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def sklearn_metrics():
    """scikit-learn's metrics, imported when first used: predict, which uses none, starts a second sooner."""
    from sklearn import metrics

    return metrics


# Bootstrap resamples computed at once: memory is this many times the number of images.
BOOTSTRAP_BLOCK = 100


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(sklearn_metrics().roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def _f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(sklearn_metrics().f1_score(labels, predicted, zero_division=0))


def bootstrap_ci(labels, scores, predicted, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap over images for F1 and AUROC: {'f1_ci': [lo, hi], 'auroc_ci': [lo, hi]}.

    The resamples are computed together in blocks, AUROC from average ranks (the Mann-Whitney
    form of scikit-learn's ``roc_auc_score``, ties included): a thousand ``f1_score`` and
    ``roc_auc_score`` calls cost seconds of argument checking alone.
    """
    from scipy import stats  # imported when used, as sklearn_metrics

    labels, scores, predicted = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float), np.asarray(predicted, dtype=int)
    rng = np.random.default_rng(seed)
    n = len(labels)
    f1s, aurocs = [], []
    for start in range(0, n_boot, BOOTSTRAP_BLOCK):
        idx = rng.integers(0, n, (min(BOOTSTRAP_BLOCK, n_boot - start), n))
        truth, decided = labels[idx], predicted[idx]
        tp = (truth & decided).sum(1)
        wrong = (truth != decided).sum(1)  # false positives and false negatives
        f1s += np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0).tolist()
        n_pos = truth.sum(1)
        both = (n_pos > 0) & (n_pos < n)
        ranks = stats.rankdata(scores[idx[both]], axis=1)
        positive_ranks = (ranks * truth[both]).sum(1)
        n_pos, n_neg = n_pos[both], n - n_pos[both]
        aurocs += ((positive_ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).tolist()
    tail = (1 - level) / 2 * 100

    def interval(values):
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] if values else None

    return {"f1_ci": interval(f1s), "auroc_ci": interval(aurocs)}


def binary_report(labels, scores, predicted, defect_types=None, n_boot: int = 1000) -> dict:
    """Every metric ``eval`` shows; anomaly is the positive class. ``scores`` rank, ``predicted`` decide."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    predicted = np.asarray(predicted, dtype=int)
    tn, fp, fn, tp = sklearn_metrics().confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    both = len(set(labels.tolist())) == 2
    report = {
        "n_images": int(len(labels)),
        "accuracy": float(sklearn_metrics().accuracy_score(labels, predicted)),
        "balanced_accuracy": float(sklearn_metrics().balanced_accuracy_score(labels, predicted)) if both else None,
        # Undefined, not 0, where nothing was flagged (precision) or no defect was given (recall, F1):
        # a recall of 0.000 on good images alone reads as every defect missed.
        "precision": float(tp / (tp + fp)) if tp + fp else None,
        "recall": float(tp / (tp + fn)) if tp + fn else None,
        "f1": _f1(labels, predicted) if tp + fn else None,
        "auroc": auroc(labels, scores),
        "average_precision": float(sklearn_metrics().average_precision_score(labels, scores)) if both else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "per_defect_type": per_defect_recall(labels, predicted, defect_types) if defect_types is not None else {},
    }
    report.update(bootstrap_ci(labels, scores, predicted, n_boot=n_boot))
    if not tp + fn:
        report["f1_ci"] = None
    return report


def per_defect_recall(labels, predicted, defect_types) -> dict:
    found: dict[str, list[int]] = defaultdict(list)
    for label, pred, kind in zip(labels, predicted, defect_types):
        if label == 1:
            found[kind or "unknown"].append(int(pred))
    return {kind: {"n": len(v), "recall": float(np.mean(v))} for kind, v in sorted(found.items())}


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    masks = np.asarray(masks).ravel().astype(int)
    return auroc(masks, np.asarray(maps, dtype=np.float32).ravel())


# --- a rate at a threshold ----------------------------------------------------------------


def wilson_interval(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of a proportion k/n (None for n = 0)."""
    from scipy import stats

    if n == 0:
        return None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def operating_point(labels, scores, threshold: float) -> dict:
    """Recall and false-alarm rate at ``threshold`` (score >= threshold is an anomaly), with 95 % intervals."""
    labels = np.asarray(labels, dtype=int)
    flagged = np.asarray(scores, dtype=np.float64) >= threshold
    n_anomaly, n_normal = int((labels == 1).sum()), int((labels == 0).sum())
    caught, false_alarms = int(flagged[labels == 1].sum()), int(flagged[labels == 0].sum())
    return {
        "recall": caught / n_anomaly if n_anomaly else None,
        "recall_ci": wilson_interval(caught, n_anomaly),
        "false_alarm_rate": false_alarms / n_normal if n_normal else None,
        "false_alarm_rate_ci": wilson_interval(false_alarms, n_normal),
        "n_normal": n_normal,
        "n_anomaly": n_anomaly,
    }


def against_announced(announced: dict | None, measured: dict, level: float = 0.05) -> list[str]:
    """Sentences for each rate measured worse than ``announced`` beyond chance: a one-sided binomial
    test at ``level`` (fewer defects caught, or more good parts flagged, than the announced rate
    explains on this many images). Empty when the announcement holds or there is none."""
    from scipy import stats

    if not announced:
        return []
    found = []
    for rate, count, what, worse in (("recall", "n_anomaly", "defects caught", "less"), ("false_alarm_rate", "n_normal", "good parts flagged", "greater")):
        expected, value, n = announced.get(rate), measured.get(rate), measured.get(count, 0)
        if expected is None or value is None or not n:
            continue
        p = stats.binomtest(round(value * n), n, min(max(expected, 1e-9), 1 - 1e-9), alternative=worse).pvalue
        if p < level:
            found.append(f"{what} {100 * value:.1f}% of {n}, where calibration announced {100 * expected:.1f}% (binomial p={p:.2g})")
    return found
