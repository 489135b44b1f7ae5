"""Coreset samplers (one ``run()`` each): which patches of the good images the memory bank keeps.

They work in float32 matrix products over chunks, so memory stays bounded for millions of patches.
Searching the bank is ``bank_search.py``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

ProgressFn = Callable[[int], None]
# Patches per greedy coreset part: 327 images at 320 px. A part is also one Ray task of a fit.
PART_SIZE = 1 << 19


class RandomSampler:
    """Keep a uniform random subset: the cheap baseline."""

    def __init__(self, ratio: float, seed: int = 0):
        self.ratio, self.seed = ratio, seed

    def part_bounds(self, n: int) -> list[int]:
        """One part: a random subset of parts is not a random subset of the whole."""
        return [0, n]

    def run_part(self, features: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        return self.run(features, progress)

    def run(self, features: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        n_keep = max(1, int(round(self.ratio * features.shape[0])))
        generator = torch.Generator().manual_seed(self.seed)
        if progress:
            progress(n_keep)
        return torch.randperm(features.shape[0], generator=generator)[:n_keep].sort().values


class ApproximateGreedyCoresetSampler:
    """Greedy k-center selection (PatchCore's coreset) on a random projection of the features.

    Each step adds the patch farthest from everything chosen so far; distances are updated
    against the one new centre only, in the projected space (one part at a time, so memory
    stays bounded by the part size).

    Greedy selection costs (patches x kept patches), which grows with the square of the number
    of images. Beyond ``part_size`` patches the features are cut into equal consecutive parts
    (whole images, as features arrive image by image) and the greedy runs on each part: the
    union of the parts' k-center coresets is a composable coreset of the whole (Indyk et al.,
    PODS 2014), and fitting time grows linearly with the number of images.
    """

    def __init__(self, ratio: float, seed: int = 0, projection_dim: int = 64, chunk: int = 1 << 20, part_size: int | None = None):
        self.ratio, self.seed, self.projection_dim, self.chunk = ratio, seed, projection_dim, chunk
        self.part_size = part_size or PART_SIZE

    def project(self, features: torch.Tensor) -> torch.Tensor:
        dim = features.shape[1]
        if dim <= self.projection_dim:
            return features.float()
        generator = torch.Generator().manual_seed(self.seed)
        matrix = torch.randn(dim, self.projection_dim, generator=generator) / self.projection_dim**0.5
        return torch.cat([features[i : i + self.chunk].float() @ matrix for i in range(0, features.shape[0], self.chunk)])

    def part_bounds(self, n: int) -> list[int]:
        """Where the parts of ``n`` patches begin and end: equal parts of at most ``part_size``."""
        n_parts = max(1, math.ceil(n / self.part_size))
        return [round(i * n / n_parts) for i in range(n_parts + 1)]

    def run(self, features: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        bounds = self.part_bounds(features.shape[0])
        return torch.cat([self.run_part(features[a:b], progress) + a for a, b in zip(bounds[:-1], bounds[1:])])

    def run_part(self, features: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        n = features.shape[0]
        n_keep = max(1, int(round(self.ratio * n)))
        if n_keep >= n:
            if progress:
                progress(n)  # every patch kept: nothing to choose, done at once
            return torch.arange(n)
        # One column per patch: the matrix-vector product of every step streams this layout
        # about twice as fast as one row per patch (measured, 2 cores).
        columns = self.project(features).T.contiguous()
        squared = columns.pow(2).sum(0)
        generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.empty(n_keep, dtype=torch.long)
        chosen[0] = torch.randint(n, (1,), generator=generator).item()
        min_d2 = torch.full((n,), float("inf"))
        for step in range(1, n_keep + 1):
            centre = columns[:, chosen[step - 1]].contiguous()
            d2 = torch.addmv(squared + centre.dot(centre), columns.T, centre, alpha=-2)
            torch.minimum(min_d2, d2, out=min_d2)
            if step == n_keep:
                break
            chosen[step] = min_d2.max(0).indices  # faster than argmax here, same first maximum
            if progress and step % 256 == 0:
                progress(256)
        if progress:
            progress(n_keep - 256 * ((n_keep - 1) // 256))  # what the loop has not reported yet
        return chosen


SAMPLERS = {"greedy": ApproximateGreedyCoresetSampler, "random": RandomSampler}
