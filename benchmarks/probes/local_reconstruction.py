"""Probe (a record, not a topic): a patch's distance to the goods as its distance to the affine hull
of its K nearest bank rows (a local reconstruction, as LLE and FastRecon reconstruct a query from
the goods), instead of to the nearest row alone. A good patch that lies between the few goods'
patches (a surface's shade, a thread's phase) is reconstructed; a defect's is not.

On the few-goods topic's own test set and draws (few_shot.py), each draw fitted as shipped
(patchcore, the bank rule, turned copies where chosen), the test set's features taken once from the
fit's own extractor and searched in float32. Where the bank has at most ``MAX_PARTS`` parts (the
full-data model's five, 16 goods' sixteen), both scores are also taken as shipped: the mean over parts of the image
score from the bank without that part. The image score is the shipped one (the map blurred, its
highest patch); AUROC over the test set and per defect type.

    python -m benchmarks.probes.local_reconstruction ../shared/data/screws 16 0,1,2 16:1.0
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from anomalycli.data.framing import framing_of
from anomalycli.data.layouts import discover
from anomalycli.data.levels import stretched
from anomalycli.detection import ignore
from anomalycli.detection.methods.patchcore_fitting import embed_images
from anomalycli.judgement.metrics import auroc
from anomalycli.workflows import train
from benchmarks.common import shipped_options
from benchmarks.few_shot import TEST_GOODS_PER_DEFECT

MAX_PARTS, BLOCK = 16, 8192


def distances(queries: torch.Tensor, bank: torch.Tensor, neighbours: int, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's distance to its nearest bank row, and to the affine hull of its ``neighbours``
    nearest (the weights summing to one, the local Gram matrix regularised by ``ridge`` x its mean
    diagonal)."""
    nearest, hull = [], []
    for start in range(0, len(queries), BLOCK):
        q = queries[start : start + BLOCK]
        near, rows = torch.cdist(q, bank).topk(neighbours, largest=False)
        nearest.append(near[:, 0])
        around = bank[rows]  # (b, K, C)
        offsets = around - q[:, None, :]
        gram = offsets @ offsets.transpose(1, 2)
        gram = gram + (ridge * gram.diagonal(dim1=1, dim2=2).mean(1) + 1e-6)[:, None, None] * torch.eye(neighbours)
        weights = torch.linalg.solve(gram, torch.ones(len(q), neighbours, 1))[:, :, 0]
        weights = weights / weights.sum(1, keepdim=True)
        hull.append((q - (weights[:, :, None] * around).sum(1)).norm(dim=1))
    return torch.cat(nearest), torch.cat(hull)


def main(data: Path, k: int, draws: list[int], settings: list[tuple[int, float]]) -> None:
    samples = discover(data).samples
    goods, defects = [s for s in samples if s.label == 0], [s for s in samples if s.label == 1]
    random.Random(0).shuffle(goods)  # the few-goods topic's test set and pool
    n_test = min(len(goods) // 2, int(round(TEST_GOODS_PER_DEFECT * len(defects))))
    test, pool = goods[:n_test] + defects, goods[n_test:]
    labels = np.array([s.label for s in test])
    kinds = np.array([s.defect_type if s.label else "" for s in test])
    torch.manual_seed(0)
    for draw in draws:
        picked = random.Random(1000 * k + draw).sample(pool, min(k, len(pool)))
        model, _, _ = train.fit(shipped_options(data, picked, method="patchcore", image_size=320), picked, [], show_progress=False)
        net, config = model.net, model.config
        features = embed_images(
            net.extractor, [s.path for s in test], config["image_size"], keep=ignore.keep_of(config), framing=framing_of(config), stretch=stretched(config)
        )[0].float()
        n, per_image, width = features.shape
        grid = (int(per_image**0.5), int(per_image**0.5))
        queries, bank = features.reshape(-1, width), net.bank.float()

        def image_scores(patch: torch.Tensor) -> torch.Tensor:
            return net._image_scores(patch.view(n, per_image, 1), grid)[0][:, 0]

        def shown(scores: torch.Tensor) -> str:
            s = scores.numpy()
            by_type = " ".join(f"{t} {auroc(labels[(kinds == t) | (labels == 0)], s[(kinds == t) | (labels == 0)]):.3f}" for t in sorted(set(kinds) - {""}))
            return f"{auroc(labels, s):.3f} ({by_type})"

        print(f"{data.name}, {len(picked)} goods, draw {draw}, bank {len(bank)} rows in {len(net.part_sizes or [1])} parts", flush=True)
        for neighbours, ridge in settings:
            nearest, hull = distances(queries, bank, neighbours, ridge)
            print(f"  whole bank: nearest row {shown(image_scores(nearest))}; hull of {neighbours} (ridge {ridge}) {shown(image_scores(hull))}", flush=True)
            if net.part_sizes and len(net.part_sizes) <= MAX_PARTS:
                bounds, by_part = np.cumsum([0, *net.part_sizes]), ([], [])
                for part in range(len(net.part_sizes)):
                    keep = torch.ones(len(bank), dtype=torch.bool)
                    keep[bounds[part] : bounds[part + 1]] = False
                    for kept, distance in zip(by_part, distances(queries, bank[keep], neighbours, ridge)):
                        kept.append(image_scores(distance))
                nearest_parts, hull_parts = (torch.stack(s).mean(0) for s in by_part)
                print(f"  by parts (shipped): nearest row {shown(nearest_parts)}; hull {shown(hull_parts)}", flush=True)


if __name__ == "__main__":
    settings = [(int(a), float(b)) for a, b in (s.split(":") for s in sys.argv[4].split(","))] if len(sys.argv) > 4 else [(16, 1.0)]
    main(Path(sys.argv[1]), int(sys.argv[2]), [int(d) for d in sys.argv[3].split(",")], settings)
