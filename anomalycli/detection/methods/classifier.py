"""Supervised classifier: an ImageNet backbone with a new two-class head.

The training loop lives in ``anomalycli.detection.methods.classifier_training``; this module is only the network.
"""

from __future__ import annotations

import torch
from torch import nn

from anomalycli.detection import backbones


class ClassifierNet(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, with_maps: bool = True) -> tuple[torch.Tensor, None]:
        # Score = probability of the anomaly class (index 1).
        return self.model(x).softmax(dim=1)[:, 1], None


def new_net(backbone: str, weights: str) -> ClassifierNet:
    return ClassifierNet(backbones.replace_head(backbone, backbones.build(backbone, weights), 2))


def build_net(config: dict) -> ClassifierNet:
    return new_net(config["backbone"], "none")
