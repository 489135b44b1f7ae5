"""PatchCore (Roth et al., CVPR 2022): a memory bank of good-patch features.

An image's anomaly map is each patch's distance to its nearest good patch; its score is the
largest value of that map after a Gaussian blur over neighbouring patches (``score_blur``, in
patches; 0 is the paper's plain maximum), optionally re-weighted as in the paper. A single
far patch is often noise; a defect moves a few neighbours together, and blurring first lifts
image AUROC on both development sets (BENCHMARKS.md). ``fit`` sees good images only.

A bank cross-fitted in k parts (one coreset per fold of the good images) scores an image as the
mean, over the parts, of its score against the bank without that part. Each of those is scored
exactly as the out-of-fold calibration scores were (a bank of k-1 parts, an image it never saw),
so the threshold chosen on them holds for new images; the whole bank would score new images
lower than calibration expects, and the threshold would miss defects.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from anomalycli.data.framing import SQUASH
from anomalycli.data.tensors import image_batches
from anomalycli.detection import backbones, bank_search, int8_backbone
from anomalycli.detection.bank_search import BankIndex, nearest_distances
from anomalycli.detection.coreset import SAMPLERS
from anomalycli.judgement import drift

# Gaussian sigma, in patches, of the blur before the image score's maximum (see the module doc).
SCORE_BLUR = 1.0
# Gaussian sigma, in pixels of the model's input, of the anomaly map's blur: 8 against 4 raised
# magnetic tiles' 5-fold pixel AUROC 0.841 -> 0.855 and AUPRO 0.792 -> 0.801, screws' tied
# ("Levers" in BENCHMARKS.md). Model files from before keep their 4 (``build_net``).
MAP_BLUR, OLD_MAP_BLUR = 8.0, 4.0
# Images per backbone call when fitting, and per scoring call on cached features. Part of what
# makes a fit reproducible: a distributed fit cuts its work on these boundaries (deploy/ray_fit.py).
EMBED_BATCH, SCORE_BATCH = 32, 64


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
            _, dist = self.index.nearest(flat)
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
        _, per_part = self.index.nearest(flat)  # (N*P, parts)
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
    """Anomaly maps [N, H, W] at ``image_size`` (H, W) from patch scores (N, h*w): bilinear, then blurred."""
    maps = F.interpolate(patch_scores.reshape(-1, 1, *grid), size=tuple(image_size), mode="bilinear", align_corners=False)
    return _gaussian_blur(maps, sigma=map_blur).squeeze(1)


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(math.ceil(3 * sigma))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=maps.dtype) / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.device)
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


@torch.no_grad()
def embed_all(
    extractor: backbones.FeatureExtractor,
    batches: Iterable[torch.Tensor],
    n_images: int,
    show_progress: bool = False,
    with_descriptors: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Patch features of every image, (n_images, h*w, C) in half precision (10,000 images fit in a
    few GiB), and, ``with_descriptors``, each image's pooled descriptor (n_images, D) from the same pass."""
    features, descriptors = None, None
    filled = 0
    extractor.eval()
    with tqdm(total=n_images, desc="features", unit="img", disable=not show_progress) as bar:
        for batch in batches:
            maps = extractor(batch, deep=with_descriptors)
            patches, _ = embed_maps(maps)
            if features is None:
                features = torch.empty(n_images, *patches.shape[1:], dtype=torch.float16)
            features[filled : filled + len(patches)] = patches.cpu().half()
            if with_descriptors:
                described = backbones.descriptor(maps).cpu()
                if descriptors is None:
                    descriptors = torch.empty(n_images, described.shape[1])
                descriptors[filled : filled + len(described)] = described
            filled += len(patches)
            bar.update(len(patches))
    return features[:filled], None if descriptors is None else descriptors[:filled]


@torch.no_grad()
def embed_images(
    extractor: backbones.FeatureExtractor,
    paths: list,
    image_size: int,
    num_workers: int | None = None,
    show_progress: bool = False,
    with_descriptors: bool = False,
    keep=None,
    framing: str = SQUASH,
    stretch: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray, list[int], list[str]]:
    """Patch features (and descriptors) of the readable images among ``paths``, as ``embed_all``;
    their ``drift.image_stats``, their indices, and the errors of the others. Batches of
    ``EMBED_BATCH`` from the first path: the same paths give the same features wherever they are
    embedded. ``keep`` and ``stretch``: as ``backbones.preprocess`` takes them (a don't-care mask's,
    and whether the model stretches levels: ``data/levels.py``); ``framing``: the model's (``data/framing.py``)."""
    readable: list[int] = []
    errors: list[str] = []
    stats: list[np.ndarray] = [np.empty((0, len(drift.STATS)))]
    device = next(extractor.parameters()).device

    def batches():
        for images, indices, batch_errors in image_batches(paths, image_size, EMBED_BATCH, num_workers, framing=framing):
            errors.extend(filter(None, batch_errors))
            ok = torch.tensor([not e for e in batch_errors])
            readable.extend(indices[ok].tolist())
            if ok.any():
                stats.append(drift.image_stats(images[ok]))
                yield backbones.preprocess(images[ok].to(device), extractor.name, keep, stretch)

    features, descriptors = embed_all(extractor, batches(), len(paths), show_progress, with_descriptors)
    return features, descriptors, np.concatenate(stats), readable, errors


