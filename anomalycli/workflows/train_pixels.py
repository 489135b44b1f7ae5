"""What ``train`` learns about pixels, for patchcore and the hybrid: the pixel threshold that
cuts an anomaly map into defect regions, each training image's largest region (which
``calibrate --min-area`` chooses on), and the hybrid's pixel head where enough defects have masks.

All of it is chosen on the out-of-fold maps of the cross-fit, in the images' own frames, as
predict makes its maps.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from anomalycli.data.layouts import Sample
from anomalycli.data.tensors import load_framed_mask, load_mask
from anomalycli.detection import region_maps
from anomalycli.detection.defaults import PIXEL_FALSE_POSITIVE_RATE
from anomalycli.detection.methods import patchcore_fitting, pixel_head
from anomalycli.judgement import pixel_threshold

log = logging.getLogger("anomalycli")


def pixel_head_and_threshold(
    features, out_of_fold: patchcore_fitting.Scores, labels: torch.Tensor, samples: list[Sample], folds: np.ndarray, options, framing: str, map_blur: float
):
    """The hybrid's pixel head (``pixel_head``) and the settings its config keeps, where 5 or more
    training defects have masks (and ``--no-pixel-head`` was not given), else (None, False); and the
    pixel threshold and region areas of its out-of-fold maps (``pixel_threshold_of``). Of the kinds of
    head (``pixel_head.HEAD_KINDS``), the one whose out-of-fold regions serve best at their
    threshold: true regions touched less false regions per good image, as the threshold is chosen."""
    masked = np.array([s.label == 1 and bool(s.mask) for s in samples])
    if not options.pixel_head or masked.sum() < pixel_threshold.MIN_MASKED_DEFECTS:
        return None, False, *pixel_threshold_of(out_of_fold, labels, samples, options.image_size, map_blur, framing)
    shape = out_of_fold.grids.shape
    masks = [load_framed_mask(s.mask, options.image_size, framing) if m else None for s, m in zip(samples, masked)]
    cover = pixel_head.mask_cover(masks, shape[1:])
    classes = labels.numpy()
    sampled_masks = _sampled_masks(samples, options.image_size)
    tried = []
    for hidden in options.pixel_head_kinds:
        head, fused = pixel_head.cross_fit(
            features.patches, out_of_fold.grids.reshape(len(samples), -1), cover, (classes == 0) | masked, classes, folds, options.seed, hidden
        )
        maps = patchcore_fitting.Scores(out_of_fold.scores, fused.reshape(shape))
        chosen, peaks = _choose_pixel_threshold(maps, labels, samples, sampled_masks, options.image_size, map_blur, framing)
        tried.append((chosen["regions_merit"], head, maps, chosen, peaks))
    _, head, maps, chosen, peaks = max(tried, key=lambda t: t[0])  # ties: the first kind
    areas = _region_areas(maps, peaks, chosen["value"], samples, options.image_size, map_blur, framing)  # the kept kind's only
    kinds = ", ".join(f"{_head_kind(t[1])} {t[0]:.3f}" for t in tried)
    log.info(
        f"pixel head: learned from the masks of {int(masked.sum())} defects ({int((cover >= pixel_head.POSITIVE_COVER).sum())} defect patches), "
        f"cross-fitted; {_head_kind(head)} kept (out-of-fold regions touched less false ones per good image: {kinds})"
    )
    settings = {**head.settings(), "tried": [[t[1].settings()["hidden"], t[0]] for t in tried]}  # (hidden units, merit)
    return head, settings, {"pixel_threshold": chosen}, areas


def _head_kind(head) -> str:
    hidden = head.settings()["hidden"]
    return f"{hidden} hidden units" if hidden else "linear"


def pixel_threshold_of(
    out_of_fold: patchcore_fitting.Scores, labels: torch.Tensor, samples: list[Sample], image_size: int, map_blur: float, framing: str
) -> tuple[dict, list[float]]:
    """The model's pixel threshold (``pixel_threshold`` in its config), chosen on every
    ``MAP_STEP``-th pixel of the out-of-fold maps (in the images' frames, as predict's) and the
    defects' masks where there are enough (``judgement/pixel_threshold.py``), and each image's
    largest region area above it in its own pixels, on the whole maps as predict measures them
    (the calibration's ``areas``, which ``calibrate --min-area`` chooses on)."""
    chosen, peaks = _choose_pixel_threshold(out_of_fold, labels, samples, _sampled_masks(samples, image_size), image_size, map_blur, framing)
    return {"pixel_threshold": chosen}, _region_areas(out_of_fold, peaks, chosen["value"], samples, image_size, map_blur, framing)


def _sampled_masks(samples: list[Sample], image_size: int) -> list:
    """Each defect's mask at every ``MAP_STEP``-th pixel (None for a good image or no mask)."""
    step = patchcore_fitting.MAP_STEP
    return [load_mask(s.mask, image_size).numpy()[::step, ::step] if s.label == 1 and s.mask else None for s in samples]


def _choose_pixel_threshold(
    out_of_fold: patchcore_fitting.Scores, labels: torch.Tensor, samples: list[Sample], masks: list, image_size: int, map_blur: float, framing: str
) -> tuple[dict, np.ndarray]:
    """``pixel_threshold.choose`` on every ``MAP_STEP``-th pixel of the out-of-fold maps and
    ``masks`` (``_sampled_masks``), and each map's peak."""
    sampled, peaks = region_maps.sampled_and_peaks(out_of_fold, [s.path for s in samples], image_size, map_blur, framing)
    return pixel_threshold.choose(sampled, labels.numpy(), masks, PIXEL_FALSE_POSITIVE_RATE), peaks


def _region_areas(
    out_of_fold: patchcore_fitting.Scores, peaks: np.ndarray, level: float, samples: list[Sample], image_size: int, map_blur: float, framing: str
) -> list[float]:
    return region_maps.region_areas(out_of_fold, peaks, level, [s.path for s in samples], image_size, map_blur, framing)
