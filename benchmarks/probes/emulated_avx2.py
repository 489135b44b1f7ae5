"""Probe (a record, not a topic): the shipped int8 graph's features on an emulated AVX2 CPU against
this CPU's, to the bit, without the precision topic's folds: the graph quantised as train does
(Lite1, 320 px, the hybrid's deep graph, 16 good calibration images), run on two other goods here
and under QEMU (``emulated_cpu``; needs ``qemu-x86_64``, Debian's qemu-user).

    python -m benchmarks.probes.emulated_avx2 ../shared/data/screws
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from anomalycli.data.layouts import discover
from anomalycli.data.tensors import load_all
from anomalycli.detection import backbones, int8_backbone
from benchmarks import emulated_cpu
from benchmarks.precision import emulated_cpu_note

BACKBONE, SIZE = "efficientnet_lite1", 320


def main(data: str) -> None:
    goods = [s for s in discover(data).samples if s.label == 0]
    calibration, _, _ = load_all(goods[: int8_backbone.CALIBRATION_IMAGES], SIZE)
    others, _, _ = load_all(goods[int8_backbone.CALIBRATION_IMAGES : int8_backbone.CALIBRATION_IMAGES + 2], SIZE)
    extractor = backbones.FeatureExtractor(BACKBONE, backbones.build(BACKBONE, "imagenet")).eval()
    int8, _ = int8_backbone.quantize(extractor, calibration, deep=True)
    here, there = emulated_cpu.here_and_there(int8.graph.numpy().tobytes(), backbones.preprocess(others, BACKBONE).numpy())
    same = all(np.array_equal(a, b) for a, b in zip(here, there))
    print(f"{Path(data).name} ({emulated_cpu_note()}), {int8_backbone.CALIBRATION} ranges, {len(here)} maps: the same to the bit: {same}")


if __name__ == "__main__":
    main(sys.argv[1])
