"""Synthetic "parts" with drawn defects, for the tests and the README's demo data set.

Good parts: a bright disk with a ring, slightly shifted, on a dark textured background.
Defects: a dark scratch across the disk, or a dark spot on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFECT_TYPES = ("scratch", "spot")


def make_part(size: int, rng: np.random.Generator, defect: str | None = None) -> tuple[Image.Image, Image.Image]:
    """One image and its defect mask (all zero for a good part)."""
    image = Image.new("L", (size, size), 40)
    mask = Image.new("L", (size, size), 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    cx, cy = size / 2 + rng.uniform(-size / 32, size / 32, 2)
    r = size * 0.32
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=190)
    draw.ellipse([cx - r * 0.45, cy - r * 0.45, cx + r * 0.45, cy + r * 0.45], outline=120, width=max(1, size // 32))
    if defect == "scratch":
        angle = rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * r * 0.7, np.sin(angle) * r * 0.7
        ox, oy = rng.uniform(-r * 0.2, r * 0.2, 2)
        line = [cx + ox - dx, cy + oy - dy, cx + ox + dx, cy + oy + dy]
        draw.line(line, fill=60, width=max(2, size // 20))
        mask_draw.line(line, fill=255, width=max(2, size // 20))
    elif defect == "spot":
        px, py = cx + rng.uniform(-r * 0.5, r * 0.5), cy + rng.uniform(-r * 0.5, r * 0.5)
        s = size * 0.08
        draw.ellipse([px - s, py - s, px + s, py + s], fill=50)
        mask_draw.ellipse([px - s, py - s, px + s, py + s], fill=255)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L"), mask


def make_dataset(
    root: str | Path, n_good: int = 40, n_per_defect: int = 6, size: int = 64, seed: int = 0, masks: bool = False, split: str | None = None
) -> Path:
    """Write ``root/[split/]good/good001.png ...`` and ``root/[split/]not-good/<type>001.png ...``.

    Masks, if asked for, go to ``root/ground_truth/[split/]not-good/<name>_mask.png``.
    """
    root = Path(root)
    images = root / split if split else root
    mask_dir = root / "ground_truth" / (split or "") / "not-good"
    rng = np.random.default_rng(seed)
    (images / "good").mkdir(parents=True, exist_ok=True)
    (images / "not-good").mkdir(parents=True, exist_ok=True)
    for i in range(1, n_good + 1):
        make_part(size, rng)[0].save(images / "good" / f"good{i:03d}.png")
    for defect in DEFECT_TYPES:
        for i in range(1, n_per_defect + 1):
            image, mask = make_part(size, rng, defect)
            image.save(images / "not-good" / f"{defect}{i:03d}.png")
            if masks:
                mask_dir.mkdir(parents=True, exist_ok=True)
                mask.save(mask_dir / f"{defect}{i:03d}_mask.png")
    return root
