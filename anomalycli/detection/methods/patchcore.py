"""PatchCore (Roth et al., CVPR 2022): a memory bank of good-patch features.

An image's anomaly map is each patch's distance to its nearest good patch; its score is the
largest value of that map after a Gaussian blur over neighbouring patches (``score_blur``, in
patches; 0 is the paper's plain maximum), optionally re-weighted as in the paper. A single
far patch is often noise; a defect moves a few neighbours together, and blurring first lifts
image AUROC on both development sets (BENCHMARKS.md). The bank holds good images' patches only;
``patchcore_fitting`` builds it.

A bank cross-fitted in k parts (one coreset per fold of the good images) scores an image as the
mean, over the parts, of its score against the bank without that part. Each of those is scored
exactly as the out-of-fold calibration scores were (a bank of k-1 parts, an image it never saw),
so the threshold chosen on them holds for new images; the whole bank would score new images
lower than calibration expects, and the threshold would miss defects.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from anomalycli.detection import backbones, bank_search, int8_backbone
from anomalycli.detection.bank_search import BankIndex, nearest_distances

# Gaussian sigma, in patches, of the blur before the image score's maximum (see the module doc).
SCORE_BLUR = 1.0
# Gaussian sigma, in pixels of the model's input, of the anomaly map's blur: 8 against 4 raised
# magnetic tiles' 5-fold pixel AUROC 0.841 -> 0.855 and AUPRO 0.792 -> 0.801, screws' tied
# ("Levers" in BENCHMARKS.md). Model files from before keep their 4 (``build_net``).
MAP_BLUR, OLD_MAP_BLUR = 8.0, 4.0


class PatchCore(nn.Module):
    def __init__(
        self,
        extractor: backbones.FeatureExtractor,
        bank: torch.Tensor,
        reweight: bool = False,
        neighbours: int = 9,
        part_sizes: list[int] | None = None,
        score_blur: float = SCORE_BLUR,
        map_blur: float = MAP_BLUR,
    ):
        super().__init__()
        self.extractor = extractor
        self.register_buffer("bank", bank.float())
        self.reweight = reweight
        self.score_blur = score_blur
        self.map_blur = map_blur
        self.neighbours = neighbours
        self.part_sizes = list(part_sizes) if part_sizes and len(part_sizes) > 1 else None
        # How an exported graph's bank search multiplies (``searching``): float32, or int8 as
        # ONNX Runtime's DynamicQuantizeMatMul for a model with an int8 backbone.
        self.exported_search = "float32"
        self._index, self._index_key = None, None

    def with_bank(self, bank: torch.Tensor, part_sizes: list[int] | None = None) -> "PatchCore":
        """This scorer with another memory bank (in ``part_sizes`` parts), every other setting kept,
        the extractor shared: ``adapt``'s folds and adapted bank."""
        twin = self._twin()
        twin._buffers["bank"] = bank.float()
        twin.part_sizes = list(part_sizes) if part_sizes and len(part_sizes) > 1 else None
        return twin

    def searching(self, exported_search: str) -> "PatchCore":
        """This scorer whose exported graph's bank search multiplies in ``exported_search``
        (``float32`` or ``int8``); the export traces it, the scorer itself is unchanged."""
        twin = self._twin()
        twin.exported_search = exported_search
        return twin

    def _twin(self) -> "PatchCore":
        """A shallow copy with its own buffer and module tables and no index yet."""
        twin = copy.copy(self)
        twin._buffers, twin._modules = dict(self._buffers), dict(self._modules)
        twin._index, twin._index_key = None, None
        return twin

    @property
    def index(self) -> BankIndex:
        """The bank ready for searching, made on first use and again whenever the bank or the way to
        search it changes (a loaded model's bank is copied in after construction; an exported graph
        traces its own)."""
        if torch.onnx.is_in_onnx_export():
            return BankIndex(self.bank, self.part_sizes, self.exported_search)
        # bank_search.search_kind looked up in its module: tests and benchmarks force a kind there.
        key = (self.bank.data_ptr(), self.bank._version, tuple(self.bank.shape), self.bank.device, bank_search.search_kind(self.bank.device))
        if self._index_key != key:
            self._index, self._index_key = BankIndex(self.bank, self.part_sizes), key
        return self._index

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_index"], state["_index_key"] = None, None  # its ONNX Runtime session does not pickle
        return state

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Locally aware patch features: (N, h*w, C) on the stride-8 grid, and (h, w)."""
        return embed_maps(self.extractor(x))

    def forward(self, x: torch.Tensor, with_maps: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.score_maps(self.extractor(x), x.shape[-2:] if with_maps else None)

    def score_maps(self, maps: list[torch.Tensor], image_size=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward`` from the extractor's maps on: what follows the backbone (``export`` runs it after an int8 one)."""
        features, grid = embed_maps(maps)
        return self.score_features(features, grid, image_size)

    def score_features(self, features: torch.Tensor, grid: tuple[int, int], image_size=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image scores [N] and blurred anomaly maps [N, H, W] (None without ``image_size``) from patch features (N, h*w, C)."""
        scores, patch_scores = self.score_patches(features, grid)
        return scores, None if image_size is None else maps_from_patches(patch_scores, grid, image_size, self.map_blur)

    def score_patches(self, features: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores [N] and patch scores (N, h*w): the map before it is scaled and blurred."""
        (h, w), n = grid, features.shape[0]
        flat = features.reshape(-1, features.shape[-1])
        if self.part_sizes:
            patch_scores, scores, worst = self._leave_one_part_out(flat, grid)
        else:
            _, dist = self.index.nearest(flat, per_image=h * w)
            patch_scores = dist[:, 0].view(n, h * w)
            scores, worst = self._image_scores(patch_scores.unsqueeze(2), grid)
            scores = scores.squeeze(1)
        if self.reweight and self.bank.shape[0] > 1:
            worst_patch = features[torch.arange(n), worst].float()
            nearest, distances = self.index.nearest(worst_patch)  # each part's nearest: the nearest of all is theirs
            scores = scores * self._weights(worst_patch, nearest.gather(1, distances.argmin(1, keepdim=True))[:, 0])
        return scores, patch_scores

    def _image_scores(self, patch_scores: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores [N, M] and the index of the deciding patch [N] from M patch-score maps (N, P, M)."""
        n, _, m = patch_scores.shape
        if self.score_blur > 0:
            maps = patch_scores.permute(0, 2, 1).reshape(n * m, 1, *grid)
            patch_scores = _gaussian_blur(maps, self.score_blur).view(n, m, -1).permute(0, 2, 1)
        scores, worst = patch_scores.max(dim=1)
        return scores, worst[:, 0]

    def _leave_one_part_out(self, flat: torch.Tensor, grid: tuple[int, int]):
        """Patch scores (N, P), image scores [N] and deciding patches [N], each from the mean over
        parts of the bank without that part."""
        _, per_part = self.index.nearest(flat, per_image=grid[0] * grid[1])  # (N*P, parts)
        two = per_part.topk(2, dim=1, largest=False)
        # Without part f, the nearest is the nearest of all unless that lay in f; then the second nearest.
        nearest_is_f = F.one_hot(two.indices[:, 0], per_part.shape[1]).bool()
        n = flat.shape[0] // (grid[0] * grid[1])
        without = torch.where(nearest_is_f, two.values[:, 1:2], two.values[:, 0:1]).view(n, -1, per_part.shape[1])
        scores, worst = self._image_scores(without, grid)
        return without.mean(dim=2), scores.mean(dim=1), worst

    def _weights(self, worst_patch: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
        """Paper eq. 7: down-weight a far patch whose nearest good patch sits in a dense region."""
        k = min(self.neighbours, self.bank.shape[0])
        _, around = nearest_distances(self.bank[nearest], self.bank, k=k)
        to_neighbours = torch.linalg.vector_norm(worst_patch.unsqueeze(1) - self.bank[around], dim=2)
        # softmax over neighbours of the distance to the nearest one; 1 - that is the weight.
        return 1 - torch.softmax(to_neighbours, dim=1)[:, 0]


def embed_maps(maps: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
    """PatchCore's patch features from the extractor's stride-8 and stride-16 maps (see ``PatchCore.embed``)."""
    maps = maps[:2]
    size = maps[0].shape[-2:]
    # 3x3 neighbourhood average, then the coarser map brought onto the finer grid.
    maps = [F.avg_pool2d(m, 3, stride=1, padding=1) for m in maps]
    maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
    features = torch.cat(maps, dim=1)
    return features.flatten(2).transpose(1, 2), (int(size[0]), int(size[1]))


def maps_from_patches(patch_scores: torch.Tensor, grid: tuple[int, int], image_size, map_blur: float) -> torch.Tensor:
    """Anomaly maps [N, H, W] at ``image_size`` (H, W) from patch scores (N, h*w): bilinear, then
    blurred. Both steps are linear and act on each axis alone, so each axis's two are one matrix
    (``_upsampled_and_blurred``) and a map is two small products: the same maps within float
    rounding, at a fraction of the cost of blurring the full-size map (BENCHMARKS.md, Speed)."""
    rows = _upsampled_and_blurred(grid[0], int(image_size[0]), map_blur).to(patch_scores)
    cols = _upsampled_and_blurred(grid[1], int(image_size[1]), map_blur).to(patch_scores)
    return rows @ patch_scores.reshape(-1, *grid) @ cols.T


@functools.lru_cache(maxsize=16)
def _upsampled_and_blurred(cells: int, size: int, sigma: float) -> torch.Tensor:
    """The (size x cells) matrix that takes ``cells`` values along one axis to ``size`` pixels as
    ``F.interpolate`` (bilinear, align_corners=False) then ``_gaussian_blur`` do along that axis:
    each column is a unit impulse put through both. Made through numpy, so that an exported graph
    holds it as a constant, not as the steps that make it."""
    impulses = torch.eye(cells, dtype=torch.float64).unsqueeze(1)  # (cells, 1, cells)
    upsampled = F.interpolate(impulses, size=size, mode="linear", align_corners=False)
    radius, kernel = _gaussian_kernel(sigma, torch.float64)
    blurred = F.conv1d(F.pad(upsampled, (radius, radius), mode="reflect"), kernel.view(1, 1, -1))
    return torch.from_numpy(blurred[:, 0].T.float().numpy().copy())


def _gaussian_kernel(sigma: float, dtype: torch.dtype) -> tuple[int, torch.Tensor]:
    """A normalised Gaussian of ``sigma`` cut at 3 sigma: its radius and its taps."""
    radius = int(math.ceil(3 * sigma))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=dtype) / sigma) ** 2)
    return radius, kernel / kernel.sum()


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius, kernel = _gaussian_kernel(sigma, maps.dtype)
    kernel = kernel.to(maps.device)
    maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def build_net(config: dict) -> PatchCore:
    extractor = int8_backbone.extractor_for(config)
    bank = torch.zeros(config["bank_size"], sum(extractor.channels))
    # Model files from before the blurred score have no "score_blur": they keep the plain maximum.
    return PatchCore(
        extractor,
        bank,
        reweight=config.get("reweight", False),
        part_sizes=config.get("bank_parts"),
        score_blur=config.get("score_blur", 0.0),
        map_blur=config.get("map_blur", OLD_MAP_BLUR),
    )
