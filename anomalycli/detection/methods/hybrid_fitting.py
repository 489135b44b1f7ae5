"""Fitting the hybrid (``hybrid.Hybrid``, the scorer): the image head's logistic regression,
cross-fitted over the folds PatchCore's bank parts were cut on, the fusion's statistics and
weight, and what calibration chooses on them.
"""

from __future__ import annotations

import numpy as np
import torch

from anomalycli.detection.methods import patchcore_fitting
from anomalycli.detection.methods.fitting import fit_logistic
from anomalycli.detection.methods.hybrid import GlobalHead, Hybrid, fuse
from anomalycli.judgement.thresholds import OperatingRule, choose_threshold

# Weight of the one-class score. Half at least: on a defect type left out of training, a weight
# of 0.25 ranked it far worse than 0.5 (screws' manipulated_front 0.836 vs 0.921 AUROC, magnetic
# tiles' uneven 0.807 vs 0.907), while on the types seen the CV AUROC moved by 0.002 at most
# (BENCHMARKS.md, Separation).
FUSION_WEIGHTS = np.linspace(0.5, 1.0, 5)
# Inverse L2 strength of the head's logistic regression, on standardised descriptors: 0.01, 0.1
# and 1 were measured on both development sets (BENCHMARKS.md, Levers); 0.1 is within 0.001 of
# the best fused AUROC on each.
HEAD_C = 0.1


def train_global_head(descriptors: torch.Tensor, labels: torch.Tensor, c: float = HEAD_C) -> GlobalHead:
    """Fit the head on (N, D) descriptors, classes balanced. With one class only it scores every image 0."""
    head = GlobalHead(descriptors.shape[1])
    if labels.unique().numel() < 2:
        return head
    weight, bias = fit_logistic(descriptors.double().numpy(), labels.numpy(), c, max_iter=1000, class_weight="balanced")
    head.weight.copy_(torch.from_numpy(weight).unsqueeze(1))
    head.bias.fill_(bias)
    return head.eval()


def mean_head(heads: list[GlobalHead]) -> GlobalHead:
    """One head that scores the mean of ``heads``' scores (they are linear), as each scored its own fold."""
    head = GlobalHead(heads[0].weight.shape[0])
    head.weight.copy_(torch.stack([h.weight for h in heads]).mean(0))
    head.bias.copy_(torch.stack([h.bias for h in heads]).mean(0))
    return head.eval()


@torch.no_grad()
def scores_and_grids(model: Hybrid, features: torch.Tensor, descriptors: torch.Tensor, with_grids: bool) -> patchcore_fitting.Scores:
    """``patchcore_fitting.scores_and_grids`` for the hybrid: its raw image scores of cached patch features
    (N, h*w, C) and descriptors (N, D) and, ``with_grids``, the patch scores of its maps (the pixel
    head's fused scores where it has one), as ``Hybrid.score_maps`` makes them from images."""
    one_class = patchcore_fitting.scores_and_grids(model.patchcore, features, with_grids)
    grids = one_class.grids
    if grids is not None and model.pixel_head is not None:
        fused = [
            model.pixel_head.fused(torch.from_numpy(grids[i : i + patchcore_fitting.SCORE_BATCH]).flatten(1), features[i : i + patchcore_fitting.SCORE_BATCH])
            for i in range(0, len(grids), patchcore_fitting.SCORE_BATCH)
        ]
        grids = torch.cat(fused).reshape(grids.shape).numpy()
    return patchcore_fitting.Scores(model.fuse(one_class.scores, model.head(descriptors)), grids)


def cross_fit(descriptors: torch.Tensor, labels: torch.Tensor, folds: np.ndarray):
    """Out-of-fold head scores of every image, the fold heads, and the (fit, scored) index sets used."""
    supervised = torch.empty(len(labels))
    heads, used = [], []
    for fold in np.unique(folds):
        scored = np.flatnonzero(folds == fold)
        fitted = np.flatnonzero(folds != fold)
        heads.append(train_global_head(descriptors[fitted], labels[fitted]))
        with torch.no_grad():
            supervised[scored] = heads[-1](descriptors[scored])
        used.append((fitted, scored))
    return supervised, heads, used


def choose_fusion(one_class: torch.Tensor, supervised: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """z-score statistics on normal out-of-fold scores, and the weight with the best out-of-fold AUROC."""
    from sklearn.metrics import roc_auc_score  # fitting only: predict starts without scikit-learn

    normal = labels == 0
    stats = torch.stack(
        [one_class[normal].mean(), one_class[normal].std().clamp_min(1e-6), supervised[normal].mean(), supervised[normal].std().clamp_min(1e-6)]
    )
    aurocs = [roc_auc_score(labels.numpy(), fuse(stats, a, one_class, supervised).numpy()) for a in FUSION_WEIGHTS]
    return stats, float(FUSION_WEIGHTS[int(np.argmax(aurocs))])


def selection(one_class: torch.Tensor, supervised: torch.Tensor, labels: torch.Tensor, rule: OperatingRule):
    """What the hybrid chooses on calibration scores, for ``calibration.cross_validated_point``: the
    fusion statistics and weight, then the threshold, all on the ``fit`` part only."""

    def select(fit: np.ndarray) -> tuple[np.ndarray, float]:
        fit = torch.from_numpy(fit)
        stats, alpha = choose_fusion(one_class[fit], supervised[fit], labels[fit])
        fused = fuse(stats, alpha, one_class, supervised).numpy()
        return fused, choose_threshold(labels.numpy()[fit.numpy()], fused[fit.numpy()], rule)

    return select


def fit(extractor, coresets: dict, one_class: torch.Tensor, descriptors: torch.Tensor, labels: torch.Tensor, folds: np.ndarray):
    """The final model, out-of-fold fused scores and out-of-fold head scores, from the folds'
    coresets, the one-class out-of-fold scores they gave, and every image's descriptor.

    Like PatchCore's bank parts, the deployed head is the mean of the fold heads, not one head
    trained on every image: a new image is then scored as the out-of-fold scores were, so the
    fusion statistics and the threshold chosen on them hold (with the earlier patch head, one
    head on all the data scored new good parts higher and flagged up to twice the false alarms
    calibration expected).
    """
    supervised, heads, _ = cross_fit(descriptors, labels, folds)
    stats, alpha = choose_fusion(one_class, supervised, labels)
    model = Hybrid(patchcore_fitting.union_of(extractor, coresets), mean_head(heads), stats, alpha)
    return model, model.fuse(one_class, supervised).detach(), supervised
