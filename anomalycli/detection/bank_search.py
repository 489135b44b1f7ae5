"""The nearest-neighbour search of the memory bank: chunked, part by part, its products in int8,
bfloat16 or float32 where each is fastest, with exact float32 distances to the rows it picks.

No (N x M) distance matrix is ever held whole, so memory stays bounded for millions of patches.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np
import torch

from anomalycli.onnx_runtime import has_int8_dot_products

# Queries per block of the search: a block of distances to a bank of a few thousand rows stays in
# cache for the minimum that reads it (512 was the fastest of 64 to 1,024, 2 cores).
CHUNK = 512
# Bank rows per block of the minimum's first pass (``_first_minimum``): PyTorch's minimum with its
# index over a part's thousands of rows took 2.1 ms a block of queries, the two passes 1.2 (64 was
# the fastest of 32, 64 and 128; on the Speed section's machine).
MINIMUM_BLOCK = 64
# Queries (midpoints of two bank rows) on which an int8 index checks its picks against float32's,
# and the relative excess of the picked rows' distances it allows at their 99th percentile (about
# 3e-4 on both development sets' banks; an int8 product that saturates picks far rows).
CHECK_QUERIES, INT8_SEARCH_RTOL = 512, 1e-2
# The most bytes of products an exported graph's search holds at once for one image: above it, an
# image's patch positions are searched in blocks, each multiplied and reduced before the next. One
# block held a 320 px screws image's 33 MB, a magnetic tile's 61 MB and a 512 px model's 215 MB; in
# blocks of 16 MB predict's peak fell 310 -> 250, 436 -> 284 and 861 -> 488 MiB, and predict was no
# slower (8 MB: less memory, no faster; BENCHMARKS.md, Speed).
EXPORT_PRODUCTS_BYTES = 16 * 2**20


def bfloat16_native() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), at twice its fp32 rate."""
    return any(getattr(torch.cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


@functools.cache
def int8_native() -> bool:
    """Whether this CPU has int8 dot-product instructions (AMX, AVX-512 VNNI or AVX-VNNI), where ONNX
    Runtime multiplies int8 at 1.8x PyTorch's bfloat16 rate (on the Speed section's machine of
    BENCHMARKS.md), and ONNX Runtime is installed."""
    return has_int8_dot_products(cpu_features()) and importlib.util.find_spec("onnxruntime") is not None


def cpu_features() -> set[str]:
    """This CPU's features as PyTorch detects them. (``torch.cpu._is_vnni_supported`` looks for
    AVX-512 VNNI alone, so it missed the AVX-VNNI of Intel's client CPUs from Alder Lake on.)"""
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return {name for name, present in capabilities.items() if present is True}


# An exported graph's int8 rows use 7 bits: on CPUs without VNNI, ONNX Runtime's uint8 x int8
# product adds pairs in 16 bits, which 255 x 127 x 2 overflows and 255 x 63 x 2 does not. This
# machine has VNNI and no check runs where the file does.
EXPORT_INT8_LEVELS = 63


def search_kind(device: torch.device) -> str:
    """How the search multiplies fastest on ``device``: ``int8`` (ONNX Runtime), ``bfloat16`` or
    ``float32``; a GPU multiplies in float32. (An exported graph's kind is ``BankIndex``'s ``kind``.)"""
    if device.type != "cpu":
        return "float32"
    return "int8" if int8_native() else "bfloat16" if bfloat16_native() else "float32"


class BankIndex:
    """A bank ready for nearest-row searches part by part: centred on its mean, every part padded to
    one size, and its products made where they are fastest here (``kind``).

    One matrix product per block of queries gives |b|^2 / 2 - q.b for every row (half the squared
    distance less |q|^2, which no minimum needs); the queries carry a column of ones for the |b|^2
    row, so no bias is added apart. Unless in float32, the product only picks each part's nearest
    row: its distance is then computed exactly in float32, so a distance is exact unless rounding
    picked a row within its error of the nearest (bfloat16 and int8 pick the same row for about 99 %
    of patches; BENCHMARKS.md). An int8 index first checks that claim on queries between its own
    rows, and multiplies in bfloat16 or float32 where it fails.
    """

    def __init__(self, bank: torch.Tensor, part_sizes: list[int] | None = None, kind: str | None = None):
        bank = bank.float()
        self.part_sizes = list(part_sizes or [bank.shape[0]])
        self.centre = bank.mean(0)
        self.centred = bank - self.centre
        self.padded, self.size = _padded_parts(self.part_sizes, bank.device)
        rows = torch.cat([-self.centred, self.centred.pow(2).sum(1, keepdim=True) / 2], dim=1)[self.padded]  # (rows, C + 1)
        self.kind = kind or search_kind(bank.device)
        if self.kind == "int8" and torch.onnx.is_in_onnx_export():
            # Made outside the trace (through numpy), they enter the graph as constants, not as
            # steps that would quantise the bank again on every call. No session and no check here.
            self._int8_rows = [torch.from_numpy(t.numpy()) for t in _int8_rows(rows.detach(), EXPORT_INT8_LEVELS)]
        elif self.kind == "int8":
            self._session = _int8_search(rows, len(self.part_sizes))
            if not self._agrees_with_float32(rows):
                self.kind = "bfloat16" if bfloat16_native() else "float32"
        if self.kind != "int8":
            self._rows = rows.T.to(torch.bfloat16 if self.kind == "bfloat16" else torch.float32).contiguous()

    def nearest(self, queries: torch.Tensor, chunk: int = CHUNK, per_image: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of each query's nearest row in each part, and the distance to it: (Q, parts) each.
        ``per_image``: the queries are images' patches, this many an image, in order (an exported
        graph then blocks them by position where one image's products are large)."""
        if torch.onnx.is_in_onnx_export():
            return self._nearest_exported(queries, per_image)
        indices, distances = [], []
        for i in range(0, queries.shape[0], chunk):
            nearest, distance = self._searched(queries[i : i + chunk])
            indices.append(nearest)
            distances.append(distance)
        return torch.cat(indices), torch.cat(distances)

    def _searched(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = queries.float() - self.centre
        return self._picked(q, self._nearest_within(q))

    def _nearest_exported(self, queries: torch.Tensor, per_image: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``nearest`` as an exported graph computes it: the graph takes any number of images, so
        its blocks are not of queries but of each image's patch positions, as many as keep one
        image's products within ``EXPORT_PRODUCTS_BYTES`` (one, for most models)."""
        blocks = 1 if per_image is None else math.ceil(per_image * self.padded.numel() * 4 / EXPORT_PRODUCTS_BYTES)
        if blocks <= 1:
            return self._searched(queries)
        step = math.ceil(per_image / blocks)
        by_image = queries.view(-1, per_image, queries.shape[1])
        found = [self._searched(by_image[:, start : start + step].reshape(-1, queries.shape[1])) for start in range(0, per_image, step)]
        width = [min(step, per_image - start) for start in range(0, per_image, step)]
        parts = len(self.part_sizes)
        return tuple(torch.cat([f[k].view(-1, n, parts) for f, n in zip(found, width)], dim=1).view(-1, parts) for k in (0, 1))

    def _nearest_within(self, q: torch.Tensor) -> torch.Tensor:
        """Each centred query's nearest row in each part, as an index into its padded part: (Q, parts)."""
        if self.kind == "int8" and torch.onnx.is_in_onnx_export():
            products = _Int8Products.apply(q, *self._int8_rows)
            return _first_minimum(products.view(q.shape[0], len(self.part_sizes), self.size))
        if self.kind == "int8":
            return torch.from_numpy(self._session.run(None, {"q": q.numpy()})[0])
        return self._first_minima(q, self._rows)

    def _first_minima(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``_nearest_within`` from PyTorch's product of the centred queries with ``rows`` (C + 1, rows)."""
        products = torch.cat([q, torch.ones_like(q[:, :1])], dim=1).to(rows.dtype) @ rows
        return _first_minimum(products.view(q.shape[0], len(self.part_sizes), self.size))

    def _picked(self, q: torch.Tensor, within: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank rows picked in each part (indices into the bank) and the centred queries' exact distances to them."""
        nearest = self.padded[within + torch.arange(len(self.part_sizes), device=q.device) * self.size]
        # One gathered copy, squared in place: a quarter of the time of (q - rows).pow(2) with its
        # temporaries, and the same sums to the bit.
        differences = self.centred.index_select(0, nearest.view(-1)).view(*nearest.shape, -1).sub_(q.unsqueeze(1))
        return nearest, differences.mul_(differences).sum(2).sqrt_()

    def _agrees_with_float32(self, rows: torch.Tensor) -> bool:
        generator = torch.Generator().manual_seed(0)
        pairs = torch.randint(len(self.centred), (CHECK_QUERIES, 2), generator=generator, device=self.centred.device)
        queries = self.centred[pairs].mean(1)
        _, chosen = self._picked(queries, self._nearest_within(queries))
        _, best = self._picked(queries, self._first_minima(queries, rows.T))
        relative = (chosen - best) / best.clamp_min(1e-12)
        return float(relative.quantile(0.99)) <= INT8_SEARCH_RTOL


def _int8_search(rows: torch.Tensor, parts: int):
    """An ONNX Runtime session giving, for float queries q, the index of the first minimum of
    ``[q, 1] @ rows.T`` in each of ``parts`` equal consecutive groups of rows, found as
    ``_first_minimum`` finds it. The queries are quantised per call to uint8, the rows to int8 with
    one scale each, the |b|^2 column is a float bias. The products never leave ONNX Runtime: 3.3
    against 3.7 ms a block of 512 queries when PyTorch took the minimum, and whole predict 7 %
    faster on magnetic tiles' bank, the same on screws' (on the Speed section's machine of BENCHMARKS.md)."""
    from onnx import TensorProto, helper, numpy_helper

    from anomalycli.detection import int8_backbone

    int8, scale, bias = _int8_rows(rows)
    block, size = MINIMUM_BLOCK, len(rows) // parts
    constants = {
        "rows": int8.numpy(),
        "scale": scale.numpy(),
        "zero": np.zeros(len(scale), np.int8),
        "bias": bias.numpy(),
        "blocks_shape": np.array([-1, parts, size // block, block]),
        "block_width": np.array([1, 1, 1, block]),
        "axis_2": np.array([2]),
        "axis_3": np.array([3]),
        "block": np.array(block),
    }
    node = helper.make_node
    nodes = [
        node("DynamicQuantizeMatMul", ["q", "rows", "scale", "zero", "bias"], ["products"], domain="com.microsoft"),
        node("Reshape", ["products", "blocks_shape"], ["blocks"]),  # (Q, parts, blocks, block)
        node("ReduceMin", ["blocks"], ["block_minima"], axes=[3], keepdims=0),
        node("ArgMin", ["block_minima"], ["best"], axis=2, keepdims=1),  # the first best block, (Q, parts, 1)
        node("Unsqueeze", ["best", "axis_3"], ["best_4d"]),
        node("Expand", ["best_4d", "block_width"], ["best_rows"]),
        node("GatherElements", ["blocks", "best_rows"], ["best_block"], axis=2),  # (Q, parts, 1, block)
        node("ArgMin", ["best_block"], ["within_block"], axis=3, keepdims=0),  # (Q, parts, 1)
        node("Mul", ["best", "block"], ["block_start"]),
        node("Add", ["block_start", "within_block"], ["nearest_3d"]),
        node("Squeeze", ["nearest_3d", "axis_2"], ["nearest"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bank_search",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [None, int8.shape[0]])],
        [helper.make_tensor_value_info("nearest", TensorProto.INT64, [None, parts])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int8_backbone.OPSET), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return int8_backbone.session(model.SerializeToString())


def _int8_rows(rows: torch.Tensor, levels: int = 127) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rows`` (rows, C + 1) as DynamicQuantizeMatMul takes them: the products' weights int8 (C, rows)
    in -levels..levels with one scale each, and the |b|^2 column as a float bias."""
    weights, bias = rows[:, :-1], rows[:, -1]
    scale = (weights.abs().amax(1) / levels).clamp_min(1e-12)
    int8 = torch.round(weights / scale[:, None]).clamp(-levels, levels).to(torch.int8).T.contiguous()
    return int8, scale, bias


class _Int8Products(torch.autograd.Function):
    """``[q, 1] @ rows.T`` from ``_int8_rows``: in an exported graph, ONNX Runtime's
    DynamicQuantizeMatMul (the queries quantised to uint8 per call, as predict's int8 search);
    traced here, the float product of the same weights, for the shapes."""

    @staticmethod
    def forward(ctx, q, int8, scale, bias):
        return q @ (int8.float() * scale) + bias

    @staticmethod
    def symbolic(g, q, int8, scale, bias):
        zero = g.op("Constant", value_t=torch.zeros(scale.type().sizes(), dtype=torch.int8))
        products = g.op("com.microsoft::DynamicQuantizeMatMul", q, int8, scale, zero, bias)
        products.setType(q.type().with_sizes([None, int8.type().sizes()[1]]))  # for the shapes of the ops after it
        return products


def _padded_parts(part_sizes: list[int], device: torch.device) -> tuple[torch.Tensor, int]:
    """Bank row indices with every part padded to one size, a multiple of ``MINIMUM_BLOCK``, by
    copies of its first row (they change no minimum, and the first of equal values is the
    original), and that size: one reshape of a block of products then gives every part."""
    size = MINIMUM_BLOCK * math.ceil(max(part_sizes) / MINIMUM_BLOCK)
    starts = [0, *torch.tensor(part_sizes).cumsum(0).tolist()[:-1]]
    return torch.tensor([i for a, n in zip(starts, part_sizes) for i in [*range(a, a + n), *[a] * (size - n)]], device=device), size


def _first_minimum(values: torch.Tensor) -> torch.Tensor:
    """The index of the first minimum along the last axis (a multiple of ``MINIMUM_BLOCK`` long), as
    ``values.min(-1).indices``: each block's minimum first, then the position in the best block."""
    values = values.float()
    lead = values.shape[:-1]
    blocks = values.reshape(-1, MINIMUM_BLOCK)  # every block of every row, one a row
    minima = blocks.amin(-1).view(*lead, -1)
    best = minima.argmin(-1)
    # The best blocks taken as whole rows (a Gather in an exported graph, which copies rows: its
    # GatherElements with an expanded index took 3.5 ms of a screws image's 42; BENCHMARKS.md, Speed).
    first_rows = torch.arange(best.numel(), device=values.device).view(lead) * minima.shape[-1]
    picked = blocks.index_select(0, (first_rows + best).reshape(-1)).view(*lead, MINIMUM_BLOCK)
    return best * MINIMUM_BLOCK + picked.argmin(-1)


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = CHUNK):
    """Euclidean distances (and indices) of each query's ``k`` nearest bank rows, nearest first: the
    re-weighting's few queries (a search of every patch goes through ``BankIndex``)."""
    bank = bank.float()
    dists, indices = [], []
    for i in range(0, queries.shape[0], chunk):
        d, idx = torch.cdist(queries[i : i + chunk].float(), bank).topk(k, dim=1, largest=False)
        dists.append(d)
        indices.append(idx)
    return torch.cat(dists), torch.cat(indices)
