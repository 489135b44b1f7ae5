"""Defect regions of a scored image, in its own pixels: what ``predict`` writes beside a verdict,
and the size rule (``judgement/size_rule.py``) they decide.

No PyTorch here (the predict path). The regions are ``localisation.regions`` of the image's map
above the model's pixel threshold (``pixel_threshold`` in its config, chosen at training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from anomalycli import files
from anomalycli.data.images import original_size
from anomalycli.deploy.scoring import Scored
from anomalycli.judgement.localisation import Region, largest_area, regions
from anomalycli.judgement.size_rule import passed_by_size


def image_regions(scored: Scored, pixel_threshold: float, size: tuple[int, int] | None = None) -> list[Region]:
    """The regions of a scored image's map, largest first (none without a map), in the frame of
    its file (or of ``size``, (width, height), where given)."""
    if scored.map is None or scored.verdict == "unreadable":
        return []
    return regions(scored.map, pixel_threshold, size or original_size(scored.path))


def pixel_threshold_of(model) -> float | None:
    """The model's pixel threshold, where it has maps and one (patchcore, hybrid trained since)."""
    return (model.config.get("pixel_threshold") or {}).get("value") if model.has_maps else None


def min_area_of(model) -> float:
    """The model's size rule (``anomaly calibrate --min-area``) in image pixels; 0 where it has none."""
    return float(model.calibration.min_area_px or 0.0)


def judge_regions(scored: Scored, pixel_threshold: float, min_area_px: float = 0.0, size: tuple[int, int] | None = None) -> list[Region]:
    """The image's regions (``image_regions``), and the size rule applied to its verdict: a flagged
    part whose every region is under ``min_area_px`` becomes normal, marked ``passed_by_size``."""
    found = image_regions(scored, pixel_threshold, size)
    if min_area_px and scored.verdict == "anomaly" and passed_by_size(largest_area(found), min_area_px):
        scored.verdict, scored.passed_by_size = "normal", True
    return found


def regions_in_columns(row: dict, pixel_size_mm: float | None = None) -> dict:
    """A row whose ``regions`` list becomes CSV columns: their count and the largest's area."""
    found = row.pop("regions", None) or []
    row["regions"] = len(found)
    row["largest_area_px"] = found[0]["area_px"] if found else ""
    if pixel_size_mm:
        row["largest_area_mm2"] = found[0]["area_mm2"] if found else ""
    return row


def save_mask(scored: Scored, pixel_threshold: float, path: Path, overwrite: bool = True) -> None:
    """The map above the threshold as a black-and-white PNG at the image's own size."""
    mask = Image.fromarray((np.asarray(scored.map) >= pixel_threshold).astype(np.uint8) * 255, "L")
    size = original_size(scored.path)
    if size is not None and size != mask.size:
        mask = mask.resize(size, Image.NEAREST)
    with files.atomic_path(path, overwrite) as tmp:
        mask.save(tmp, format="PNG")
