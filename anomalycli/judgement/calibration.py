"""The 0..1 score and the threshold at its middle: ``Calibration``, which travels in the model file
and maps raw scores on every engine. Choosing the threshold is ``thresholds.py``. No PyTorch and
no scikit-learn here: predict from an exported or int8 model imports this module."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# The 0..1 score maps the calibration scores' lowest and highest raw values to about 0.05 and 0.95.
SCORE_TAIL = 9.0


def calibrated_score(raw, low: float, threshold: float, high: float, xp=np):
    """Raw score -> (0, 1), the threshold at 0.5, strictly increasing and never saturating.

    On each side of the threshold the distance from 0.5 shrinks as 1 / (1 + 9 d), d the raw
    distance in units of the calibration scores' span on that side: a heavy tail, so however far
    above the range a new image scores (after a recalibration on a few images it can be far),
    two different raw scores keep two different 0..1 scores and every threshold a trade-off table
    offers is a different number. ``xp`` is ``np``, or ``torch`` inside the ONNX graph.
    """
    below, above = score_scales(low, threshold, high)
    z = raw - threshold
    tail = 0.5 / (1 + SCORE_TAIL * xp.abs(xp.where(z < 0, z / below, z / above)))
    return xp.where(z < 0, tail, 1 - tail)


def score_scales(low: float, threshold: float, high: float) -> tuple[float, float]:
    """The raw spans below and above the threshold that ``calibrated_score`` maps to 0.05 and
    0.95. A side that is (nearly) empty, such as the range above a threshold set over every
    good image, borrows a quarter of the other side's span instead of collapsing."""
    below, above = threshold - low, high - threshold
    return max(below, above / 4, 1e-12), max(above, below / 4, 1e-12)


@dataclass
class Calibration:
    """Raw score -> (0, 1) with the threshold at 0.5 (``calibrated_score``).

    It keeps the scores it was chosen on (out of fold where the method cross-fits), so the
    operating point can be moved later without images (``anomaly calibrate``).
    """

    threshold: float
    low: float  # the lowest calibration score (about 0.05 on the 0..1 scale)
    high: float  # the highest (about 0.95)
    rule: str  # how the threshold was chosen, in words
    n_normal: int = 0
    n_anomaly: int = 0
    expected: dict | None = None  # operating_point() of the calibration scores, cross-validated (cross_validated_point)
    source: str = ""  # what the scores are: out-of-fold, validation, or a folder's path
    scores: list[float] = field(default_factory=list, repr=False)
    labels: list[int] = field(default_factory=list, repr=False)
    # The size rule (size_rule.py): the least region area that makes a part defective (0: none),
    # and the largest region area of each calibration image (0: none), which it was chosen on.
    min_area_px: float = 0.0
    areas: list[float] = field(default_factory=list, repr=False)

    def normalise(self, raw):
        return calibrated_score(np.asarray(raw, dtype=np.float64), self.low, self.threshold, self.high)

    def raw_threshold(self, threshold: float) -> float:
        """The raw score that ``normalise`` maps to ``threshold`` (0 and 1 to finite scores far out)."""
        threshold = min(max(threshold, 1e-12), 1 - 1e-12)
        below, above = score_scales(self.low, self.threshold, self.high)
        distance = (0.5 / min(threshold, 1 - threshold) - 1) / SCORE_TAIL
        return self.threshold - below * distance if threshold < 0.5 else self.threshold + above * distance

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """Everything but the scores themselves (for reports)."""
        return {k: v for k, v in asdict(self).items() if k not in ("scores", "labels", "areas")}
