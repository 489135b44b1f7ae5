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

from anomalycli import backbones
from anomalycli.methods.patchcore import PatchCore, build_bank

FUSION_WEIGHTS = np.linspace(0.25, 1.0, 7)  # weight of the one-class score


class PatchHead(nn.Module):
    """Linear patch classifier on standardised features; image logit = mean of the top-k patch logits."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.linear = nn.Linear(channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.linear((features.float() - self.mean) / self.std).squeeze(-1)
        k = max(1, logits.shape[1] // 100)
        return logits.topk(k, dim=1).values.mean(1)


def train_head(features: torch.Tensor, labels: torch.Tensor, seed: int = 0, steps: int = 200, lr: float = 1e-2) -> PatchHead:
    """Fit the head on (N, P, C) features and image labels, full batch, anomalies up-weighted."""
    torch.manual_seed(seed)
    head = PatchHead(features.shape[-1])
    flat = features[labels == 0].reshape(-1, features.shape[-1]).float()
    head.mean.copy_(flat.mean(0))
    head.std.copy_(flat.std(0).clamp_min(1e-6))
    labels = labels.float()
    n_pos = labels.sum().clamp_min(1)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=(len(labels) - n_pos) / n_pos)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    features = features.float()
    for _ in range(steps):
        loss = loss_fn(head(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


class Hybrid(nn.Module):
    def __init__(self, patchcore: PatchCore, head: PatchHead, stats: torch.Tensor, alpha: float):
        super().__init__()
        self.patchcore = patchcore
        self.head = head
        # (one-class mean, std, head mean, std) over out-of-fold normal scores; the fusion weight.
        self.register_buffer("stats", stats.float())
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def fuse(self, one_class: torch.Tensor, supervised: torch.Tensor) -> torch.Tensor:
        m0, s0, m1, s1 = self.stats
        return self.alpha * (one_class - m0) / s0 + (1 - self.alpha) * (supervised - m1) / s1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, grid = self.patchcore.embed(x)
        one_class, maps = self.patchcore.score_features(features, grid, x.shape[-2:])
        return self.fuse(one_class, self.head(features)), maps


def build_net(config: dict) -> Hybrid:
    extractor = backbones.FeatureExtractor(config["backbone"], backbones.build(config["backbone"], "none"))
    channels = sum(extractor.channels)
    patchcore = PatchCore(extractor, torch.zeros(config["bank_size"], channels))
    return Hybrid(patchcore, PatchHead(channels), torch.ones(4), 1.0)


def _one_class_scores(patchcore: PatchCore, features: torch.Tensor, batch: int = 64) -> torch.Tensor:
    side = int(round(features.shape[1] ** 0.5))  # images are resized to squares
    return torch.cat([patchcore.score_features(features[i : i + batch].float(), (side, side))[0] for i in range(0, len(features), batch)])


@torch.no_grad()
def _head_scores(head: PatchHead, features: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([head(features[i : i + batch]) for i in range(0, len(features), batch)])


def cross_fit(extractor, features: torch.Tensor, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, seed: int = 0):
    """Out-of-fold (one-class, supervised) scores of every image, and the (fit, scored) index sets used."""
    one_class = torch.empty(len(labels))
    supervised = torch.empty(len(labels))
    used = []
    channels = features.shape[-1]
    for fold in np.unique(folds):
        scored = np.flatnonzero(folds == fold)
        fitted = np.flatnonzero(folds != fold)
        good = fitted[labels[fitted].numpy() == 0]
        bank = build_bank(features[good].reshape(-1, channels), coreset_ratio, seed=seed)
        with torch.no_grad():
            one_class[scored] = _one_class_scores(PatchCore(extractor, bank), features[scored])
        head = train_head(features[fitted], labels[fitted], seed)
        supervised[scored] = _head_scores(head, features[scored])
        used.append((fitted, scored))
    return one_class, supervised, used


def choose_fusion(one_class: torch.Tensor, supervised: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """z-score statistics on normal out-of-fold scores, and the weight with the best out-of-fold AUROC."""
    normal = labels == 0
    stats = torch.stack([one_class[normal].mean(), one_class[normal].std().clamp_min(1e-6),
                         supervised[normal].mean(), supervised[normal].std().clamp_min(1e-6)])
    z0 = (one_class - stats[0]) / stats[1]
    z1 = (supervised - stats[2]) / stats[3]
    aurocs = [roc_auc_score(labels.numpy(), (a * z0 + (1 - a) * z1).numpy()) for a in FUSION_WEIGHTS]
    return stats, float(FUSION_WEIGHTS[int(np.argmax(aurocs))])


def fit(extractor, features: torch.Tensor, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, seed: int = 0):
    """The final model (bank on every good image, head on every image) and out-of-fold fused scores."""
    one_class, supervised, _ = cross_fit(extractor, features, labels, folds, coreset_ratio, seed)
    stats, alpha = choose_fusion(one_class, supervised, labels)
    channels = features.shape[-1]
    bank = build_bank(features[labels == 0].reshape(-1, channels), coreset_ratio, seed=seed)
    model = Hybrid(PatchCore(extractor, bank.to(next(extractor.parameters()).device)), train_head(features, labels, seed), stats, alpha)
    return model, model.fuse(one_class, supervised).detach()
