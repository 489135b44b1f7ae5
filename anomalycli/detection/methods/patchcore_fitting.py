"""Fitting PatchCore (``patchcore.PatchCore``, the scorer): the good images' patch features, the
memory bank's coreset, and cross-fitting.

A cross-fit cuts the good images into k folds and keeps one coreset of each fold's patches; every
image is scored out of fold (by the bank of the folds it is not in), and those scores calibrate
the threshold. The deployed bank is the union of the coresets, scored part by part exactly as the
out-of-fold scores were (``patchcore``'s module doc says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from anomalycli.data.bit_depth import OWN_SCALES, Windows
from anomalycli.data.framing import SQUASH
from anomalycli.data.tensors import image_batches
from anomalycli.detection import backbones
from anomalycli.detection.coreset import SAMPLERS
from anomalycli.detection.methods.patchcore import MAP_BLUR, PatchCore, embed_maps, maps_from_patches
from anomalycli.judgement import drift
from anomalycli.runtime import progress_bar

# Images per backbone call when fitting, and per scoring call on cached features. Part of what
# makes a fit reproducible: a distributed fit cuts its work on these boundaries (deploy/ray_fit.py).
EMBED_BATCH, SCORE_BATCH = 32, 64

# The pixel threshold is chosen on every fourth pixel of the out-of-fold maps: fine enough for a
# quantile of 0.1 % and for touching regions (the maps are blurred with a sigma of 8 pixels).
# Region areas are measured on whole maps, so that the size rule is chosen on the areas predict
# measures (a fourth-pixel sample gave the same size-rule figures, "Localisation" in BENCHMARKS.md).
MAP_STEP = 4


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
    with progress_bar(total=n_images, desc="features", unit="img", shown=show_progress) as bar:
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
    windows: Windows = OWN_SCALES,
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray, list[int], list[str]]:
    """Patch features (and descriptors) of the readable images among ``paths``, as ``embed_all``;
    their ``drift.image_stats``, their indices, and the errors of the others. Batches of
    ``EMBED_BATCH`` from the first path: the same paths give the same features wherever they are
    embedded. ``keep`` and ``stretch``: as ``backbones.preprocess`` takes them (a don't-care mask's,
    and whether the model stretches levels: ``data/levels.py``); ``framing`` and ``windows``: the
    model's (``data/framing.py``, ``data/bit_depth.py``)."""
    readable: list[int] = []
    errors: list[str] = []
    stats: list[np.ndarray] = [np.empty((0, len(drift.STATS)))]
    device = next(extractor.parameters()).device

    def batches():
        for images, indices, batch_errors in image_batches(paths, image_size, EMBED_BATCH, num_workers, framing=framing, windows=windows):
            errors.extend(filter(None, batch_errors))
            ok = torch.tensor([not e for e in batch_errors])
            readable.extend(indices[ok].tolist())
            if ok.any():
                stats.append(drift.image_stats(images[ok]))
                yield backbones.preprocess(images[ok].to(device), extractor.name, keep, stretch)

    features, descriptors = embed_all(extractor, batches(), len(paths), show_progress, with_descriptors)
    return features, descriptors, np.concatenate(stats), readable, errors


def coreset_bar(total: int, show_progress: bool) -> tqdm:
    return progress_bar(total=max(1, total), desc="coreset", unit="patch", shown=show_progress)


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
