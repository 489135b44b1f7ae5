"""``anomaly calibrate`` without the terminal: move a trained model's operating point, never refitting it.

The new threshold is chosen either on the calibration scores the model file keeps (out of fold
for patchcore and hybrid), for a new rule, or on labelled images the model has not seen, such as
new images from the line. The result is a new model; the input file is only read.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from anomalycli.data.layouts import Sample
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection import int8_backbone
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UserError
from anomalycli.judgement.thresholds import OperatingRule, calibrate


def recalibrate(
    model: AnomalyModel, rule: OperatingRule, samples: list[Sample] | None = None, source: str = "", batch_size: int = 32, show_progress: bool = True
) -> tuple[AnomalyModel, str | None]:
    """A copy of ``model`` with a threshold chosen by ``rule``, and a warning for the user, if any.

    With ``samples`` (labelled images the model never saw, named ``source``) they are scored and
    the threshold is chosen on them; without, on the scores stored in the model file.
    """
    if samples is None:
        stored = model.calibration
        if not stored.scores:
            raise UserError("this model file keeps no calibration scores (it predates them); give DATA: labelled images it was not trained on")
        labels, scores, source = np.array(stored.labels), np.array(stored.scores), stored.source or "calibration"
    else:
        int8_backbone.require_training_features(model.net, "a threshold chosen on DATA here would not hold where it was trained")
        scored = [
            (s, r) for s, r in zip(samples, iter_scores(model, [s.path for s in samples], batch_size, show_progress=show_progress)) if r.verdict != "unreadable"
        ]
        if not any(s.label == 0 for s, _ in scored):
            raise UserError(f"{source} has no readable good images; calibration needs good images, and defective ones too for any rule but --max-fpr")
        labels, scores = np.array([s.label for s, _ in scored]), np.array([r.raw for _, r in scored])
    calibration, warning = calibrate(labels, scores, rule, source)
    return replace(model, calibration=calibration), warning
