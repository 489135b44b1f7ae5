"""Probe (a record, not a topic): a supervised pixel head beside the memory bank's distances.

Per fold (5-fold, the default model fitted as the localisation topic fits it): a logistic
regression on the training images' patch features, positives the patches a defect mask covers
by half or more, negatives patches no mask touches; its held-out logit grids made into maps as
the distances are (bilinear, the model's blur). Each map z-scored on the held-out goods' pixels
(a probe's shortcut), fused by mean and by max; pixel AUROC and AUPRO as the topic measures them.

    python -m benchmarks.probes.pixel_head ../shared/data/magtiles
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from anomalycli.data.tensors import load_mask
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection.methods import patchcore
from anomalycli.judgement.localisation import aupro
from anomalycli.judgement.metrics import pixel_auroc
from benchmarks import folds
from benchmarks.common import samples_of, shipped_options


def coverage(samples, size: int, grid: int) -> np.ndarray:
    out = np.zeros((len(samples), grid, grid), np.float32)
    for i, s in enumerate(samples):
        if s.mask:
            m = load_mask(s.mask, size).float()[None, None]
            out[i] = F.adaptive_avg_pool2d(m, grid)[0, 0].numpy()
    return out


def main(data: Path, C: float = 0.1) -> None:
    samples = samples_of(data, False)
    rows = {k: [] for k in ("distance", "head", "mean", "max")}
    rng = np.random.default_rng(0)
    for fold in folds.cv_folds(samples, 5):
        model, _ = folds.fit(shipped_options(data, fold.training), fold.training)
        scorer = model.net.patchcore if model.method == "hybrid" else model.net
        size = model.config["image_size"]
        training = [s for s in fold.training if s.label == 0 or s.mask]
        feats, _, _, readable, _ = patchcore.embed_images(scorer.extractor, [s.path for s in training], size)
        training = [training[i] for i in readable]
        grid = int(round(feats.shape[1] ** 0.5))
        cover = coverage(training, size, grid).reshape(len(training), -1)
        x, y = [], []
        for i, s in enumerate(training):
            f = feats[i].float().numpy()
            pos = np.flatnonzero(cover[i] >= 0.5)
            neg = np.flatnonzero(cover[i] == 0)
            neg = rng.choice(neg, min(len(neg), 40 if s.label == 0 else 200), replace=False)
            x += [f[pos], f[neg]]
            y += [np.ones(len(pos)), np.zeros(len(neg))]
        x, y = np.concatenate(x), np.concatenate(y)
        scaler = StandardScaler().fit(x)
        head = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(scaler.transform(x), y)
        print(fold.name, "head on", int(y.sum()), "positive and", int((1 - y).sum()), "negative patches", flush=True)

        held = [s for s in fold.held_out if s.label == 0 or s.mask]
        scored = list(iter_scores(model, [s.path for s in held], with_maps=True, show_progress=False))
        hf, _, _, _, _ = patchcore.embed_images(scorer.extractor, [s.path for s in held], size)
        logits = head.decision_function(scaler.transform(hf.float().reshape(-1, hf.shape[-1]).numpy())).reshape(len(held), -1)
        head_maps = patchcore.maps_from_patches(torch.from_numpy(logits).float(), (grid, grid), (size, size), scorer.map_blur).numpy()
        truth = [(load_mask(s.mask, size).numpy() if s.mask else np.zeros((size, size), bool))[::2, ::2] for s in held]
        dist = np.stack([np.asarray(r.map, np.float32) for r in scored])[:, ::2, ::2]
        head_maps = head_maps[:, ::2, ::2]
        good = np.array([s.label == 0 for s in held])

        def z(maps):
            return (maps - maps[good].mean()) / maps[good].std()

        variants = {"distance": dist, "head": head_maps, "mean": (z(dist) + z(head_maps)) / 2, "max": np.maximum(z(dist), z(head_maps))}
        for name, maps in variants.items():
            row = (
                pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in truth]), np.concatenate([m[::2, ::2].ravel() for m in maps])),
                aupro(truth, list(maps)),
            )
            rows[name].append(row)
            print(fold.name, name, [round(v, 4) for v in row], flush=True)
    for name, r in rows.items():
        print(data.name, name, "pixel AUROC / AUPRO", [round(float(np.mean(v)), 4) for v in zip(*r)], flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *[float(v) for v in sys.argv[2:]])
