"""Scoring many images with a trained model: streamed in batches, memory flat in their number.

No PyTorch here: ``model`` is an ``AnomalyModel`` (which converts the numpy batches it is given)
or a whole scoring graph's ``onnx_model.OnnxModel``, which then predicts without PyTorch's import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from anomalycli.data import encoding
from anomalycli.data.bit_depth import windows_of
from anomalycli.data.decoding import DecodeAhead, batches
from anomalycli.data.framing import SQUASH, framing_of, unframed
from anomalycli.data.images import original_size
from anomalycli.judgement import drift
from anomalycli.runtime import progress_bar


@dataclass
class Scored:
    path: Path
    raw: float  # the method's own score (nan when unreadable)
    score: float  # calibrated to [0, 1], threshold at 0.5
    verdict: str  # anomaly | normal | unreadable
    error: str = ""
    map: np.ndarray | None = None  # anomaly map at the model's input size, raw units
    stats: np.ndarray | None = None  # drift.image_stats of the decoded image (None when unreadable)
    passed_by_size: bool = False  # over the threshold, but every defect region under the size rule's area


def iter_scores(
    model,
    paths: list[Path],
    batch_size: int = 32,
    threshold: float = 0.5,
    with_maps: bool = False,
    num_workers: int | None = None,
    show_progress: bool = True,
    decoded: DecodeAhead | None = None,
) -> Iterator[Scored]:
    """Yield one ``Scored`` per path, in order. ``threshold`` is on the calibrated [0, 1] scale;
    ``decoded``: ``paths`` already decoding at the model's input size."""
    with progress_bar(total=len(paths), desc="scoring", unit="img", shown=show_progress) as bar:
        for images, indices, errors in batches(
            paths, model.config["image_size"], batch_size, num_workers, decoded, framing_of(model.config), windows_of(model.config)
        ):
            yield from score_decoded(model, [paths[i] for i in indices.tolist()], images, errors, threshold, with_maps)
            bar.update(len(errors))


def score_decoded(
    model, paths: list[Path], images: np.ndarray, errors: list[str], threshold: float = 0.5, with_maps: bool = False, sizes: list | None = None
) -> list[Scored]:
    """One ``Scored`` per decoded image (uint8 B x 3 x S x S, framed as the model frames them;
    ``errors``: '' where it decoded), its map in the image's own frame (``framing.unframed``; a
    letterboxing model needs each image's (width, height): ``sizes``, else read from ``paths``)."""
    raw, maps = score_batch(model, images, errors, with_maps)
    framing = framing_of(model.config)
    if maps is not None and framing != SQUASH:
        sizes = sizes or [original_size(p) if not e else None for p, e in zip(paths, errors)]
        maps = [unframed(m, size, framing) for m, size in zip(maps, sizes)]
    calibrated = model.calibration.normalise(raw)
    stats = drift.image_stats(images)
    return [
        scored_row(path, float(raw[j]), float(calibrated[j]), errors[j], threshold, None if maps is None else maps[j], stats[j]) for j, path in enumerate(paths)
    ]


def score_batch(model, images: np.ndarray, errors: list[str], with_maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw scores [B] (nan where ``errors`` has a message) and maps (zeros there) of a decoded
    batch, float32 numpy arrays, whatever the model returns them as."""
    ok = np.array([not e for e in errors])
    raw = np.full(len(errors), np.nan, dtype=np.float32)
    maps = None
    if ok.any():
        batch_raw, batch_maps = model.score(images[ok], with_maps)
        raw[ok] = _array(batch_raw)
        if with_maps and batch_maps is not None:
            maps = np.zeros((len(errors), *batch_maps.shape[1:]), dtype=np.float32)
            maps[ok] = _array(batch_maps)
    return raw, maps


def _array(values) -> np.ndarray:
    """A model's scores or maps as float32 numpy (a PyTorch model's come as tensors, maybe on a GPU)."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def scored_row(path: Path, raw: float, score: float, error: str, threshold: float, map_: np.ndarray | None = None, stats: np.ndarray | None = None) -> Scored:
    """One image's result; the verdict is the calibrated ``score`` against ``threshold``."""
    if error:
        return Scored(path, float("nan"), float("nan"), "unreadable", error)
    return Scored(path, raw, score, "anomaly" if score >= threshold else "normal", map=map_, stats=stats)


def check_drift(model, rows: list[Scored], model_name: str = "MODEL", labels: list[int] | None = None) -> drift.DriftReport:
    """The drift check on the readable rows (their image statistics where every row has them);
    with ``labels`` (one per row, 0 for good), on the good images only."""
    readable = [i for i, r in enumerate(rows) if r.verdict != "unreadable"]
    with_stats = readable and all(rows[i].stats is not None for i in readable)
    stats = np.stack([rows[i].stats for i in readable]) if with_stats else None
    known = None if labels is None else np.array([labels[i] for i in readable], dtype=int)
    report = drift.check(model, np.array([rows[i].raw for i in readable]), stats, model_name, labels=known)
    return drift.with_cause(report, model, lambda: encoding.summary([rows[i].path for i in readable]))
