"""Evaluating a trained model on labelled images: every metric, from ``scoring.iter_scores``."""

from __future__ import annotations

import numpy as np
import torch

from anomalycli.data import trained_on
from anomalycli.data.confounds import taken_differently
from anomalycli.data.layouts import Sample
from anomalycli.data.tensors import load_mask
from anomalycli.deploy.regions import judge_regions, min_area_of, pixel_threshold_of
from anomalycli.deploy.scoring import Scored, check_drift, iter_scores
from anomalycli.detection.methods import AnomalyModel
from anomalycli.judgement.localisation import aupro, largest_area, touched_and_false
from anomalycli.judgement.metrics import against_announced, binary_report, operating_point, pixel_auroc
from anomalycli.judgement.size_rule import sized_scores
from anomalycli.judgement.thresholds import trade_off


def evaluate(
    model: AnomalyModel,
    samples: list[Sample],
    batch_size: int = 32,
    threshold: float = 0.5,
    with_masks: bool = False,
    n_boot: int = 1000,
    show_progress: bool = True,
    model_name: str = "MODEL",
) -> tuple[dict, list[Scored]]:
    """Score labelled samples and report every metric; pixel AUROC where masks are given. The
    verdicts are predict's, the model's size rule included."""
    pixel_threshold, min_area = pixel_threshold_of(model), min_area_of(model)
    want_maps = (with_masks or bool(min_area)) and model.has_maps
    rows, largest, pixel_truth, pixel_scores = [], [], [], []
    for sample, scored in zip(samples, iter_scores(model, [s.path for s in samples], batch_size, threshold, want_maps, show_progress=show_progress)):
        if min_area:
            largest.append(largest_area(judge_regions(scored, pixel_threshold, min_area)))
        scored.map, map_ = None, scored.map  # keep memory flat: maps are used here and dropped
        rows.append(scored)
        if not with_masks:
            continue
        # An anomaly without a mask says nothing about which of its pixels are defective.
        if want_maps and map_ is not None and (sample.mask or sample.label == 0):
            size = map_.shape[-1]
            truth = load_mask(sample.mask, size) if sample.mask else torch.zeros(size, size, dtype=torch.bool)
            # Pixels on a fixed grid, every second one: the metrics need not see every pixel of every image.
            pixel_truth.append(truth.numpy()[::2, ::2])
            pixel_scores.append(np.asarray(map_, dtype=np.float32)[::2, ::2])
    readable = [(s, r) for s, r in zip(samples, rows) if r.verdict != "unreadable"]
    labels = [s.label for s, _ in readable]
    raw = [r.raw for _, r in readable]
    # The operating point of the verdicts given: with a size rule, of the scores it sees.
    judged = sized_scores(raw, [a for a, r in zip(largest, rows) if r.verdict != "unreadable"], min_area) if min_area else raw
    report = binary_report(
        labels,
        raw,
        [int(r.verdict == "anomaly") for _, r in readable],
        [s.defect_type for s, _ in readable],
        n_boot=n_boot,
    )
    report["n_unreadable"] = len(rows) - len(readable)
    # Figures measured on goods and defects taken differently measure that difference too (data/confounds.py).
    report["taken_differently"] = taken_differently([s.path for s in samples if s.label == 0], [s.path for s in samples if s.label == 1])
    # Pixel AUROC on every fourth pixel, AUPRO (its connected regions want the finer grid) on every second.
    report["pixel_auroc"] = (
        pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in pixel_truth]), np.concatenate([m[::2, ::2].ravel() for m in pixel_scores]))
        if pixel_scores
        else None
    )
    report["aupro"] = aupro(pixel_truth, pixel_scores) if pixel_scores else None
    if pixel_scores and pixel_threshold is not None:  # the regions predict writes, against the true ones
        report.update(touched_and_false(pixel_truth, [m >= pixel_threshold for m in pixel_scores]))
    report["threshold"] = threshold
    raw_threshold = model.calibration.raw_threshold(threshold)
    report["operating_point"] = {"threshold": threshold, **operating_point(labels, judged, raw_threshold)}
    report["min_area_px"] = min_area or None
    report["trade_off"] = trade_off(labels, judged, model.calibration)
    report["calibration"] = model.calibration.summary()
    report["announcement_misses"] = against_announced(model.calibration.expected, report["operating_point"]) if threshold == 0.5 else []
    report["drift"] = check_drift(model, rows, model_name, labels=[s.label for s in samples]).to_dict()
    report["trained_on"] = _trained_on(model, samples, rows, labels, judged, raw_threshold)
    return report, rows


def _trained_on(model: AnomalyModel, samples: list[Sample], rows: list[Scored], labels: list[int], judged: list[float], raw_threshold: float) -> dict | None:
    """How many of the images the model was trained on, and the point measured on the others
    (where there are both): the figure that is not optimistic."""
    seen = trained_on.seen(model.config, [s.path for s in samples])
    if seen is None:
        return None
    n_seen = sum(seen)
    readable_seen = [was for was, row in zip(seen, rows) if row.verdict != "unreadable"]
    fresh = [i for i, was in enumerate(readable_seen) if not was]
    unseen_point = operating_point([labels[i] for i in fresh], [judged[i] for i in fresh], raw_threshold) if n_seen and fresh else None
    return {"seen": n_seen, "images": len(samples), "message": trained_on.seen_message(n_seen, len(samples)), "unseen_point": unseen_point}
