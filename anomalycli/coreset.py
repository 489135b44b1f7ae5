"""Coreset samplers (one ``run()`` each) and chunked nearest-neighbour search.

Both work in float32 matrix products over chunks, so memory stays bounded for millions
of patches and no (N x M) distance matrix is ever held whole.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

ProgressFn = Callable[[int], None]
# Patches per greedy coreset part: 327 images at 320 px. A part is also one Ray task of a fit.
PART_SIZE = 1 << 19


# Queries per block of the search: a block of distances to a bank of a few thousand rows stays in
# cache for the minimum that reads it (512 was the fastest of 64 to 1,024, 2 cores).
CHUNK = 512


def bfloat16_native() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), at twice its fp32 rate."""
    return any(getattr(torch.cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def search_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on a CPU that multiplies it natively, else float32; an exported graph is float32."""
    if device.type == "cpu" and not torch.onnx.is_in_onnx_export() and bfloat16_native():
        return torch.bfloat16
    return torch.float32


def _nearest_rows(queries: torch.Tensor, bank: torch.Tensor, groups: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query and each of ``groups`` equal consecutive groups of bank rows: the index of
    its nearest row there and the distance to it, (Q, groups) each.

    One matrix product per block of queries gives |b|^2 - 2 q.b for every row (the squared
    distance less |q|^2, which no minimum needs), both sides centred on the bank's mean first.
    Where the CPU multiplies bfloat16 natively the product is made in it and only picks the
    nearest rows: their distances are then computed exactly in float32, so a distance is exact
    unless bfloat16 rounding picked a row within its error of the nearest (the search in 0.64x
    the float32 time, 99 % of distances within 0.2 %, no verdict changed; BENCHMARKS.md).
    """
    bank = bank.float()
    centre = bank.mean(0)
    centred = bank - centre
    dtype = search_dtype(bank.device)
    rows = centred.T.to(dtype).contiguous()
    bank_sq = centred.pow(2).sum(1).to(dtype)
    size = bank.shape[0] // groups
    # An exported ONNX graph takes any batch size: one block, not a loop unrolled at trace time.
    blocks = [queries] if torch.onnx.is_in_onnx_export() else (queries[i : i + chunk] for i in range(0, queries.shape[0], chunk))
    indices, distances = [], []
    for q in blocks:
        q = q.float() - centre
        partial = torch.addmm(bank_sq.unsqueeze(0), q.to(dtype), rows, alpha=-2).view(-1, groups, size)
        values, nearest = partial.min(dim=2)
        nearest = nearest + torch.arange(groups, device=q.device) * size
        if dtype == torch.float32:
            squared = values.add_(q.pow(2).sum(1, keepdim=True))
        else:
            squared = (q.unsqueeze(1) - centred[nearest]).pow(2).sum(2)
        indices.append(nearest)
        distances.append(squared.clamp_min_(0).sqrt_())
    return torch.cat(indices), torch.cat(distances)


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = CHUNK):
    """Euclidean distances (and indices) of each query's ``k`` nearest bank rows, nearest first."""
    if k == 1:
        nearest, distances = _nearest_rows(queries, bank, 1, chunk)
        return distances, nearest
    bank = bank.float()
    dists, indices = [], []
    for i in range(0, queries.shape[0], chunk):
        q = queries[i : i + chunk].float()
        d, idx = torch.cdist(q, bank).topk(k, dim=1, largest=False)  # k > 1: the re-weighting's few queries
        dists.append(d)
        indices.append(idx)
    return torch.cat(dists), torch.cat(indices)


def nearest_per_part(queries: torch.Tensor, bank: torch.Tensor, part_sizes: list[int], chunk: int = CHUNK) -> torch.Tensor:
    """Distance of each query to its nearest row in each consecutive part of ``bank``: (Q, parts).

    The parts are padded to one size with copies of their first row, which change no minimum,
    so that one reshape of each block gives every part's minimum in one pass.
    """
    size = max(part_sizes)
    starts = [0, *torch.tensor(part_sizes).cumsum(0).tolist()[:-1]]
    rows = [i for a, n in zip(starts, part_sizes) for i in [*range(a, a + n), *[a] * (size - n)]]
    return _nearest_rows(queries, bank[torch.tensor(rows, device=bank.device)], len(part_sizes), chunk)[1]


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
