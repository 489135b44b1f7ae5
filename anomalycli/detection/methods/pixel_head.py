"""The hybrid's pixel head: where the labelled defects have masks, a small classifier on the patch
features (linear, or with one hidden layer: ``HEAD_KINDS``, which train chooses between) learns
what defect patches look like; the anomaly map is then made of
the mean of its z-scored logit and the z-scored distance to the memory bank, patch by patch. The
distance finds what no good part looks like, the head where the masked defects lie: on
magnetic tiles the pair raised the held-out pixel AUROC from 0.86 to 0.97 and AUPRO from 0.80 to
0.91 (BENCHMARKS.md, Localisation). The image score does not change: the map says where, not whether.

Cross-fitted: one head per fold, trained on the other folds' patches, scores its own fold, and
the pixel threshold is chosen on those out-of-fold maps; the deployed head is one more, fitted on
every fold's patches as each fold's head was on four, so new maps spread as the out-of-fold ones
did. (The mean of the fold heads, as the linear image head is deployed, is not: their hidden
units differ and their mean logit is shrunk, so the held-out screws had a third of the good
pixels above the threshold that training announced, and their regions were found less often:
BENCHMARKS.md, Localisation's levers.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalycli.detection.methods.fitting import fit_logistic, fit_mlp

# A patch is a positive when a mask covers at least this share of it, a negative when none does;
# the patches a mask's edge crosses are left out, being neither.
POSITIVE_COVER = 0.5
# Negatives sampled from each good image and from each masked defect image's unmasked patches
# (about 40,000 on the development sets: a fold's head fits in a few seconds).
NEGATIVES_PER_GOOD, NEGATIVES_PER_DEFECT = 40, 200
# A head with a hidden layer: its units, L2 strength and passes over the patches (at least
# MIN_STEPS batches, for small data sets). One hidden layer raised the tiles' pixel AUROC from
# 0.942 to 0.972 over a linear head, but the linear head found more of the screws' regions at the
# threshold (BENCHMARKS.md, Localisation's levers), so train fits both (HEAD_KINDS, by their hidden
# units) and keeps the one whose out-of-fold regions serve best.
HIDDEN_UNITS, ALPHA, EPOCHS, MIN_STEPS, BATCH_SIZE = 64, 1e-4, 8, 250, 512
HEAD_KINDS = (HIDDEN_UNITS, 0)
# The linear head's inverse L2 strength, on standardised features (as the image head's ``HEAD_C``).
LINEAR_C = 0.1


class PixelHead(nn.Module):
    """A patch classifier, its standardisation folded in: ``relu(x @ W1 + b1) @ w + b`` (without
    ``hidden`` units, as files from before them: ``x @ w + b``), and the statistics that z-score
    its logits and the bank distances on good patches (distance mean, std, logit mean, std)."""

    def __init__(self, channels: int, hidden: int = 0):
        super().__init__()
        self.register_buffer("hidden_weight", torch.zeros(channels, hidden) if hidden else None)
        self.register_buffer("hidden_bias", torch.zeros(hidden) if hidden else None)
        self.register_buffer("weight", torch.zeros(hidden or channels, 1))
        self.register_buffer("bias", torch.zeros(1))
        self.register_buffer("stats", torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, P) logits of patch features (N, P, C)."""
        x = features.float()
        if self.hidden_weight is not None:
            x = torch.relu(x @ self.hidden_weight + self.hidden_bias)
        return (x @ self.weight).squeeze(-1) + self.bias

    def fused(self, distances: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The map's patch scores (N, P) from the bank distances (N, P) and the patch features."""
        return fuse(self.stats, distances, self.logits(features))

    def settings(self) -> dict:
        """What the model file's config keeps to build it again (``build_pixel_head``)."""
        return {"hidden": 0 if self.hidden_weight is None else self.hidden_weight.shape[1]}


def build_pixel_head(settings, channels: int) -> PixelHead | None:
    """The pixel head a model file's ``config["pixel_head"]`` describes: none (false), the linear
    head (``true``: files from before ``settings``), or ``settings``."""
    if not settings:
        return None
    return PixelHead(channels, 0 if settings is True else int(settings["hidden"]))


def fuse(stats: torch.Tensor, distances: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    m0, s0, m1, s1 = stats
    return 0.5 * (distances - m0) / s0 + 0.5 * (logits - m1) / s1


def mask_cover(masks: list, grid: tuple[int, int]) -> np.ndarray:
    """The share of each patch (N, h*w) that a mask (bool S x S, None: nothing) covers."""
    cover = np.zeros((len(masks), grid[0] * grid[1]), np.float32)
    for i, mask in enumerate(masks):
        if mask is not None:
            pooled = F.adaptive_avg_pool2d(torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None, None], grid)
            cover[i] = pooled.flatten().numpy()
    return cover


def cross_fit(
    patches_of: Callable[[np.ndarray], torch.Tensor],
    distances: np.ndarray,
    cover: np.ndarray,
    trained_on: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    seed: int = 0,
    hidden: int = HIDDEN_UNITS,
) -> tuple[PixelHead, np.ndarray]:
    """The deployed head (with ``hidden`` units, 0: linear) and every image's out-of-fold map patch scores (N, P).

    ``patches_of(indices)``: those images' patch features (n, P, C); ``distances``: the bank's
    out-of-fold patch distances (N, P); ``cover``: ``mask_cover`` of each image (zeros for a good
    one); ``trained_on``: the images a head may learn from (the good ones and the masked defects).
    """
    x, y, w, owner = _training_patches(patches_of, np.flatnonzero(trained_on), cover, labels, np.random.default_rng(seed))
    logits = np.zeros(distances.shape, np.float32)
    for fold in np.unique(folds):
        rows = folds[owner] != fold
        fold_head = _fit_head(x[rows], y[rows], w[rows], hidden, seed)
        scored = np.flatnonzero(folds == fold)
        for start in range(0, len(scored), 64):
            part = scored[start : start + 64]
            logits[part] = fold_head.logits(patches_of(part)).numpy()
    head = _fit_head(x, y, w, hidden, seed)
    good = labels == 0
    head.stats.copy_(torch.tensor([distances[good].mean(), max(distances[good].std(), 1e-6), logits[good].mean(), max(logits[good].std(), 1e-6)]))
    return head, fuse(head.stats, torch.from_numpy(distances), torch.from_numpy(logits)).numpy()


def _training_patches(patches_of, images: np.ndarray, cover: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """What the heads learn from: the features of every positive patch of ``images`` and a sample
    of their negatives, each patch's class, weight and image. Each defect image's positives weigh 1
    together, whatever their count: a small blowhole counts as much as a broken edge (unweighted,
    the tiles' small defects lost their regions: BENCHMARKS.md, Localisation's levers)."""
    x, y, w, owner = [], [], [], []
    for start in range(0, len(images), 64):
        part = images[start : start + 64]
        features = patches_of(part)
        for k, i in enumerate(part):
            negatives = np.flatnonzero(cover[i] == 0)
            negatives = rng.choice(negatives, min(len(negatives), NEGATIVES_PER_GOOD if labels[i] == 0 else NEGATIVES_PER_DEFECT), replace=False)
            positives = np.flatnonzero(cover[i] >= POSITIVE_COVER)
            chosen = np.concatenate([positives, np.sort(negatives)])
            x.append(features[k, chosen].float().numpy())
            y.append(np.arange(len(chosen)) < len(positives))
            w.append(np.where(y[-1], 1.0 / max(1, len(positives)), 1.0))
            owner.append(np.full(len(chosen), i))
    return np.concatenate(x).astype(np.float64), np.concatenate(y), np.concatenate(w), np.concatenate(owner)


@torch.no_grad()
def _fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, hidden: int = HIDDEN_UNITS, seed: int = 0) -> PixelHead:
    """A head with ``hidden`` units (0: linear) fitted on patch features ``x``, classes ``y`` and
    weights ``w``, the two classes' weights balanced (with one class only: it scores every patch 0)."""
    head = PixelHead(x.shape[1], hidden)
    if y.all() or not y.any():
        return head.eval()
    w = np.where(y, w / w[y].sum(), w / w[~y].sum())
    w = w / w.mean()
    if hidden:
        hidden_weight, hidden_bias, weight, bias = fit_mlp(x, y, hidden, ALPHA, EPOCHS, MIN_STEPS, BATCH_SIZE, seed, sample_weight=w)
        head.hidden_weight.copy_(torch.from_numpy(hidden_weight))
        head.hidden_bias.copy_(torch.from_numpy(hidden_bias))
    else:
        weight, bias = fit_logistic(x, y, LINEAR_C, max_iter=2000, sample_weight=w)
    head.weight.copy_(torch.from_numpy(weight).unsqueeze(1))
    head.bias.fill_(bias)
    return head.eval()
