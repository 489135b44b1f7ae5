"""``anomaly calibrate`` without the terminal: move a trained model's operating point, never refitting it.

The operating point is the threshold and, for models with maps, the size rule
(``judgement/size_rule.py``) and the pixel threshold that makes the regions. They are chosen
either on the calibration scores and region areas the model file keeps (out of fold for
patchcore and hybrid), for a new rule, or on labelled images the model has not seen, such as
new images from the line. The result is a new model; the input file is only read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from anomalycli.data import trained_on
from anomalycli.data.images import original_size
from anomalycli.data.layouts import Sample
from anomalycli.deploy.regions import pixel_threshold_of
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection import int8_backbone
from anomalycli.detection.methods import AnomalyModel
from anomalycli.detection.methods.patchcore_fitting import MAP_STEP
from anomalycli.errors import UserError
from anomalycli.judgement import pixel_threshold
from anomalycli.judgement.localisation import largest_areas
from anomalycli.judgement.thresholds import OperatingRule, calibrate


@dataclass(frozen=True)
class PixelChoices:
    """What calibrate moves besides the threshold; None keeps the model's."""

    min_area_px: float | None = None  # the size rule's least area (0: no rule)
    pixel_size_mm: float | None = None  # stored for predict's areas in mm²
    pixel_fpr: float | None = None  # a new pixel threshold: this share of DATA's good pixels above it


def recalibrate(
    model: AnomalyModel,
    rule: OperatingRule,
    samples: list[Sample] | None = None,
    source: str = "",
    batch_size: int = 32,
    show_progress: bool = True,
    pixel: PixelChoices = PixelChoices(),
) -> tuple[AnomalyModel, list[str]]:
    """A copy of ``model`` with a threshold chosen by ``rule``, and warnings for the user.

    With ``samples`` (labelled images, named ``source``) those the model never saw are scored and
    the threshold is chosen on them; without, on the scores stored in the model file.
    """
    stored, warnings = model.calibration, []
    min_area = stored.min_area_px if pixel.min_area_px is None else pixel.min_area_px
    config = dict(model.config)
    if pixel.pixel_size_mm is not None:
        config["pixel_size_mm"] = pixel.pixel_size_mm
    if (min_area or pixel.pixel_fpr is not None) and pixel_threshold_of(model) is None:
        raise UserError("this model has no pixel threshold (a classifier, or trained before regions existed); train it again for --min-area or --pixel-fpr")
    if samples is None:
        if not stored.scores:
            raise UserError("this model file keeps no calibration scores (it predates them); give DATA: labelled images it was not trained on")
        if pixel.pixel_fpr is not None:
            raise UserError("--pixel-fpr chooses the pixel threshold on good images' maps: give DATA, labelled images the model was not trained on")
        if min_area and len(stored.areas) != len(stored.scores):
            raise UserError("this model file keeps no region areas of its calibration images (trained before the size rule); give DATA or train it again")
        labels, scores, areas, source = np.array(stored.labels), np.array(stored.scores), stored.areas, stored.source or "calibration"
    else:
        samples, left_out = _not_trained_on(model, samples, source)
        warnings.extend(left_out)
        labels, scores, areas, config = _score_data(model, config, samples, source, batch_size, show_progress, pixel.pixel_fpr)
    calibration, warning = calibrate(labels, scores, rule, source, areas=areas, min_area_px=min_area)
    return replace(model, config=config, calibration=calibration), [*warnings, *([warning] if warning else [])]


def _not_trained_on(model: AnomalyModel, samples: list[Sample], source: str) -> tuple[list[Sample], list[str]]:
    """The samples the model was not trained on, and a note of those left out: the model scores
    images it has seen lower than new ones, so a threshold chosen on them would flag new goods."""
    kept, left_out = trained_on.not_trained_on(model.config, samples)
    if not left_out:
        return samples, []
    if not kept:
        raise UserError(
            f"the model was trained on every image of {source}: a threshold chosen on their scores would not hold on new parts; "
            "give labelled images it has not seen, or leave DATA out to choose on the calibration scores the model keeps"
        )
    return kept, [f"left out {left_out} of the {len(samples)} images of {source}: the model was trained on them; the threshold rests on the other {len(kept)}"]


def _score_data(model: AnomalyModel, config: dict, samples: list[Sample], source: str, batch_size: int, show_progress: bool, pixel_fpr: float | None):
    """Labels, raw scores and largest region areas of DATA's readable images, and the config
    with the pixel threshold they chose (``pixel_fpr``) where asked."""
    int8_backbone.require_training_features(model.net, "a threshold chosen on DATA here would not hold where it was trained")
    with_maps = pixel_threshold_of(model) is not None
    kept, scores, maps = [], [], []
    for sample, scored in zip(samples, iter_scores(model, [s.path for s in samples], batch_size, with_maps=with_maps, show_progress=show_progress)):
        if scored.verdict == "unreadable":
            continue
        kept.append(sample)
        scores.append(scored.raw)
        if with_maps:
            maps.append(np.asarray(scored.map, dtype=np.float32)[::MAP_STEP, ::MAP_STEP])
    if not any(s.label == 0 for s in kept):
        raise UserError(f"{source} has no readable good images; calibration needs good images, and defective ones too for any rule but --max-fpr")
    labels = np.array([s.label for s in kept])
    if not with_maps:
        return labels, np.array(scores), None, config
    if pixel_fpr is not None:
        good = np.stack([m for m, label in zip(maps, labels) if label == 0])
        by_goods = pixel_threshold.choose(good, np.zeros(len(good), int), [None] * len(good), pixel_fpr)
        config["pixel_threshold"] = {**by_goods, "rule": f"{100 * pixel_fpr:g} % of the good pixels of {source} above it"}
    size = int(config["image_size"])
    areas = largest_areas(maps, pixel_threshold_of(replace(model, config=config)), [original_size(s.path) or (size, size) for s in kept])
    return labels, np.array(scores), areas, config
