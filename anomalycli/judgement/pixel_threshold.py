"""The pixel threshold: the map level above which pixels form defect regions.

Chosen at training on out-of-fold maps, as the image threshold is on out-of-fold scores. With
enough defect masks (``MIN_MASKED_DEFECTS``), the level whose regions serve best, counted in
regions as a person sees them: the share of true defect regions that a region touches, less the
false regions per good image. Without, the level that a stated share of the good images' pixels
reach. Either way the model records the share of good pixels above it, which held-out images
are measured against (BENCHMARKS.md, "Localisation").

The largest pixel F1 was tried first: the blur around a defect a few pixels wide counts as
false pixels, so on the screws it chose a level that touched 45 % of the held-out defects where
the goods' 0.1 % touched 80 % (BENCHMARKS.md, "Localisation").
"""

from __future__ import annotations

import numpy as np

from anomalycli.judgement.localisation import touched_and_false

# The share of good pixels a heat map leaves untouched, for maps in units of their own (a
# pixel head's z-scores), where no image score gives the good parts' level.
GOOD_LEVEL = 0.99
MIN_MASKED_DEFECTS = 5  # as the hybrid: fewer defects say too little about where the line is
# The levels tried with masks: those that these shares of the good pixels reach, 10 % to 0.001 %.
CANDIDATE_RATES = np.logspace(-1, -5, 17)


def from_goods(good_maps, false_positive_rate: float) -> float:
    """The map value that ``false_positive_rate`` of the good images' map pixels reach."""
    return float(np.quantile(np.asarray(good_maps).ravel(), 1 - false_positive_rate))


def from_masks(good_maps, defect_maps, defect_masks) -> tuple[float, float]:
    """Of the levels ``CANDIDATE_RATES`` of the good pixels reach, the one with the largest share of
    true regions touched less false regions per good image (ties: the higher level), and that merit."""
    good_maps, defect_maps = list(good_maps), list(defect_maps)
    truth = [np.zeros(m.shape, bool) for m in good_maps] + [np.asarray(m, dtype=bool) for m in defect_masks]
    maps = good_maps + defect_maps
    best, best_value = -np.inf, None
    for level in sorted({from_goods(good_maps, rate) for rate in CANDIDATE_RATES}, reverse=True):
        found = touched_and_false(truth, [m >= level for m in maps])
        merit = (found["regions_touched"] or 0.0) - (found["false_regions_per_good_image"] or 0.0)
        if merit > best + 1e-12:
            best, best_value = merit, level
    return best_value, float(best)


def choose(maps, labels, masks: list, false_positive_rate: float) -> dict:
    """The pixel threshold of ``maps`` (N x H x W, out of fold) of images with ``labels`` and
    their ``masks`` (H x W bool, or None where unknown), as the model file keeps it."""
    labels = np.asarray(labels)
    maps = np.asarray(maps)
    good = maps[labels == 0]
    masked = [i for i, (label, mask) in enumerate(zip(labels, masks)) if label == 1 and mask is not None]
    by_goods = from_goods(good, false_positive_rate)
    if len(masked) >= MIN_MASKED_DEFECTS:
        value, merit = from_masks(good, maps[masked], np.stack([masks[i] for i in masked]))
        rule = f"the most true regions touched less false regions per good image, on {len(masked)} defect masks and {len(good)} good images (out-of-fold maps)"
    else:
        value, merit = by_goods, None
        rule = f"{100 * false_positive_rate:g} % of the training goods' out-of-fold map pixels above it"
    return {
        "value": value,
        "rule": rule,
        "good_pixel_rate": float(np.mean(good >= value)),  # announced: held-out good images should have about as many
        "false_positive_rate": false_positive_rate,
        "goods_value": by_goods,  # the level by the goods' rate alone, for comparison
        "good_level": float(np.quantile(good, GOOD_LEVEL)),  # where heat maps start (``views/heatmaps.py``)
        "regions_merit": merit,  # with masks: the share of true regions touched less false regions per good image there
    }