def coreset_bar(total: int, show_progress: bool) -> tqdm:
    return tqdm(total=max(1, total), desc="coreset", unit="patch", disable=not show_progress)


def build_bank(
    patches: torch.Tensor, coreset_ratio: float, sampler: str = "greedy", seed: int = 0, show_progress: bool = False, bar: tqdm | None = None
) -> torch.Tensor:
    """Coreset of good patches (M, C) in float32, from patches (N, C) in any precision; ``bar`` is a shared progress bar."""
    with coreset_bar(round(coreset_ratio * len(patches)), show_progress and bar is None) as own:
        chosen = SAMPLERS[sampler](coreset_ratio, seed=seed).run(patches, progress=(bar or own).update)
    return patches[chosen].float()


def fold_coresets(
    features: torch.Tensor, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, sampler: str = "greedy", seed: int = 0, show_progress: bool = False
) -> dict:
    """One coreset of the good patches of each fold; any union of them is the bank of those folds.

    Sharing them makes cross-fitting cost a fifth of one coreset instead of k coresets over
    (k-1)/k of the data (greedy coreset time grows with patches x bank size); their union is a
    composable coreset of every good image, the final bank.
    """
    channels = features.shape[-1]
    good = labels.numpy() == 0
    parts = {int(f): np.flatnonzero((folds == f) & good) for f in np.unique(folds)}
    total = sum(round(coreset_ratio * len(index) * features.shape[1]) for index in parts.values())
    with coreset_bar(total, show_progress) as bar:
        return {f: build_bank(features[index].reshape(-1, channels), coreset_ratio, sampler, seed, bar=bar) for f, index in parts.items()}


@torch.no_grad()
def score_all(model: PatchCore, features: torch.Tensor, batch: int = SCORE_BATCH) -> torch.Tensor:
    """Image scores of cached patch features (N, h*w, C) of square images."""
    return scores_and_grids(model, features, False, batch).scores


# The pixel threshold is chosen on every fourth pixel of the out-of-fold maps: fine enough for a
# quantile of 0.1 % and for touching regions (the maps are blurred with a sigma of 8 pixels).
# Region areas are measured on whole maps, so that the size rule is chosen on the areas predict
# measures (a fourth-pixel sample gave the same size-rule figures, "Localisation" in BENCHMARKS.md).
MAP_STEP = 4


@dataclass
class Scores:
    """Image scores [N] of cached patch features and, where asked, their patch scores (N, h, w),
    float32: 6 KB an image at 320 px, from which ``maps`` makes their maps at any size exactly as
    scoring does. The pixel threshold and the calibration images' region areas are made of them."""

    scores: torch.Tensor
    grids: np.ndarray | None = None

    @classmethod
    def gathered(cls, n: int, parts: list[tuple[np.ndarray, "Scores"]]) -> "Scores":
        """The scores (and grids) of ``n`` images from parts, each (the images' indices, their ``Scores``)."""
        scores, grids = torch.empty(n), None
        for index, part in parts:
            scores[index] = part.scores
            if part.grids is not None:
                grids = np.empty((n, *part.grids.shape[1:]), np.float32) if grids is None else grids
                grids[index] = part.grids
        return cls(scores, grids)

    def maps(self, image_size: int, map_blur: float = MAP_BLUR, images: np.ndarray | None = None, batch: int = SCORE_BATCH) -> Iterator[np.ndarray]:
        """The anomaly maps (B, S, S) float32 of all the images (or those ``images`` indexes), a
        batch at a time (memory stays flat)."""
        chosen = self.grids if images is None else self.grids[images]
        for i in range(0, len(chosen), batch):
            grids = torch.from_numpy(chosen[i : i + batch])
            yield maps_from_patches(grids.flatten(1), tuple(grids.shape[1:]), (image_size, image_size), map_blur).numpy()


