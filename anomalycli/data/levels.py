"""Whether each image's grey levels are stretched onto one range before the backbone, measured from the goods.

Where the goods' exposure varies from image to image (the magnetic tiles: median grey 56 to 216),
a patch's distance to the bank grows with its image's contrast: bright, contrasty goods score high
and dark, flat defects low, whatever their surface shows. Stretching each image's levels (its 1st
to 99th percentile of grey onto ``backbones.LEVELS_RANGE``) before the backbone takes that away:
16 tiles AUROC 0.860 against 0.834, every good tile 0.944 against 0.927 (patchcore), the hybrid
0.975 against 0.964 (BENCHMARKS.md, "A new product from a few goods"). Where the goods share one
exposure (screws: median grey within 5 levels), a stretch only takes away what a defect changes in
the levels (16 screws 0.916 against 0.931): their images are used as they are.

``levels`` measures each good's median grey and its range (1st to 99th percentile), and stretches
where the goods' medians spread (10th to 90th percentile) over ``SPREAD`` of a typical range, or
their ranges differ by ``RANGE_RATIO`` (screws: 0.07 and 1.16; magnetic tiles: 0.65 and 2.52).

No PyTorch here: ``anomaly inspect`` says the decision too; ``backbones.preprocess`` stretches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

STRETCH, AS_IS, AUTO = "stretch", "as-is", "auto"
LEVELS = (AUTO, STRETCH, AS_IS)
SIDE = 96  # the goods are measured at this size: enough for their grey levels
SPREAD, RANGE_RATIO = 0.25, 1.6
SAMPLE = 64  # goods measured at most: enough to see how exposure varies, quick on any data set


@dataclass(frozen=True)
class Levels:
    kind: str  # stretch | as-is
    reason: str  # one line: what was measured, and what it means

    def to_dict(self) -> dict:
        return {"kind": self.kind, "reason": self.reason}


def levels_of(config: dict) -> str:
    """A model's levels (stretch or as-is); files from before them have none and use their images as they are."""
    return config.get("levels", {}).get("kind", AS_IS)


def grey_levels(image: Image.Image) -> tuple[float, float, float]:
    """An image's 1st, 50th and 99th percentile of grey."""
    grey = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float64)
    low, median, high = np.percentile(grey, [1, 50, 99])
    return float(low), float(median), float(high)


def goods_sample(paths: list, most: int = SAMPLE) -> list:
    """At most ``most`` of ``paths``, spread evenly over them: what the levels are measured on."""
    step = max(1, len(paths) / most)
    return [paths[int(i * step)] for i in range(min(most, len(paths)))]


def levels(images: list[Image.Image], wanted: str = AUTO) -> Levels:
    """Whether to stretch the goods' levels: measured (``wanted`` auto) or as the user set it."""
    if wanted != AUTO:
        return Levels(wanted, f"--levels {wanted}")
    if len(images) < 2:
        return Levels(AS_IS, "one good image shows one exposure: its levels are used as they are (--levels stretch stretches them)")
    measured = np.array([grey_levels(image) for image in images])
    ranges = np.maximum(measured[:, 2] - measured[:, 0], 1.0)
    low_median, high_median = np.percentile(measured[:, 1], [10, 90])
    spread = (high_median - low_median) / float(np.median(ranges))
    ratio = float(np.percentile(ranges, 90) / np.percentile(ranges, 10))
    seen = f"median grey {low_median:.0f}-{high_median:.0f}, {spread:.2f} of a typical range; ranges differ {ratio:.2f}x"
    if spread > SPREAD or ratio > RANGE_RATIO:
        return Levels(STRETCH, f"the goods' exposure varies ({seen}): each image's levels are stretched onto one range")
    return Levels(AS_IS, f"the goods share one exposure ({seen}): their levels are used as they are")


def stretched(config: dict) -> bool:
    """Whether a model stretches its images' levels before the backbone."""
    return levels_of(config) == STRETCH
