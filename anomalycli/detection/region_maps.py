"""Out-of-fold anomaly maps in each image's own frame, and what the operating point takes from
them: the pixel threshold's sampled pixels and peaks, and each image's largest region area.

``train`` chooses the pixel threshold and the size rule's areas on its images' out-of-fold maps;
``adapt`` measures a changed line's new goods the same way, so both read maps alike. The maps are
made from patch scores (``patchcore_fitting.Scores``) a batch at a time: memory stays flat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from anomalycli.data.framing import unframed
from anomalycli.data.images import original_size
from anomalycli.detection.methods.patchcore_fitting import MAP_STEP, Scores
from anomalycli.judgement.localisation import largest_areas


def framed_maps(
    scores: Scores, paths: list[Path], image_size: int, map_blur: float, framing: str, images: np.ndarray | None = None
) -> Iterator[tuple[range | np.ndarray, np.ndarray]]:
    """(indices, maps in the images' frames) of ``scores``' maps, batch by batch (``images``: only those)."""
    sizes = [original_size(p) for p in paths]
    done = 0
    for batch in scores.maps(image_size, map_blur, images):
        index = range(done, done + len(batch)) if images is None else images[done : done + len(batch)]
        yield index, np.stack([unframed(m, sizes[i], framing) for m, i in zip(batch, index)])
        done += len(batch)


def sampled_and_peaks(scores: Scores, paths: list[Path], image_size: int, map_blur: float, framing: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ``MAP_STEP``-th pixel of each map (what a pixel threshold is chosen on) and each map's peak."""
    sampled, peaks = [], []
    for _, batch in framed_maps(scores, paths, image_size, map_blur, framing):
        sampled.append(batch[:, ::MAP_STEP, ::MAP_STEP])
        peaks.append(batch.max(axis=(1, 2)))
    return np.concatenate(sampled), np.concatenate(peaks)


def region_areas(scores: Scores, peaks: np.ndarray | None, level: float, paths: list[Path], image_size: int, map_blur: float, framing: str) -> list[float]:
    """Each image's largest region area above ``level`` in its own pixels, on its whole map (as predict measures it).
    ``peaks``: each map's peak where known (``sampled_and_peaks``), so that only maps reaching the level are made again; None: every map is made."""
    with_region = np.arange(len(paths)) if peaks is None else np.flatnonzero(peaks >= level)
    areas = np.zeros(len(paths))
    for index, batch in framed_maps(scores, paths, image_size, map_blur, framing, with_region):
        areas[index] = largest_areas(batch, level, [original_size(paths[i]) or (image_size, image_size) for i in index])
    return areas.tolist()