@torch.no_grad()
def scores_and_grids(model: PatchCore, features: torch.Tensor, with_grids: bool, batch: int = SCORE_BATCH) -> Scores:
    """``score_all``'s scores and, ``with_grids``, the patch scores their maps are made of, in one pass."""
    side = int(round(features.shape[1] ** 0.5))
    scores, grids = [], []
    for i in range(0, len(features), batch):
        image_scores, patch_scores = model.score_patches(features[i : i + batch].float(), (side, side))
        scores.append(image_scores)
        if with_grids:
            grids.append(patch_scores.view(-1, side, side).float().cpu().numpy())
    return Scores(torch.cat(scores), np.concatenate(grids) if grids else None)


def out_of_fold(
    extractor, features: torch.Tensor, folds: np.ndarray, coresets: dict, reweight: bool = False, with_grids: bool = False, images: np.ndarray | None = None
) -> Scores:
    """Every image (or those ``images`` indexes, in that order) scored by the bank of the folds it
    is not in (its good patches never score it), with the patch scores of its map there,
    ``with_grids`` (``scores_and_grids``)."""
    images = np.arange(len(features)) if images is None else np.asarray(images)
    parts = []
    for scored, bank in held_out_banks(folds, images, coresets):
        parts.append((scored, scores_and_grids(PatchCore(extractor, bank, reweight=reweight), features[images[scored]], with_grids)))
    return Scores.gathered(len(images), parts)


def held_out_banks(folds: np.ndarray, images: np.ndarray, coresets: dict):
    """For each fold among ``images`` (indexes into ``folds``): the positions in ``images`` of its
    images, and the bank that scores them out of fold (the other folds' coresets)."""
    image_folds = folds[images]
    for fold in np.unique(image_folds).tolist():
        yield np.flatnonzero(image_folds == fold), torch.cat([coreset for f, coreset in coresets.items() if f != fold])


@dataclass
class LocalFeatures:
    """Patch features of a fit's images in this process; ``ray_fit.RayFeatures`` is the same on Ray."""

    extractor: backbones.FeatureExtractor
    features: torch.Tensor  # (N, h*w, C), float16
    descriptors: torch.Tensor | None = None  # (N, D), for the hybrid's head
    stats: np.ndarray | None = None  # (N, len(drift.STATS)), for the drift check's reference

    def fold_coresets(
        self, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, sampler: str = "greedy", seed: int = 0, show_progress: bool = False
    ) -> dict:
        return fold_coresets(self.features, labels, folds, coreset_ratio, sampler, seed, show_progress)

    def out_of_fold(
        self, folds: np.ndarray, coresets: dict, reweight: bool = False, with_grids: bool = False, show_progress: bool = False, images: np.ndarray | None = None
    ) -> Scores:
        return out_of_fold(self.extractor, self.features, folds, coresets, reweight, with_grids, images)

    def patches(self, images: np.ndarray) -> torch.Tensor:
        """The patch features (n, h*w, C) of the images at ``images``."""
        return self.features[torch.as_tensor(images)]


@torch.no_grad()
def cross_fit(
    extractor: backbones.FeatureExtractor,
    features: torch.Tensor,
    labels: torch.Tensor,
    folds: np.ndarray,
    coreset_ratio: float = 0.01,
    sampler: str = "greedy",
    reweight: bool = False,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[PatchCore, torch.Tensor]:
    """The final model (the union of every fold's coreset) and out-of-fold scores of every image.

    Anomalous images never enter a bank; they are scored out of fold like the good ones, by a
    bank of the same size, so both classes' calibration scores come from one distribution of models.
    """
    coresets = fold_coresets(features, labels, folds, coreset_ratio, sampler, seed, show_progress)
    scores = out_of_fold(extractor, features, folds, coresets, reweight).scores
    return union_of(extractor, coresets, reweight), scores


def union_of(extractor: backbones.FeatureExtractor, coresets: dict, reweight: bool = False) -> PatchCore:
    """The deployed model of a cross-fit: every fold's coreset in one bank, scored part by part (see the module doc)."""
    device = next(extractor.parameters()).device
    parts = list(coresets.values())
    return PatchCore(extractor.eval(), torch.cat(parts).to(device), reweight=reweight, part_sizes=[len(p) for p in parts])


@torch.no_grad()
def fit(
    extractor: backbones.FeatureExtractor,
    batches: Iterable[torch.Tensor],
    n_images: int,
    coreset_ratio: float = 0.01,
    sampler: str = "greedy",
    reweight: bool = False,
    seed: int = 0,
    show_progress: bool = False,
) -> PatchCore:
    """Build the memory bank from preprocessed batches of good images (no calibration scores)."""
    features, _ = embed_all(extractor, batches, n_images, show_progress)
    bank = build_bank(features.reshape(-1, features.shape[-1]), coreset_ratio, sampler, seed, show_progress)
    device = next(extractor.parameters()).device
    return PatchCore(extractor.eval(), bank.to(device), reweight=reweight)
