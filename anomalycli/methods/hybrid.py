"""Hybrid: PatchCore's one-class score fused with a light supervised head on the same patch features.

The head is linear on frozen patch features and scores an image by the mean of its top 1 %
patch logits (multiple-instance learning with image labels only), so it trains in seconds on a
CPU. Fusion weight and threshold come from out-of-fold scores (cross-fitting over all labelled
training images): no image is scored by a model that saw it. At least a quarter of the weight
stays on the one-class score, so a defect kind absent from training is still flagged.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from anomalycli.methods.patchcore import PatchCore, fold_coresets, out_of_fold_scores, union_of
from anomalycli.methods.patchcore import build_net as build_patchcore

FUSION_WEIGHTS = np.linspace(0.25, 1.0, 7)  # weight of the one-class score


class PatchHead(nn.Module):
    """Linear patch classifier on standardised features; image logit = mean of the top-k patch logits."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.linear = nn.Linear(channels, 1)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) with the standardisation folded in: linear((f - mean) / std) = f @ weight + bias."""
        weight = self.linear.weight.squeeze(0) / self.std
        return weight, self.linear.bias - self.mean @ weight

    def patch_logits(self, features: torch.Tensor) -> torch.Tensor:
        weight, bias = self.folded()
        # A matrix, not a vector, on the right: ONNX Runtime 1.32's MatmulTransposeFusion miscomputes
        # a transposed (N, P, C) input times a vector, so the exported graph would score wrongly.
        return (features.float() @ weight.unsqueeze(1)).squeeze(-1) + bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.patch_logits(features)
        return logits.topk(top_k(logits.shape[1]), dim=1).values.mean(1)


def top_k(n_patches: int) -> int:
    return max(1, n_patches // 100)


def train_head(features: torch.Tensor, labels: torch.Tensor, seed: int = 0, steps: int = 200, lr: float = 1e-2) -> PatchHead:
    """Fit the head on (N, P, C) features and image labels, full batch, anomalies up-weighted.

    Each step finds every image's top-k patches without gradients, then back-propagates through
    those alone: the same gradient as through ``topk`` over all patches, at a fraction of the cost.
    """
    torch.manual_seed(seed)
    channels = features.shape[-1]
    head = PatchHead(channels)
    normal = features[labels == 0].reshape(-1, channels).float()
    head.mean.copy_(normal.mean(0))
    head.std.copy_(normal.std(0).clamp_min(1e-6))
    del normal
    # Start from the direction in which defective images' patches differ on average: top-k pooling
    # from a random start can lock onto patches that say nothing about the defect.
    if (labels == 1).any():
        shift = (features[labels == 1].reshape(-1, channels).float().mean(0) - head.mean) / head.std
        with torch.no_grad():
            head.linear.weight.copy_(shift.unsqueeze(0) / shift.norm().clamp_min(1e-6))
            head.linear.bias.zero_()
    labels = labels.float()
    n_pos = labels.sum().clamp_min(1)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=(len(labels) - n_pos) / n_pos)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    # One column per patch: the selection's matrix-vector product streams it faster than rows.
    columns = torch.empty(channels, features.shape[0] * features.shape[1])
    columns.copy_(features.reshape(-1, channels).T)
    k = top_k(features.shape[1])
    for _ in range(steps):
        with torch.no_grad():
            weight, bias = head.folded()
            top = (weight @ columns + bias).view(features.shape[:2]).topk(k, dim=1).indices
        selected = features[torch.arange(len(features)).unsqueeze(1), top].float()
        loss = loss_fn(head.patch_logits(selected).mean(1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


class FoldHeads(nn.Module):
    """The cross-fitting folds' heads; an image scores their mean, as each head scored its own fold out of fold."""

    def __init__(self, heads: list[PatchHead]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features) for head in self.heads]).mean(0)


