"""The size rule: defect regions smaller than a minimum area do not make a part defective.

Inspection specifications accept a scratch under half a millimetre and reject one above. A part
whose score is over the threshold is passed when it has regions (connected areas of its map
above the model's pixel threshold) and every one is under ``min_area_px``. A flagged part with
no region at all keeps its verdict: its defect is faint, not small, and a missed defect is the
expensive error.

The rule is part of the operating point: ``anomaly calibrate --min-area`` sets it, choosing the
threshold and announcing recall and false alarms for the verdicts the rule gives, and every
engine and verb applies it alike. No PyTorch here.
"""

from __future__ import annotations

import re

import numpy as np

from anomalycli.errors import UsageError

_AREA = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(px|mm2|mm²)?\s*$", re.IGNORECASE)


def passed_by_size(largest_area_px, min_area_px: float):
    """Whether a part is passed whatever its score: its largest region (0: none) under ``min_area_px``."""
    largest = np.asarray(largest_area_px, dtype=np.float64)
    return (largest > 0) & (largest < min_area_px)


def sized_scores(scores, largest_area_px, min_area_px: float) -> np.ndarray:
    """Raw scores as the verdicts see them: a part the rule passes scores below every part, so
    no threshold flags it and every threshold chosen on these scores is chosen for the rule."""
    scores = np.asarray(scores, dtype=np.float64)
    if not min_area_px or not len(scores):
        return scores
    return np.where(passed_by_size(largest_area_px, min_area_px), scores.min() - 1.0, scores)


def parse_area(text: str, pixel_size_mm: float | None) -> float:
    """``--min-area`` in image pixels: "50" or "50px", or "0.2mm2" with a pixel size in mm."""
    match = _AREA.match(text or "")
    if not match:
        raise UsageError(f"--min-area takes an area such as 50 (pixels), 50px or 0.2mm2 (got {text!r})")
    value, unit = float(match.group(1)), (match.group(2) or "px").lower()
    if unit == "px":
        return value
    if not pixel_size_mm:
        raise UsageError(f"--min-area {text} is in mm²: give the pixel size too (--pixel-size MM), or the area in pixels")
    return value / pixel_size_mm**2


def describe(min_area_px: float, pixel_size_mm: float | None = None) -> str:
    """The rule in words, for the threshold's description and the start lines."""
    area = f"{min_area_px:g} px" + (f" ({min_area_px * pixel_size_mm**2:.4g} mm²)" if pixel_size_mm else "")
    return f"a part whose every defect region is under {area} is passed"
