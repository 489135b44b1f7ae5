"""The pixel threshold: the map level above which pixels form defect regions.

Chosen at training on out-of-fold maps, as the image threshold is on out-of-fold scores. With
enough defect masks (``MIN_MASKED_DEFECTS``), the level whose regions agree best with the true
defects: the largest pixel F1 over the masked defects' pixels and every good image's pixels.
Without, the level that a stated share of the good images' pixels reach. Either way the model
records the share of good pixels above it, which held-out images are measured against
(BENCHMARKS.md, "Localisation").
"""

from __future__ import annotations

import numpy as np

from anomalycli.judgement.thresholds import best_f1_threshold

MIN_MASKED_DEFECTS = 5  # as the hybrid: fewer defects say too little about where the line is


def from_goods(good_maps, false_positive_rate: float) -> float:
    """The map value that ``false_positive_rate`` of the good images' map pixels reach."""
    return float(np.quantile(np.asarray(good_maps).ravel(), 1 - false_positive_rate))


def from_masks(good_maps, defect_maps, defect_masks) -> float:
    """The map value with the largest pixel F1 of its regions against the true masks (every
    good pixel a negative)."""
    values = np.concatenate([np.asarray(good_maps).ravel(), np.asarray(defect_maps).ravel()])
    truth = np.concatenate([np.zeros(np.asarray(good_maps).size, bool), np.asarray(defect_masks, dtype=bool).ravel()])
    return best_f1_threshold(truth, values)


def choose(maps, labels, masks: list, false_positive_rate: float) -> dict:
    """The pixel threshold of ``maps`` (N x H x W, out of fold) of images with ``labels`` and
    their ``masks`` (H x W bool, or None where unknown), as the model file keeps it."""
    labels = np.asarray(labels)
    maps = np.asarray(maps)
    good = maps[labels == 0]
    masked = [i for i, (label, mask) in enumerate(zip(labels, masks)) if label == 1 and mask is not None]
    by_goods = from_goods(good, false_positive_rate)
    if len(masked) >= MIN_MASKED_DEFECTS:
        value = from_masks(good, maps[masked], np.stack([masks[i] for i in masked]))
        rule = f"the largest pixel F1 of its regions on {len(masked)} defect masks and {len(good)} good images (out-of-fold maps)"
    else:
        value = by_goods
        rule = f"{100 * false_positive_rate:g} % of the training goods' out-of-fold map pixels above it"
    return {
        "value": value,
        "rule": rule,
        "good_pixel_rate": float(np.mean(good >= value)),  # announced: held-out good images should have about as many
        "false_positive_rate": false_positive_rate,
        "goods_value": by_goods,  # the level by the goods' rate alone, for comparison
    }
