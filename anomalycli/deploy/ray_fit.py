"""fit cuts the work where one process already cuts it: features are embedded in runs of
``patchcore_fitting.EMBED_BATCH`` images, each fold's coreset in the sampler's parts, and the
out-of-fold scores in runs of ``patchcore_fitting.SCORE_BATCH`` images of one fold. Each unit is a Ray
task on the same tensors as in one process, so the same data, seed and parts give the same model
(tested). The features stay in the object store where they were made; this machine gets only
each fold's coreset and the scores.

A fit task runs again up to ``ray_cluster.MAX_RETRIES`` times; a fit that still cannot finish raises one
``UserError`` naming what is missing, and the caller writes nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anomalycli.data.bit_depth import OWN_SCALES, Windows
from anomalycli.data.framing import SQUASH
from anomalycli.deploy.ray_cluster import MAX_RETRIES, _wait
from anomalycli.detection.coreset import SAMPLERS
from anomalycli.detection.methods import patchcore, patchcore_fitting

# Images per embedding task and per scoring task of a fit: multiples of the one-process batches,
# large enough that a task's start (a second or so) is small against its work.
EMBED_CHUNK = 8 * patchcore_fitting.EMBED_BATCH
SCORE_CHUNK = 8 * patchcore_fitting.SCORE_BATCH


def _embed_task(
    extractor, paths: list, image_size: int, with_descriptors: bool, keep, framing: str, stretch: bool, windows: Windows
) -> tuple[np.ndarray, tuple]:
    """The chunk's patch features (they stay in the object store) and what this machine needs of
    them: readable indices, errors, patches per image and the (small) descriptors."""
    features, descriptors, stats, readable, errors = patchcore_fitting.embed_images(
        extractor,
        paths,
        image_size,
        num_workers=0,
        with_descriptors=with_descriptors,
        keep=keep,
        framing=framing,
        stretch=stretch,
        windows=windows,
    )
    return features.numpy(), (readable, errors, features.shape[1] if readable else 0, descriptors, stats)


def _rows(parts: list) -> torch.Tensor:
    """Features of some images, gathered from the chunks that hold them: [(chunk ref, rows)]."""
    import ray

    chunks = ray.get([ref for ref, _ in parts])
    return torch.from_numpy(np.concatenate([chunk[rows] for chunk, (_, rows) in zip(chunks, parts)]))


def _coreset_task(sampler, parts: list, start: int, stop: int) -> torch.Tensor:
    patches = _rows(parts)
    patches = patches.reshape(-1, patches.shape[-1])[start:stop]
    return patches[sampler.run_part(patches)].float()


def _score_task(extractor, bank: torch.Tensor, reweight: bool, with_grids: bool, parts: list) -> patchcore_fitting.Scores:
    return patchcore_fitting.scores_and_grids(patchcore.PatchCore(extractor, bank, reweight=reweight), _rows(parts).float(), with_grids)


@dataclass
class RayFeatures:
    """Patch features of a fit's readable images, held in Ray's object store in chunks.

    ``where[k]`` is the (chunk, row) of the k-th readable image. The methods are those of
    ``patchcore_fitting.LocalFeatures``, run unit for unit as Ray tasks; the descriptors, a few KB an
    image, come to this machine.
    """

    ray: object
    extractor_ref: object
    chunks: list
    where: np.ndarray
    patches_per_image: int
    descriptors: torch.Tensor | None = None
    stats: np.ndarray | None = None  # the images' drift.image_stats, as LocalFeatures

    @classmethod
    def embed(
        cls,
        ray,
        extractor,
        paths: list[Path],
        image_size: int,
        show_progress: bool = False,
        with_descriptors: bool = False,
        keep=None,
        framing: str = SQUASH,
        stretch: bool = False,
        windows: Windows = OWN_SCALES,
    ) -> tuple["RayFeatures", list[int], list[str]]:
        """Embed ``paths`` in chunks of ``EMBED_CHUNK``; the readable indices and errors as
        ``embed_images`` (``keep``, ``framing``, ``stretch`` and ``windows`` as there)."""
        extractor_ref = ray.put(extractor.cpu())
        starts = range(0, len(paths), EMBED_CHUNK)
        task = ray.remote(num_cpus=1, num_returns=2, max_retries=MAX_RETRIES)(_embed_task)
        refs = [task.remote(extractor_ref, paths[s : s + EMBED_CHUNK], image_size, with_descriptors, keep, framing, stretch, windows) for s in starts]
        _wait(
            ray,
            [meta for _, meta in refs],
            "features",
            show_progress,
            lambda i: f"{len(paths[starts[i] : starts[i] + EMBED_CHUNK])} images from {paths[starts[i]]} on were not embedded",
        )
        readable, errors, where, per_image, descriptors, stats = [], [], [], 0, [], []
        for c, (start, (_, meta)) in enumerate(zip(starts, refs)):
            rows, chunk_errors, chunk_per_image, chunk_descriptors, chunk_stats = ray.get(meta)
            stats.append(chunk_stats)
            readable += [start + r for r in rows]
            errors += chunk_errors
            where += [(c, k) for k in range(len(rows))]
            per_image = per_image or chunk_per_image
            if chunk_descriptors is not None:
                descriptors.append(chunk_descriptors)
        where = np.array(where, dtype=np.int64).reshape(-1, 2)
        described = torch.cat(descriptors) if descriptors else None
        chunks = [features for features, _ in refs]
        return cls(ray, extractor_ref, chunks, where, per_image, described, np.concatenate(stats)), readable, errors

    def _parts(self, images: np.ndarray) -> list:
        """[(chunk ref, rows)] of the readable images ``images`` (indices in fit order), in their order."""
        parts = []
        for chunk in dict.fromkeys(self.where[images, 0].tolist()):
            rows = self.where[images][self.where[images, 0] == chunk, 1]
            parts.append((self.chunks[chunk], rows))
        return parts

    def patches(self, images: np.ndarray) -> torch.Tensor:
        """The patch features (n, h*w, C) of the images at ``images`` (ascending), brought to this machine."""
        parts = self._parts(images)
        fetched = self.ray.get([chunk for chunk, _ in parts])
        return torch.from_numpy(np.concatenate([chunk[rows] for chunk, (_, rows) in zip(fetched, parts)]))

    def fold_coresets(
        self, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, sampler: str = "greedy", seed: int = 0, show_progress: bool = False
    ) -> dict:
        """One coreset of each fold's good patches: one task per part of the sampler's."""
        run = SAMPLERS[sampler](coreset_ratio, seed=seed)
        task = self.ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_coreset_task)
        per_image, good = self.patches_per_image, labels.numpy() == 0
        refs, names = {}, []
        for fold in np.unique(folds).tolist():
            index = np.flatnonzero((folds == fold) & good)
            bounds = run.part_bounds(len(index) * per_image)
            for part, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                first, last = a // per_image, math.ceil(b / per_image)
                offset = first * per_image
                refs.setdefault(fold, []).append(task.remote(run, self._parts(index[first:last]), a - offset, b - offset))
                names.append(f"coreset part {part + 1} of fold {fold + 1}")
        flat = [r for parts in refs.values() for r in parts]
        _wait(self.ray, flat, "coreset", show_progress, lambda i: f"{names[i]} did not finish")
        return {fold: torch.cat(self.ray.get(parts)) for fold, parts in refs.items()}

    def out_of_fold(
        self, folds: np.ndarray, coresets: dict, reweight: bool = False, with_grids: bool = False, show_progress: bool = False, images: np.ndarray | None = None
    ) -> patchcore_fitting.Scores:
        """``patchcore_fitting.out_of_fold`` on the cluster: one task per ``SCORE_CHUNK`` images of a fold,
        the same scores and patch scores as in one process."""
        images = np.arange(len(folds)) if images is None else np.asarray(images)
        task = self.ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_score_task)
        refs, scored_index = [], []
        for scored, fold_bank in patchcore_fitting.held_out_banks(folds, images, coresets):
            bank = self.ray.put(fold_bank)
            for s in range(0, len(scored), SCORE_CHUNK):
                refs.append(task.remote(self.extractor_ref, bank, reweight, with_grids, self._parts(images[scored[s : s + SCORE_CHUNK]])))
                scored_index.append(scored[s : s + SCORE_CHUNK])
        _wait(self.ray, refs, "scores", show_progress, lambda i: f"the out-of-fold scores of {len(scored_index[i])} images did not finish")
        return patchcore_fitting.Scores.gathered(len(images), list(zip(scored_index, self.ray.get(refs))))
