"""Probe (a record, not a topic): is a goods-only threshold biased? With a few goods and no
defects, patchcore scores each good by the bank of all the others (leave one out) and sets the
threshold above the highest of those scores (judgement/thresholds.py). That announces r / (n + 1)
only if a held-out good and a new good are exchangeable: under the same bank, a new good scores
above the held-out one half the time.

Each draw takes 16 goods and 60 new goods at random from every good of the data set, builds each
good's coreset by the bank rule (detection/defaults.py) and, for 4 of the 16, the bank of the
other 15; under it, the share of the new goods that score above the held-out good. Features are
fp32 Lite1 at 320 px, the levels as the goods decide (data/levels.py), computed once; no turned
copies (the screws' are each in their original's fold, so they leave the argument as it is).

    python -m benchmarks.probes.goods_only_exchangeability ../shared/data/magtiles
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from anomalycli.data.layouts import discover
from anomalycli.data.levels import STRETCH, goods_sample, levels
from anomalycli.data.orientation import readable_images
from anomalycli.detection import backbones
from anomalycli.detection.defaults import DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, bank_ratio
from anomalycli.detection.methods import patchcore, patchcore_fitting

GOODS, NEW_GOODS, HELD_OUT, DRAWS = 16, 60, 4, 24


def main(data: Path, draws: int = DRAWS) -> None:
    goods = [s.path for s in discover(data).samples if s.label == 0]
    stretch = levels(readable_images(goods_sample(goods))).kind == STRETCH
    size, name = DEFAULT_IMAGE_SIZE["patchcore"], DEFAULT_BACKBONE["patchcore"]
    extractor = backbones.FeatureExtractor(name, backbones.build(name)).eval()
    features, *_ = patchcore_fitting.embed_images(extractor, goods, size, stretch=stretch)
    ratio = bank_ratio(GOODS * features.shape[1], GOODS)
    shares = []
    for draw in range(draws):
        picked = random.Random(draw).sample(range(len(features)), GOODS + NEW_GOODS)
        bank_of, new = picked[:GOODS], picked[GOODS:]
        coresets = [patchcore_fitting.build_bank(features[i], ratio) for i in bank_of]
        for held in range(HELD_OUT):
            scorer = patchcore.PatchCore(extractor, torch.cat([c for j, c in enumerate(coresets) if j != held]))
            scores = patchcore_fitting.score_all(scorer, features[[bank_of[held], *new]])
            shares.append(float((scores[1:] > scores[0]).float().mean()))
        print(f"{data.name} draw {draw}: shares {np.round(shares[-HELD_OUT:], 2).tolist()}", flush=True)
    print(
        f"{data.name}: {len(shares)} held-out goods, levels {'stretched' if stretch else 'as they are'}: "
        f"new goods above a held-out good's score {np.mean(shares):.3f} +- {np.std(shares) / np.sqrt(len(shares)):.3f} "
        "(a naive standard error: a draw's held-out goods share its new goods; 0.5: exchangeable, the announced rate holds)"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else DRAWS)
