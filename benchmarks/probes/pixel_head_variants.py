"""Probe (a record, not a topic): variants of the pixel head on the localisation topic's folds.
Each fold's default model is fitted once; beside its shipped head, each variant is cross-fitted on
the same training patches and folds, and the held-out maps are made with each in turn (pixel AUROC
and AUPRO as the localisation topic measures them; no pixel threshold: that is chosen for the
shipped head only).

    python -m benchmarks.probes.pixel_head_variants ../shared/data/magtiles

Measured (AMD EPYC, 2 cores, avx512_vnni), pixel AUROC / AUPRO, means of 5 folds; the shipped
head then was linear (a logistic regression) fused half and half:

    magtiles  linear (then shipped)                      0.942 / 0.900
              linear, head weight 0.65 / 0.35            0.945 / 0.908, 0.930 / 0.879
              MLP 64 (torch, AdamW), head weight 0.5     0.967 / 0.906
              MLP 64 (torch), head weight 0.65           0.974 / 0.918
              MLP 64 (scikit-learn), head weight 0.65    0.975 / 0.916   (crack 0.708, uneven 0.919 against 0.786, 0.831)
              MLP 32 (scikit-learn), head weight 0.65    0.970 / 0.912
              MLP 64 (scikit-learn), head weight 0.8     0.977 / 0.918
    screws    linear (then shipped)                      0.999 / 0.986
              MLP 64 (torch), head weight 0.65           0.998 / 0.988
              MLP 64 (scikit-learn), head weight 0.65    0.998 / 0.986
              MLP 32 (scikit-learn), head weight 0.65    0.998 / 0.979
              MLP 64 (scikit-learn), head weight 0.8     0.997 / 0.979

Shipped: MLP 64 by scikit-learn, head weight 0.65 (``pixel_head.py``); 0.8 costs the screws.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomalycli.data.tensors import load_mask
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection.methods import pixel_head
from anomalycli.judgement.localisation import aupro
from anomalycli.judgement.metrics import pixel_auroc
from benchmarks import folds
from benchmarks.common import samples_of, shipped_options


class Mlp(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net((x.float() - self.mean) / self.scale).squeeze(-1)


def fit_mlp(x, y, w, hidden=64, epochs=8, decay=1e-3, seed=0):
    torch.manual_seed(seed)
    w = np.where(y, w / w[y].sum(), w / w[~y].sum())
    w /= w.mean()
    model = Mlp(x.shape[1], hidden)
    xt = torch.from_numpy(x).float()
    model.mean.copy_(xt.mean(0))
    model.scale.copy_(xt.std(0).clamp_min(1e-6))
    yt, wt = torch.from_numpy(y).float(), torch.from_numpy(w).float()
    optimiser = torch.optim.AdamW(model.net.parameters(), lr=1e-3, weight_decay=decay)
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 512):
            rows = order[start : start + 512]
            loss = (nn.functional.binary_cross_entropy_with_logits(model(xt[rows]), yt[rows], reduction="none") * wt[rows]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


class Variant(nn.Module):
    """An ensemble of fold scorers (mean logit) and the z-score fusion with weight ``head_weight``."""

    def __init__(self, scorers, stats, head_weight):
        super().__init__()
        self.scorers = nn.ModuleList(scorers)
        self.stats, self.head_weight = stats, head_weight

    @torch.no_grad()
    def logits(self, features):
        return torch.stack([s(features) for s in self.scorers]).mean(0)

    def fused(self, distances, features):
        m0, s0, m1, s1 = self.stats
        return (1 - self.head_weight) * (distances - m0) / s0 + self.head_weight * (self.logits(features) - m1) / s1


class Linear(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x):
        return x.float() @ self.weight + self.bias


def cross_fit_variant(fit, patches_of, distances, cover, trained_on, labels, folds_, seed, head_weight):
    x, y, w, owner = pixel_head._training_patches(patches_of, np.flatnonzero(trained_on), cover, labels, np.random.default_rng(seed))
    logits = np.zeros(distances.shape, np.float32)
    scorers = []
    for fold in np.unique(folds_):
        rows = folds_[owner] != fold
        scorer = fit(x[rows], y[rows], w[rows])
        scorers.append(scorer)
        scored = np.flatnonzero(folds_ == fold)
        with torch.no_grad():
            for start in range(0, len(scored), 64):
                part = scored[start : start + 64]
                logits[part] = scorer(patches_of(part)).numpy()
    good = labels == 0
    stats = torch.tensor([distances[good].mean(), distances[good].std(), logits[good].mean(), logits[good].std()])
    return Variant(scorers, stats, head_weight)


def linear_fit(x, y, w):
    weight, bias = pixel_head._fit_head(x, y, w)
    return Linear(weight, bias)


def sklearn_mlp(hidden, alpha=1e-4, epochs=8):
    def fit(x, y, w, seed=0):
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        from sklearn.preprocessing import StandardScaler

        w = np.where(y, w / w[y].sum(), w / w[~y].sum())
        scaler = StandardScaler().fit(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp = MLPClassifier((hidden,), alpha=alpha, batch_size=512, max_iter=epochs, random_state=seed).fit(
                scaler.transform(x), y, sample_weight=w / w.mean()
            )
        model = Mlp(x.shape[1], hidden)
        model.mean.copy_(torch.from_numpy(scaler.mean_))
        model.scale.copy_(torch.from_numpy(scaler.scale_))
        model.net[0].weight.data.copy_(torch.from_numpy(mlp.coefs_[0].T))
        model.net[0].bias.data.copy_(torch.from_numpy(mlp.intercepts_[0]))
        model.net[2].weight.data.copy_(torch.from_numpy(mlp.coefs_[1].T))
        model.net[2].bias.data.copy_(torch.from_numpy(mlp.intercepts_[1]))
        return model.eval()

    return fit


VARIANTS = {
    "torch mlp 64, head weight 0.65": (fit_mlp, 0.65),
    "sklearn mlp 64, head weight 0.65": (sklearn_mlp(64), 0.65),
    "sklearn mlp 32, head weight 0.65": (sklearn_mlp(32), 0.65),
    "sklearn mlp 64, head weight 0.8": (sklearn_mlp(64), 0.8),
}


def main(data: Path, k: int = 5) -> None:
    samples = samples_of(data, False)
    captured = {}
    shipped_cross_fit = pixel_head.cross_fit

    def capturing(patches_of, distances, cover, trained_on, labels, folds_, seed=0):
        made = {}
        for name, (fit, weight) in VARIANTS.items():
            made[name] = cross_fit_variant(fit, patches_of, distances, cover, trained_on, labels, folds_, seed, weight)
        captured["variants"] = made
        return shipped_cross_fit(patches_of, distances, cover, trained_on, labels, folds_, seed)

    pixel_head.cross_fit = capturing
    rows = {}
    for fold in folds.cv_folds(samples, k):
        model, _ = folds.fit(shipped_options(data, fold.training), fold.training)
        held = [s for s in fold.held_out if s.label == 0 or s.mask]
        size = model.config["image_size"]
        truth = [(load_mask(s.mask, size).numpy() if s.mask else np.zeros((size, size), bool))[::2, ::2] for s in held]
        kinds = [s.defect_type or "" if s.label else "" for s in held]
        heads = {"shipped": model.net.pixel_head, **captured["variants"]}
        for name, head in heads.items():
            model.net.pixel_head = head
            maps = [np.asarray(r.map, np.float32)[::2, ::2] for r in iter_scores(model, [s.path for s in held], with_maps=True, show_progress=False)]
            good = [i for i, kind in enumerate(kinds) if not kind]
            per_type = {
                kind: round(
                    aupro(
                        [truth[i] for i in good + [j for j, c in enumerate(kinds) if c == kind]],
                        [maps[i] for i in good + [j for j, c in enumerate(kinds) if c == kind]],
                    ),
                    3,
                )
                for kind in sorted({c for c in kinds if c})
            }
            row = (pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in truth]), np.concatenate([m[::2, ::2].ravel() for m in maps])), aupro(truth, maps))
            rows.setdefault(name, []).append(row)
            print(data.name, fold.name, name, [round(v, 4) for v in row], per_type, flush=True)
    for name, r in rows.items():
        print(data.name, name, "pixel AUROC / AUPRO", [round(float(np.mean(v)), 4) for v in zip(*r)], flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
