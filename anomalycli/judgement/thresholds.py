"""The decision threshold: how it is chosen on calibration scores (``OperatingRule``, ``calibrate``),
what it announces (cross-validated), and the trade-offs a user can move it to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomalycli.errors import UserError
from anomalycli.judgement.calibration import Calibration
from anomalycli.judgement.metrics import operating_point, sklearn_metrics
from anomalycli.judgement.size_rule import describe as describe_size_rule
from anomalycli.judgement.size_rule import sized_scores

NO_ANOMALY_FPR = 0.01
TRADE_OFF_FPRS = (0.0, 0.01, 0.05, 0.10)


@dataclass(frozen=True)
class OperatingRule:
    """How the threshold is chosen on calibration scores, in a quality engineer's terms.

    balanced: the largest balanced accuracy (Youden's J = recall - false-alarm rate), which does
    not depend on how many defects happened to be collected; recall: catch at least ``value`` of
    the defects; fpr: flag at most ``value`` of good parts; f1: the largest F1 at a defect rate
    of ``value`` on the line.
    """

    name: str = "balanced"
    value: float | None = None

    def describe(self) -> str:
        if self.name == "balanced":
            return "max balanced accuracy (mean of recall and good-part accuracy)"
        what = {
            "recall": "recall >= {:g} (--target-recall)",
            "fpr": "false-alarm rate <= {:g} (--max-fpr)",
            "f1": "max F1 at a {:g} defect rate (--defect-rate)",
        }
        return what[self.name].format(self.value)


def require_defects_for(rule: OperatingRule, n_anomalies: int, n_normal: int) -> None:
    """Refuse a rule that measures the defects (--target-recall, --defect-rate) where none are
    labelled: with goods alone only the false-alarm rate can be chosen, and silently choosing that
    instead would hand the user a threshold they did not ask for."""
    if n_anomalies or rule.name not in ("recall", "f1"):
        return
    option = "--target-recall" if rule.name == "recall" else "--defect-rate"
    raise UserError(
        f"{option} needs labelled defective images to measure, and there are none ({n_normal} good images alone): "
        "give labelled defective images, or choose by --max-fpr"
    )


def _below(scores: np.ndarray, cut: float) -> float:
    """A threshold just under ``cut``: halfway to the next lower score, so ``cut`` stays flagged
    and a new image scoring a little under it (as out-of-sample ones do) is treated the same."""
    lower = scores[scores < cut]
    return float((cut + lower.max()) / 2) if len(lower) else float(cut)


def _above(scores: np.ndarray, cut: float) -> float:
    """A threshold just over ``cut``, halfway to the next higher score: ``cut`` is not flagged."""
    higher = scores[scores > cut]
    return float((cut + higher.min()) / 2) if len(higher) else float(np.nextafter(cut, np.inf))


def best_f1_threshold(labels, scores, sample_weight=None) -> float:
    """The score cut that maximises (weighted) F1; ties go to the stricter (higher) cut."""
    precision, recall, thresholds = sklearn_metrics().precision_recall_curve(labels, scores, sample_weight=sample_weight)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def choose_threshold(labels, scores, rule: OperatingRule) -> float:
    """The threshold ``rule`` picks on scores of both classes (score >= threshold is an anomaly)."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    normal, anomaly = scores[labels == 0], scores[labels == 1]
    if rule.name == "fpr":
        # The most defects caught with at most value x n good images flagged, at the highest cut that does it.
        fpr, tpr, thresholds = sklearn_metrics().roc_curve(labels, scores, drop_intermediate=False)
        allowed = fpr <= rule.value + 1e-12
        best = np.flatnonzero(allowed & (tpr == tpr[allowed].max()))[0]
        return _above(scores, scores.max()) if np.isinf(thresholds[best]) else _below(scores, float(thresholds[best]))
    if rule.name == "recall":
        # The highest cut that still flags ceil(value x n) defects.
        needed = max(1, int(np.ceil(rule.value * len(anomaly) - 1e-9)))
        return _below(scores, np.sort(anomaly)[::-1][needed - 1])
    if rule.name == "f1":
        weights = np.where(labels == 0, len(anomaly) * (1 - rule.value) / rule.value / len(normal), 1.0)
        return _below(scores, best_f1_threshold(labels, scores, weights))
    fpr, tpr, thresholds = sklearn_metrics().roc_curve(labels, scores, drop_intermediate=False)
    j = tpr - fpr
    # Among equally good cuts, the middle one: it leaves the most room on both sides.
    tied = np.flatnonzero(np.isclose(j, j.max()))
    return _below(scores, float(thresholds[tied[len(tied) // 2]]))


# With goods only, a threshold just above the r-th highest of n good scores flags a new good part
# with probability r / (n + 1) whatever the scores' distribution (the goods are exchangeable), and
# that probability is Beta(r, n + 1 - r) distributed: the announced rate and its interval. With 16
# goods and --max-fpr 0.01, r is 1: 5.9 % (0.2-20.6 %), not the 1 % a percentile would claim.
INTERVAL = 0.95


def goods_only_rank(n_normal: int, max_fpr: float) -> int:
    """r: the threshold sits just above the r-th highest good score, the most whose expected rate r / (n + 1) stays within ``max_fpr`` (at least 1)."""
    return max(1, min(n_normal, int(np.floor(max_fpr * (n_normal + 1) + 1e-9))))


def goods_only_point(n_normal: int, max_fpr: float) -> dict:
    """The false-alarm rate a goods-only threshold announces, and its interval (see above)."""
    from scipy import stats

    rank = goods_only_rank(n_normal, max_fpr)
    tail = (1 - INTERVAL) / 2
    low, high = stats.beta.ppf([tail, 1 - tail], rank, n_normal + 1 - rank)
    return {
        "false_alarm_rate": rank / (n_normal + 1),
        "false_alarm_rate_ci": [float(low), float(high)],
        "false_alarm_rate_basis": "order statistic of the goods' scores",
    }


def goods_needed(max_fpr: float) -> int:
    """The fewest good images whose highest score alone sets a threshold of at most ``max_fpr``."""
    return int(np.ceil(1 / max_fpr - 1 - 1e-9))


def goods_only_line(n_normal: int, max_fpr: float) -> str:
    """What a goods-only threshold means, and how many more goods would bring it to ``max_fpr``."""
    point = goods_only_point(n_normal, max_fpr)
    low, high = point["false_alarm_rate_ci"]
    said = (
        f"no labelled defects: the threshold is set on {n_normal} good images alone, and flags about {point['false_alarm_rate']:.1%} "
        f"of good parts ({INTERVAL:.0%} interval {low:.1%}-{high:.1%}); it knows nothing of what a defect scores"
    )
    more = goods_needed(max_fpr) - n_normal
    if more > 0:
        then = goods_only_point(n_normal + more, max_fpr)
        said += (
            f". {more} more good images would bring it to {then['false_alarm_rate']:.1%} ({then['false_alarm_rate_ci'][0]:.1%}-"
            f"{then['false_alarm_rate_ci'][1]:.1%}), the --max-fpr {max_fpr:g} asked"
        )
    return said + "; labelled defects would let it choose for recall too"


def _ordinal(n: int) -> str:
    """'' for 1 (the highest), '2nd ', '3rd ', '11th ', '21st '..."""
    if n == 1:
        return ""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} "


# The announced point is cross-validated over at most this many stratified folds of the calibration scores.
SELECTION_FOLDS = 5


def cross_validated_point(labels, select, n_folds: int = SELECTION_FOLDS, seed: int = 0) -> dict:
    """``operating_point`` with every choice made without the images it is judged on.

    The calibration scores are cut into stratified folds; ``select(fit)`` (a boolean mask of the
    other folds) returns the scores of every image and the threshold chosen on the ``fit`` ones
    (a method may choose more there, such as the hybrid's fusion weight); each fold is judged by
    its own. A threshold chosen and judged on the same few defects sits just under one of them and
    announces a recall that new images do not reach; judged out of fold, the announced point pays
    for that choice as new images will.
    """
    from sklearn.model_selection import StratifiedKFold  # when used: predict starts without scikit-learn

    labels = np.asarray(labels, dtype=int)
    n_folds = min(n_folds, int((labels == 1).sum()), int((labels == 0).sum()))
    flagged = np.zeros(len(labels), dtype=float)
    for fit_index, judged in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(labels, labels):
        fit = np.zeros(len(labels), dtype=bool)
        fit[fit_index] = True
        scores, threshold = select(fit)
        flagged[judged] = np.asarray(scores, dtype=np.float64)[judged] >= threshold
    return {**operating_point(labels, flagged, 0.5), "cross_validated_folds": n_folds}


def calibrate(
    labels, scores, rule: OperatingRule = OperatingRule(), source: str = "validation", select=None, areas=None, min_area_px: float = 0.0
) -> tuple[Calibration, str | None]:
    """Pick the threshold on calibration scores by ``rule``. Returns it and a warning for the user, if any.

    ``source`` says in words what the scores are ("validation", "out-of-fold"). The expected point
    is ``cross_validated_point`` where there are two images of each class at least, with ``select``
    (default: the threshold by ``rule`` on the fit part's ``scores``). ``areas``: each image's
    largest region area (kept for ``anomaly calibrate --min-area``); with ``min_area_px`` the
    threshold and the expected point are those of the verdicts the size rule gives.
    """
    labels = np.asarray(labels, dtype=int)
    raw = np.asarray(scores, dtype=np.float64)
    scores = sized_scores(raw, areas, min_area_px)
    normal, anomaly = scores[labels == 0], scores[labels == 1]
    warning = None
    if not len(normal):
        raise ValueError("calibration needs at least one normal score")
    require_defects_for(rule, len(anomaly), len(normal))
    if len(anomaly):
        threshold = choose_threshold(labels, scores, rule)
        rule_text = f"{rule.describe()} on {len(normal)} normal and {len(anomaly)} anomalous images ({source} scores)"
    else:
        # With no anomalies, only the false-alarm rate can be chosen: see goods_only_point.
        max_fpr = rule.value if rule.name == "fpr" else NO_ANOMALY_FPR
        rank = goods_only_rank(len(normal), max_fpr)
        threshold = float(np.sort(normal)[::-1][rank - 1]) + 1e-9
        rule_text = f"just above the {_ordinal(rank)}highest of {len(normal)} normal images' scores ({source}), for at most {max_fpr:g} false alarms"
        warning = goods_only_line(len(normal), max_fpr)
    if min_area_px:
        rule_text += f"; {describe_size_rule(min_area_px)}"
    expected = operating_point(labels, scores, threshold)
    if not len(anomaly):
        expected.update(goods_only_point(len(normal), max_fpr))
    if len(anomaly) >= 2 and len(normal) >= 2:
        select = select or (lambda fit: (scores, choose_threshold(labels[fit], scores[fit], rule)))
        expected = cross_validated_point(labels, select)
        rule_text += f"; the expected point is cross-validated over {expected['cross_validated_folds']} folds of them"
    low, high = float(raw.min()), float(raw.max())
    calibration = Calibration(
        threshold,
        min(low, threshold),
        max(high, threshold),
        rule_text,
        len(normal),
        len(anomaly),
        expected,
        source,
        raw.tolist(),
        labels.tolist(),
        float(min_area_px),
        [] if areas is None else [float(a) for a in areas],
    )
    return calibration, warning


def trade_off(labels, scores, calibration: Calibration, fprs=TRADE_OFF_FPRS) -> list[dict]:
    """Recall at each false-alarm rate on these scores, and the threshold (0..1 scale) that gives
    it, with ``threshold_text``: as many digits as keep different operating points apart."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(set(labels.tolist())) < 2:
        return []
    rows = []
    for fpr in fprs:
        raw = choose_threshold(labels, scores, OperatingRule("fpr", fpr))
        point = operating_point(labels, scores, raw)
        rows.append(
            {
                "max_false_alarm_rate": fpr,
                "threshold": float(calibration.normalise(raw)),
                "raw_threshold": raw,
                "recall": point["recall"],
                "false_alarm_rate": point["false_alarm_rate"],
            }
        )
    for row, text in zip(rows, threshold_texts(scores, calibration, [r["threshold"] for r in rows])):
        row["threshold_text"] = text
    return rows


def threshold_texts(scores, calibration: Calibration, thresholds: list[float], min_digits: int = 3, max_digits: int = 12) -> list[str]:
    """``thresholds`` printed with the fewest digits (at least ``min_digits``) at which each printed
    value, typed back as ``--threshold``, flags exactly the images the value itself flags."""
    calibrated = calibration.normalise(scores)
    texts = []
    for threshold in thresholds:
        wanted = calibrated >= threshold
        for digits in range(min_digits, max_digits + 1):
            text = f"{threshold:.{digits}f}"
            if np.array_equal(calibrated >= float(text), wanted):
                break
        texts.append(text)
    return texts
