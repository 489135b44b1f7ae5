"""Probe (a record, not a topic): where int8's loss under the shift topic's strong rotation lies.

The precision_shift topic rotates each line image by 10 degrees and fills the corners it uncovers
with the image's median grey (shift.py). On the screws int8 lost 0.045 / 0.048 AUROC there against
fp32 (seeds 0 / 1), the largest of its 19 conditions. This fits the default model twice on the same
fold (int8 and fp32, as that topic does), scores the rotated line with maps, and reads each image's
score again as the highest of its map outside the filled corners, grown by 0, 8, 16 and 24 px (at
320 px the patches lie 8 px apart): whether the loss is the part and its surface, or the fill, which
no camera produces.

    python -m benchmarks.probes.precision_at_fill ../shared/data/screws
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from anomalycli.judgement.metrics import auroc
from benchmarks import folds, shift
from benchmarks.common import samples_of, shipped_options

DEGREES = shift.SHIFTS["rotation (deg)"][2]
GROWN_PX = (0, 8, 16, 24)


def filled(image_size: tuple[int, int], map_shape: tuple[int, int], degrees: float) -> np.ndarray:
    """The pixels of a rotated image that the rotation filled, read at the map's size (the model squashes the image)."""
    whole = Image.fromarray(np.full(image_size[::-1], 255, np.uint8))
    fill = whole.rotate(degrees, resample=Image.BILINEAR, fillcolor=0).resize(map_shape[::-1], Image.NEAREST)
    return np.asarray(fill) < 250


def main(data: Path) -> None:
    samples = samples_of(data, False)
    fold = folds.cv_folds(samples, 5)[0]
    with tempfile.TemporaryDirectory() as tmp:
        line = shift.shifted_copies(fold.held_out, shift.SHIFTS["rotation (deg)"][0], DEGREES, Path(tmp) / "rotated", geometric=True)
        labels = np.array([s.label for s in line])
        for precision in ("int8", "fp32"):
            model = folds.fit(shipped_options(data, fold.training, precision=precision), fold.training)[0]
            rows, _, _ = shift.score(model, line, with_maps=True)
            maps = np.stack([r.map for r in rows])
            fill = np.stack([filled(Image.open(s.path).size, maps.shape[1:], DEGREES) for s in line])
            read = [f"as scored {auroc(labels, np.array([r.raw for r in rows])):.4f}"]
            for grow in GROWN_PX:
                away = ~(ndimage.binary_dilation(fill, structure=np.ones((1, 3, 3), bool), iterations=grow) if grow else fill)
                read.append(f"fill +{grow} px left out {auroc(labels, np.where(away, maps, -np.inf).reshape(len(maps), -1).max(1)):.4f}")
            print(f"{data.name} {precision}: " + ", ".join(read), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
