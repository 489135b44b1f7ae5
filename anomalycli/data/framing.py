"""How an image of any shape becomes the model's square input, and its map the image's again.

``squash`` (the default) resizes the image to S x S whatever its shape. ``letterbox``
(``train --framing letterbox``) keeps its shape: the longer side becomes S and the rest of the
square is the image mirrored at its edges, so that every patch the backbone sees is the surface
at its own proportions (a mirrored surface is still the surface, where a flat fill would be a
new edge). On the magnetic tiles (aspect 0.37 to 2.68) letterboxing raised 5-fold pixel AUROC
and AUPRO but touched fewer defect regions at the pixel threshold, with more false regions and
false alarms, so squashing stays the default ("Levers" under "Localisation" in BENCHMARKS.md).

Whatever the framing, ``Scored.map`` is in the image's own frame at S x S (``unframed``): the
regions, masks, heat maps and metrics downstream never see the framing.

No PyTorch here: the predict path decodes with it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SQUASH, LETTERBOX = "squash", "letterbox"
FRAMINGS = (SQUASH, LETTERBOX)


def framing_of(config: dict) -> str:
    """A model's framing; files from before it have none and squash."""
    return config.get("framing", SQUASH)


def content_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a width x height image letterboxed into size x size."""
    scale = size / max(width, height)
    w, h = min(size, max(1, round(width * scale))), min(size, max(1, round(height * scale)))
    return (size - w) // 2, (size - h) // 2, w, h


def framed(image: Image.Image, size: int, framing: str = SQUASH) -> np.ndarray:
    """An L or RGB image as uint8 RGB pixels (S, S, 3), resized with antialiasing and framed."""
    if framing == SQUASH or image.size[0] == image.size[1]:
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
        return np.array(image.convert("RGB"), dtype=np.uint8)
    left, top, w, h = content_box(*image.size, size)
    pixels = np.array(image.resize((w, h), Image.BILINEAR, reducing_gap=3.0).convert("RGB"), dtype=np.uint8)
    return np.pad(pixels, ((top, size - h - top), (left, size - w - left), (0, 0)), mode="symmetric")


def unframed(anomaly_map: np.ndarray, original_size: tuple[int, int] | None, framing: str = SQUASH) -> np.ndarray:
    """A map of the framed input (S x S) as the image's own frame at S x S: the content box,
    resized (bilinear). Squashed maps, square images and unknown sizes come back as they are."""
    rows, cols = anomaly_map.shape
    if framing == SQUASH or original_size is None or original_size[0] == original_size[1]:
        return anomaly_map
    left, top, w, h = content_box(*original_size, cols)
    box = Image.fromarray(np.ascontiguousarray(anomaly_map[top : top + h, left : left + w], dtype=np.float32), "F")
    return np.asarray(box.resize((cols, rows), Image.BILINEAR), dtype=np.float32)
