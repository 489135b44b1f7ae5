"""Scoring many images with a trained model: streamed in batches, memory flat in their number."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from anomalycli import drift
from anomalycli.calibration import trade_off
from anomalycli.data import Sample, image_batches, load_mask
from anomalycli.decoding import DecodeAhead
from anomalycli.metrics import against_announced, binary_report, operating_point, pixel_auroc
from anomalycli.methods import AnomalyModel


@dataclass
class Scored:
    path: Path
    raw: float  # the method's own score (nan when unreadable)
    score: float  # calibrated to [0, 1], threshold at 0.5
    verdict: str  # anomaly | normal | unreadable
    error: str = ""
    map: np.ndarray | None = None  # anomaly map at the model's input size, raw units
    stats: np.ndarray | None = None  # drift.image_stats of the decoded image (None when unreadable)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def iter_scores(
    model: AnomalyModel,
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
    with tqdm(total=len(paths), desc="scoring", unit="img", disable=not show_progress) as bar:
        for images, indices, errors in image_batches(paths, model.config["image_size"], batch_size, num_workers, decoded):
            raw, maps = score_batch(model, images, errors, with_maps)
            calibrated = model.calibration.normalise(raw.numpy())
            stats = drift.image_stats(images)
            for j, index in enumerate(indices.tolist()):
                yield scored_row(paths[index], float(raw[j]), float(calibrated[j]), errors[j], threshold, None if maps is None else maps[j].numpy(), stats[j])
            bar.update(len(errors))


def score_batch(model: AnomalyModel, images: torch.Tensor, errors: list[str], with_maps: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw scores [B] (nan where ``errors`` has a message) and maps (zeros there) of a decoded batch."""
    ok = torch.tensor([not e for e in errors])
    raw = torch.full((len(errors),), float("nan"))
    maps = None
    if ok.any():
        batch_raw, batch_maps = model.score(images[ok], with_maps)
        raw[ok] = batch_raw.float().cpu()
        if with_maps and batch_maps is not None:
            maps = torch.zeros(len(errors), *batch_maps.shape[1:])
            maps[ok] = batch_maps.float().cpu()
    return raw, maps


def scored_row(path: Path, raw: float, score: float, error: str, threshold: float, map_: np.ndarray | None = None, stats: np.ndarray | None = None) -> Scored:
    """One image's result; the verdict is the calibrated ``score`` against ``threshold``."""
    if error:
        return Scored(path, float("nan"), float("nan"), "unreadable", error)
    return Scored(path, raw, score, "anomaly" if score >= threshold else "normal", map=map_, stats=stats)


def check_drift(model: AnomalyModel, rows: list[Scored], model_name: str = "MODEL") -> drift.DriftReport:
    """The drift check on the readable rows (their image statistics where every row has them)."""
    readable = [r for r in rows if r.verdict != "unreadable"]
    with_stats = readable and all(r.stats is not None for r in readable)
    stats = np.stack([r.stats for r in readable]) if with_stats else None
    return drift.check(model, np.array([r.raw for r in readable]), stats, model_name)


def evaluate(model: AnomalyModel, samples: list[Sample], batch_size: int = 32, threshold: float = 0.5, with_masks: bool = False, n_boot: int = 1000, show_progress: bool = True, model_name: str = "MODEL") -> tuple[dict, list[Scored]]:
    """Score labelled samples and report every metric; pixel AUROC where masks are given."""
    want_maps = with_masks and model.has_maps
    rows, pixel_truth, pixel_scores = [], [], []
    for sample, scored in zip(samples, iter_scores(model, [s.path for s in samples], batch_size, threshold, want_maps, show_progress=show_progress)):
        scored.map, map_ = None, scored.map  # keep memory flat: maps are used here and dropped
        rows.append(scored)
        # An anomaly without a mask says nothing about which of its pixels are defective.
        if want_maps and map_ is not None and (sample.mask or sample.label == 0):
            size = map_.shape[-1]
            truth = load_mask(sample.mask, size) if sample.mask else torch.zeros(size, size, dtype=torch.bool)
            # Subsample pixels on a fixed grid: AUROC over every pixel of every image is not needed.
            pixel_truth.append(truth.numpy()[::4, ::4].ravel())
            pixel_scores.append(map_[::4, ::4].ravel())
    readable = [(s, r) for s, r in zip(samples, rows) if r.verdict != "unreadable"]
    labels = [s.label for s, _ in readable]
    raw = [r.raw for _, r in readable]
    report = binary_report(
        labels,
        raw,
        [int(r.verdict == "anomaly") for _, r in readable],
        [s.defect_type for s, _ in readable],
        n_boot=n_boot,
    )
    report["n_unreadable"] = len(rows) - len(readable)
    report["pixel_auroc"] = pixel_auroc(np.concatenate(pixel_truth), np.concatenate(pixel_scores)) if pixel_scores else None
    report["threshold"] = threshold
    raw_threshold = model.calibration.raw_threshold(threshold)
    report["operating_point"] = {"threshold": threshold, **operating_point(labels, raw, raw_threshold)}
    report["trade_off"] = trade_off(labels, raw, model.calibration)
    report["calibration"] = model.calibration.summary()
    report["announcement_misses"] = against_announced(model.calibration.expected, report["operating_point"]) if threshold == 0.5 else []
    report["drift"] = check_drift(model, rows, model_name).to_dict()
    return report, rows