class Hybrid(nn.Module):
    def __init__(self, patchcore: PatchCore, head: PatchHead | FoldHeads, stats: torch.Tensor, alpha: float):
        super().__init__()
        self.patchcore = patchcore
        self.head = head
        # (one-class mean, std, head mean, std) over out-of-fold normal scores; the fusion weight.
        self.register_buffer("stats", stats.float())
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def fuse(self, one_class: torch.Tensor, supervised: torch.Tensor) -> torch.Tensor:
        m0, s0, m1, s1 = self.stats
        return self.alpha * (one_class - m0) / s0 + (1 - self.alpha) * (supervised - m1) / s1

    def forward(self, x: torch.Tensor, with_maps: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        features, grid = self.patchcore.embed(x)
        one_class, maps = self.patchcore.score_features(features, grid, x.shape[-2:] if with_maps else None)
        return self.fuse(one_class, self.head(features)), maps


def build_net(config: dict) -> Hybrid:
    one_class = build_patchcore(config)  # its old-file rules (no bank parts, plain max) hold here too
    channels = one_class.bank.shape[1]
    # Model files from before the fold heads hold one head trained on every image.
    n_heads = config.get("head_folds")
    head = FoldHeads([PatchHead(channels) for _ in range(n_heads)]) if n_heads else PatchHead(channels)
    return Hybrid(one_class, head, torch.ones(4), 1.0)


@torch.no_grad()
def _head_scores(head: PatchHead, features: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([head(features[i : i + batch]) for i in range(0, len(features), batch)])


def cross_fit(extractor, features: torch.Tensor, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, seed: int = 0, coresets: dict | None = None):
    """Out-of-fold (one-class, supervised) scores of every image, the fold heads, and the (fit, scored) index sets used."""
    coresets = fold_coresets(features, labels, folds, coreset_ratio, seed=seed) if coresets is None else coresets
    one_class = out_of_fold_scores(extractor, features, folds, coresets)
    supervised = torch.empty(len(labels))
    heads, used = [], []
    for fold in np.unique(folds):
        scored = np.flatnonzero(folds == fold)
        fitted = np.flatnonzero(folds != fold)
        heads.append(train_head(features[fitted], labels[fitted], seed))
        supervised[scored] = _head_scores(heads[-1], features[scored])
        used.append((fitted, scored))
    return one_class, supervised, heads, used


def choose_fusion(one_class: torch.Tensor, supervised: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """z-score statistics on normal out-of-fold scores, and the weight with the best out-of-fold AUROC."""
    normal = labels == 0
    stats = torch.stack([one_class[normal].mean(), one_class[normal].std().clamp_min(1e-6),
                         supervised[normal].mean(), supervised[normal].std().clamp_min(1e-6)])
    z0 = (one_class - stats[0]) / stats[1]
    z1 = (supervised - stats[2]) / stats[3]
    aurocs = [roc_auc_score(labels.numpy(), (a * z0 + (1 - a) * z1).numpy()) for a in FUSION_WEIGHTS]
    return stats, float(FUSION_WEIGHTS[int(np.argmax(aurocs))])


def fit(extractor, features: torch.Tensor, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, seed: int = 0, coresets: dict | None = None):
    """The final model and out-of-fold fused scores.

    Like PatchCore's bank parts, the deployed head is the mean of the fold heads, not one head
    trained on every image: a new image is then scored as the out-of-fold scores were, so the
    fusion statistics and the threshold chosen on them hold (one head on all the data scored new
    good parts higher, and flagged up to twice the false alarms calibration expected).
    """
    coresets = fold_coresets(features, labels, folds, coreset_ratio, seed=seed) if coresets is None else coresets
    one_class, supervised, heads, _ = cross_fit(extractor, features, labels, folds, coreset_ratio, seed, coresets)
    stats, alpha = choose_fusion(one_class, supervised, labels)
    model = Hybrid(union_of(extractor, coresets), FoldHeads(heads), stats, alpha)
    return model, model.fuse(one_class, supervised).detach()
