"""Probe (a record, not a topic): the anomaly map's blur sigma, 5-fold, the default model of each
set fitted once a fold and its held-out maps made at each sigma; pixel AUROC and AUPRO as the
localisation topic measures them.

    python -m benchmarks.probes.map_blur ../shared/data/magtiles 8 12 16
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from anomalycli.data.tensors import load_mask
from anomalycli.deploy.scoring import iter_scores
from anomalycli.judgement.localisation import aupro
from anomalycli.judgement.metrics import pixel_auroc
from benchmarks import folds
from benchmarks.common import samples_of, shipped_options


def main(data: Path, sigmas: list[float]) -> None:
    samples = samples_of(data, False)
    results = {s: [] for s in sigmas}
    for fold in folds.cv_folds(samples, 5):
        model, _ = folds.fit(shipped_options(data, fold.training), fold.training)
        scorer = model.net.patchcore if model.method == "hybrid" else model.net
        held = [s for s in fold.held_out if s.label == 0 or s.mask]
        size = model.config["image_size"]
        truth = [(load_mask(s.mask, size).numpy() if s.mask else np.zeros((size, size), bool))[::2, ::2] for s in held]
        for sigma in sigmas:
            scorer.map_blur = sigma
            maps = [np.asarray(r.map, dtype=np.float32)[::2, ::2] for r in iter_scores(model, [s.path for s in held], with_maps=True, show_progress=False)]
            row = (
                pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in truth]), np.concatenate([m[::2, ::2].ravel() for m in maps])),
                aupro(truth, maps),
            )
            results[sigma].append(row)
            print(fold.name, sigma, [round(v, 4) for v in row], flush=True)
    for sigma, rows in results.items():
        print(data.name, "sigma", sigma, "pixel AUROC / AUPRO", [round(float(np.mean(v)), 4) for v in zip(*rows)], flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [float(v) for v in sys.argv[2:]])
