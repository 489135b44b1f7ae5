"""Probe (a record, not a topic): the pixel head on a defect type never seen. Each defect type
withheld in turn (``folds.loto_folds``), the default model fitted on the rest; the withheld type's
masked defects and the held-out goods scored with the shipped maps (distance and pixel head) and
with the distance maps alone (the same model, its pixel head removed); pixel AUROC and AUPRO as
the localisation topic measures them.

    python -m benchmarks.probes.pixel_head_unseen ../shared/data/magtiles
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


def main(data: Path) -> None:
    samples = samples_of(data, False)
    rows = {"shipped": [], "distance": []}
    for fold in folds.loto_folds(samples):
        model, _ = folds.fit(shipped_options(data, fold.training), fold.training)
        held = [s for s in fold.held_out if s.label == 0 or s.mask]
        size = model.config["image_size"]
        truth = [(load_mask(s.mask, size).numpy() if s.mask else np.zeros((size, size), bool))[::2, ::2] for s in held]
        for name in rows:
            if name == "distance":
                model.net.pixel_head = None
            maps = [np.asarray(r.map, np.float32)[::2, ::2] for r in iter_scores(model, [s.path for s in held], with_maps=True, show_progress=False)]
            row = (pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in truth]), np.concatenate([m[::2, ::2].ravel() for m in maps])), aupro(truth, maps))
            rows[name].append(row)
            print(data.name, fold.name, name, [round(v, 4) for v in row], flush=True)
    for name, r in rows.items():
        print(data.name, "unseen types,", name, "pixel AUROC / AUPRO", [round(float(np.mean(v)), 4) for v in zip(*r)], flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
