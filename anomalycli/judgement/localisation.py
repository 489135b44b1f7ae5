"""Where the defects are: regions of an anomaly map, and how well maps find the true defects.

- ``aupro``: the area under the per-region overlap curve up to a false-positive rate of 30 %,
  normalised, as MVTec's evaluation code defines it (Bergmann et al., "The MVTec AD dataset",
  IJCV 2021): every true defect region counts alike, however large, so a map that finds only the
  big defects scores low where pixel AUROC would not.
- ``regions``: the connected areas of one map above a threshold, with their boxes and areas in the
  original image's pixels.

numpy and scipy.ndimage only: no PyTorch, no scikit-learn. ``ndimage`` is imported where a map
is first labelled, not with this module: its import took 0.3 s of a one-image predict's start
(BENCHMARKS.md, "Speed"), and a good image's map, with nothing above the threshold, needs none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MAX_FPR = 0.3  # AUPRO's limit, as MVTec's evaluation
EIGHT_CONNECTED = np.ones((3, 3))  # a region's pixels touch by an edge or a corner, as MVTec's


def _ndimage():
    from scipy import ndimage

    return ndimage


def aupro(masks: list[np.ndarray], maps: list[np.ndarray], max_fpr: float = MAX_FPR) -> float | None:
    """The normalised area under the PRO curve up to ``max_fpr`` of ``maps`` (one per image, any
    float) against the true ``masks`` (bool, same shapes); None without a defect or a good pixel.

    At each threshold, the PRO is the mean over true regions (8-connected components of the
    masks, over all images) of the share of the region's pixels above it; the false-positive rate
    is the share of good pixels above it. Computed exactly at every distinct score, as MVTec's
    ``compute_pro`` does with its weights: each defect pixel weighs 1 / (its region's size x the
    number of regions), each good pixel 1 / the number of good pixels.
    """
    scores, pro_weight, fpr_weight = [], [], []
    n_regions, n_good = 0, 0
    labelled = []
    for mask in masks:
        components, count = _ndimage().label(np.asarray(mask, dtype=bool), structure=EIGHT_CONNECTED)
        labelled.append((components, count))
        n_regions += count
        n_good += int((components == 0).sum())
    if n_regions == 0 or n_good == 0:
        return None
    for (components, count), anomaly_map in zip(labelled, maps):
        values = np.asarray(anomaly_map, dtype=np.float64).ravel()
        flat = components.ravel()
        sizes = np.bincount(flat, minlength=count + 1).astype(np.float64)
        weight = np.where(flat > 0, 1.0 / (sizes[flat] * n_regions), 0.0)
        scores.append(values)
        pro_weight.append(weight)
        fpr_weight.append(np.where(flat == 0, 1.0 / n_good, 0.0))
    scores, pro_weight, fpr_weight = np.concatenate(scores), np.concatenate(pro_weight), np.concatenate(fpr_weight)
    order = np.argsort(-scores, kind="stable")
    scores, pro, fpr = scores[order], np.cumsum(pro_weight[order]), np.cumsum(fpr_weight[order])
    # One point per distinct score (every pixel at a threshold is above it together), from (0, 0).
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    inside = np.searchsorted(fpr, max_fpr, side="right")
    if inside < len(fpr):  # the curve at exactly max_fpr, by linear interpolation
        f0, f1, p0, p1 = fpr[inside - 1], fpr[inside], pro[inside - 1], pro[inside]
        end = p0 + (p1 - p0) * (max_fpr - f0) / (f1 - f0) if f1 > f0 else p1
        fpr, pro = np.r_[fpr[:inside], max_fpr], np.r_[pro[:inside], end]
    return float(np.trapezoid(pro, fpr) / max_fpr)


@dataclass
class Region:
    """A connected area of the map above the threshold, in the original image's pixels."""

    x: int  # the box's left column
    y: int  # its top row
    width: int
    height: int
    area_px: float  # the region's own pixels (not its box's)
    peak: float  # the map's highest and mean value inside it (raw map units)
    mean: float

    def to_dict(self, pixel_size_mm: float | None = None) -> dict:
        out = asdict(self)
        out["area_px"] = round(self.area_px, 1)
        out["peak"], out["mean"] = round(self.peak, 4), round(self.mean, 4)
        if pixel_size_mm:
            out["area_mm2"] = round(self.area_px * pixel_size_mm**2, 4)
            out["width_mm"], out["height_mm"] = round(self.width * pixel_size_mm, 3), round(self.height * pixel_size_mm, 3)
        return out


def regions(anomaly_map: np.ndarray, threshold: float, original_size: tuple[int, int] | None = None, min_area_px: float = 0.0) -> list[Region]:
    """The regions of ``anomaly_map`` (H x W, raw units) above ``threshold``, largest first, in the
    frame of an original image of ``original_size`` (width, height) that was resized to the map's
    size (default: the map's own frame); regions under ``min_area_px`` original pixels are left out."""
    anomaly_map = np.asarray(anomaly_map, dtype=np.float64)
    rows, cols = anomaly_map.shape
    width, height = original_size or (cols, rows)
    sx, sy = width / cols, height / rows
    above = anomaly_map >= threshold
    if not above.any():
        return []
    ndimage = _ndimage()
    components, count = ndimage.label(above, structure=EIGHT_CONNECTED)
    found = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        inside = components[box] == index
        area = float(inside.sum()) * sx * sy
        if area < min_area_px:
            continue
        values = anomaly_map[box][inside]
        x0, x1 = int(np.floor(box[1].start * sx)), int(np.ceil(box[1].stop * sx))
        y0, y1 = int(np.floor(box[0].start * sy)), int(np.ceil(box[0].stop * sy))
        found.append(Region(x0, y0, min(x1, width) - x0, min(y1, height) - y0, area, float(values.max()), float(values.mean())))
    return sorted(found, key=lambda r: -r.area_px)


def largest_area(found: list[Region]) -> float:
    """The area of the largest of ``regions``' list (largest first), 0 where there is none: what a size rule judges."""
    return found[0].area_px if found else 0.0


def largest_areas(maps, threshold: float, sizes: list[tuple[int, int] | None]) -> list[float]:
    """Each map's largest region area (0: none) in the original image's pixels (``sizes``:
    (width, height), None for the map's own frame): what the size rule is chosen on."""
    return [largest_area(regions(anomaly_map, threshold, size)) for anomaly_map, size in zip(maps, sizes)]


def touched_and_false(masks: list[np.ndarray], predicted: list[np.ndarray]) -> dict:
    """How predicted masks meet the true ones (all the same frame, bool): the share of true
    regions that a predicted region touches (one pixel is enough), and predicted regions per good
    image (an image whose true mask is empty) that touch no true defect."""
    touched = total = false_regions = goods = 0
    for truth, guess in zip(masks, predicted):
        truth, guess = np.asarray(truth, dtype=bool), np.asarray(guess, dtype=bool)
        true_parts, n_true = _ndimage().label(truth, structure=EIGHT_CONNECTED)
        total += n_true
        if n_true:
            touched += len(set(np.unique(true_parts[guess]).tolist()) - {0})
        else:
            goods += 1
            false_regions += _ndimage().label(guess, structure=EIGHT_CONNECTED)[1]
    return {
        "regions_touched": touched / total if total else None,
        "false_regions_per_good_image": false_regions / goods if goods else None,
        "true_regions": total,
    }
