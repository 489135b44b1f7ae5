"""Which input sizes a patchcore or hybrid model should try, from the data alone: the images' own
size and, where defect masks say it, how thin the defects are at the default size.

``anomaly train`` fits each size this plans and keeps the one whose out-of-fold verdicts are best
(``workflows/input_size.py``); ``anomaly inspect`` shows the plan. A size is worth trying only
where the images have the pixels for it and the defects are small enough to gain from them:
small images are only upscaled by a larger input, and defects already several feature cells
across are seen at the default size (BENCHMARKS.md, "Resolution").

No PyTorch here: inspect reads it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from anomalycli.data.images import binary_mask

# The patch features' grid step, in input pixels (the backbones' stride-8 map).
FEATURE_STRIDE = 8
# A defect thinner than two feature cells at the default size is worth a larger input: one cell
# of a defect in a patch of good surface is what averages away.
THIN_DEFECT_PX = 2 * FEATURE_STRIDE
# Images whose short side is at most this much over the default size would only be upscaled.
NEAR_NATIVE = 1.25
# The largest input tried: fit time grows with the square of the size (640 px took 5.5 x 320's
# fit on 600 x 800 images), and the budget of predict time an image limits it further.
MAX_SIZE = 640
# The small defects are this quantile of the masked defects' thickness: the ones a size must catch.
SMALL_DEFECT_QUANTILE = 0.1
SIZE_STEP = 32


@dataclass
class SizePlan:
    """The sizes to try (the default first) and why, in one line."""

    default: int
    candidates: list[int]
    native: int | None  # the images' median short side, px
    small_defect_px: float | None  # the small defects' thickness at the default size, px
    n_masks: int
    reason: str

    def to_dict(self) -> dict:
        return {
            "default": self.default,
            "candidates": self.candidates,
            "native_short_side": self.native,
            "small_defect_px_at_default": self.small_defect_px,
            "masks_measured": self.n_masks,
            "reason": self.reason,
        }


def defect_thickness(mask_path: str | Path, size: int) -> float | None:
    """The mask's largest defect's thickness at ``size`` x ``size`` (its area over its bounding
    box's longer side: a scratch's width, a spot's diameter), or None for an empty mask."""
    with Image.open(mask_path) as image:
        mask = np.asarray(binary_mask(image)) > 127
    components, n = ndimage.label(mask)
    if not n:
        return None
    areas = ndimage.sum(mask, components, range(1, n + 1))
    largest = int(np.argmax(areas))
    rows, cols = ndimage.find_objects(components)[largest]
    thickness = float(areas[largest]) / max(rows.stop - rows.start, cols.stop - cols.start)
    height, width = mask.shape
    return thickness * size / np.sqrt(height * width)  # squashed: each axis scaled to size


def plan_for_samples(samples: list, default: int) -> SizePlan:
    """``plan_sizes`` for data set samples: their files' headers and their defects' masks only."""
    sizes = []
    for s in samples:
        try:
            with Image.open(s.path) as image:
                sizes.append(image.size)
        except Exception:  # an unreadable image is reported by the fit that skips it
            continue
    defects = [s for s in samples if s.label == 1]
    return plan_sizes(sizes, [s.mask for s in defects if s.mask], len(defects), default)


def plan_sizes(image_sizes: list[tuple[int, int]], mask_paths: list[str | Path], n_defects: int, default: int) -> SizePlan:
    """The sizes worth fitting for images of ``image_sizes`` (width, height) with ``n_defects``
    labelled defects, ``mask_paths`` of which have masks."""
    native = int(statistics.median(min(w, h) for w, h in image_sizes)) if image_sizes else None
    thickness = [t for t in (defect_thickness(p, default) for p in mask_paths) if t is not None]
    small = float(np.quantile(thickness, SMALL_DEFECT_QUANTILE)) if thickness else None

    def plan(candidates: list[int], reason: str) -> SizePlan:
        return SizePlan(default, candidates, native, small, len(thickness), reason)

    if native is None:
        return plan([default], f"no image's size could be read: {default} px")
    if native <= default:
        return plan([default], f"the images' short side is {native} px (median), at most {default}: a larger input would only upscale them")
    if native <= default * NEAR_NATIVE:
        return plan([default], f"the images' short side is {native} px (median), near {default}: a larger input would add little detail")
    if not n_defects:
        return plan([default], f"no labelled defects to measure a larger input's gain against {default} px; --image-size N sets one")
    larger = min(MAX_SIZE, native // SIZE_STEP * SIZE_STEP)
    if small is not None and small >= THIN_DEFECT_PX:
        return plan(
            [default],
            f"the small masked defects are {small:.0f} px thick at {default} px, over two feature cells ({THIN_DEFECT_PX} px): {default} px sees them",
        )
    if larger <= default:
        return plan([default], f"the images' short side is {native} px: no larger size to try")
    why = (
        f"the small masked defects are {small:.1f} px thick at {default} px, under two feature cells ({THIN_DEFECT_PX} px)"
        if small is not None
        else "no defect masks say how small the defects are"
    )
    return plan([default, larger], f"the images' short side is {native} px (median) and {why}: trying {default} and {larger} px")
