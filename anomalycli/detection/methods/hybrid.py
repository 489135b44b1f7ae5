"""Hybrid: PatchCore's one-class score fused with a supervised head that has seen labelled defects.

The head is a logistic regression on one descriptor of the whole image: the mean and the
maximum of the backbone's stride-16 and stride-32 feature maps (``backbones.descriptor``), read in
the same pass that gives PatchCore its patches. The patch distance finds what no good part
looks like; the head finds what the labelled defects look like, including ones spread over the
whole surface that no single patch shows, and the two make different mistakes (BENCHMARKS.md,
Separation). It trains in well under a second on a CPU.

Fusion weight and threshold come from out-of-fold scores (cross-fitting over all labelled
training images, ``hybrid_fitting``): no image is scored by a model that saw it. At least half of
the weight stays on the one-class score, so a defect kind absent from training is still flagged.
Where 5 or more training defects have masks, the map gets a supervised part too (``pixel_head``).
Model files from before the global head hold a linear head on patch features (``PatchHead``).
"""

from __future__ import annotations

import torch
from torch import nn

from anomalycli.detection import backbones
from anomalycli.detection.methods.patchcore import PatchCore, embed_maps, maps_from_patches
from anomalycli.detection.methods.patchcore import build_net as build_patchcore
from anomalycli.detection.methods.pixel_head import PixelHead, build_pixel_head


class GlobalHead(nn.Module):
    """A logistic regression's decision function on image descriptors, its standardisation folded in."""

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(size, 1))
        self.register_buffer("bias", torch.zeros(1))

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return (descriptors.float() @ self.weight).squeeze(1) + self.bias


class PatchHead(nn.Module):
    """Model files from before the global head: a linear patch classifier on standardised
    features; image logit = mean of the top-k patch logits."""

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


class FoldHeads(nn.Module):
    """The cross-fitting folds' heads; an image scores their mean, as each head scored its own fold out of fold."""

    def __init__(self, heads: list[PatchHead]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features) for head in self.heads]).mean(0)


class Hybrid(nn.Module):
    def __init__(self, patchcore: PatchCore, head: GlobalHead | PatchHead | FoldHeads, stats: torch.Tensor, alpha: float, pixel_head: PixelHead | None = None):
        super().__init__()
        self.patchcore = patchcore
        self.head = head
        self.pixel_head = pixel_head  # where the training defects had masks: the map's second part (``pixel_head``)
        # (one-class mean, std, head mean, std) over out-of-fold normal scores; the fusion weight.
        self.register_buffer("stats", stats.float())
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def fuse(self, one_class: torch.Tensor, supervised: torch.Tensor) -> torch.Tensor:
        return fuse(self.stats, self.alpha, one_class, supervised)

    def with_bank(self, bank: torch.Tensor, part_sizes: list[int] | None = None) -> "Hybrid":
        """This hybrid with another memory bank (``PatchCore.with_bank``), every other part kept and
        shared: the heads, the pixel head and the fusion (``adapt``'s folds and adapted model)."""
        return Hybrid(self.patchcore.with_bank(bank, part_sizes), self.head, self.stats, float(self.alpha), self.pixel_head)

    def forward(self, x: torch.Tensor, with_maps: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.score_maps(self.patchcore.extractor(x, deep=self.deep), x.shape[-2:] if with_maps else None)

    @property
    def deep(self) -> bool:
        """Whether the head reads the later stages' maps (the global head) or the patch features only."""
        return isinstance(self.head, GlobalHead)

    def score_maps(self, maps: list[torch.Tensor], image_size=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward`` from the extractor's maps on (see ``PatchCore.score_maps``)."""
        features, grid = embed_maps(maps)
        if self.pixel_head is None or image_size is None:
            one_class, anomaly_maps = self.patchcore.score_features(features, grid, image_size)
        else:
            one_class, distances = self.patchcore.score_patches(features, grid)
            anomaly_maps = maps_from_patches(self.pixel_head.fused(distances, features), grid, image_size, self.patchcore.map_blur)
        supervised = self.head(backbones.descriptor(maps)) if self.deep else self.head(features)
        return self.fuse(one_class, supervised), anomaly_maps


def build_net(config: dict) -> Hybrid:
    one_class = build_patchcore(config)  # its old-file rules (no bank parts, plain max) hold here too
    if config.get("head") == "global":
        head = GlobalHead(config["descriptor_size"])
    else:
        # Older files: fold heads on patch features, or before those one head trained on every image.
        channels = one_class.bank.shape[1]
        n_heads = config.get("head_folds")
        head = FoldHeads([PatchHead(channels) for _ in range(n_heads)]) if n_heads else PatchHead(channels)
    return Hybrid(one_class, head, torch.ones(4), 1.0, build_pixel_head(config.get("pixel_head"), one_class.bank.shape[1]))


def fuse(stats: torch.Tensor, alpha, one_class: torch.Tensor, supervised: torch.Tensor) -> torch.Tensor:
    """The fused score: ``alpha`` times the z-scored one-class score plus the rest times the z-scored head score."""
    m0, s0, m1, s1 = stats
    return alpha * (one_class - m0) / s0 + (1 - alpha) * (supervised - m1) / s1
