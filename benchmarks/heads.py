#!/usr/bin/env python
"""Which supervised head to fuse with PatchCore (issue 14): descriptors and regularisation.

    python benchmarks/heads.py                 # screws and magtiles, Lite1 at 320 px
    python benchmarks/heads.py --data DIR --size 224 --backbone efficientnet_lite0

Every image is embedded once (``FeatureExtractor(deep=True)``: PatchCore's patch features and the
pooled maps of each later stage). On the 5 folds of ``operating_point.py`` (``splits.k_folds``,
seed 0), each held-out fold is scored by:

- PatchCore as ``train`` fits it: fold coresets of the training part's good images, the
  deployed leave-one-part-out bank;
- the hybrid's head (``hybrid.train_global_head``: a logistic regression, classes balanced)
  fitted on the training part's descriptors, for each descriptor and each C;
- their fusion at weight 0.5, each score z-scored on the good images' held-out scores of the
  *other* folds, so nothing is tuned on the fold being scored. (The product chooses the weight
  per data set from out-of-fold scores; ``operating_point.py --methods hybrid`` measures that.)

It reports the mean over folds of the held-out AUROC of each. Then, for the shipped descriptor,
leave-one-type-out: each defect type in turn is left out of the head's training, and the AUROC
of that type against the held-out good images is given for one-class weights 0.25 to 1 (the
z-scores from the training part's good images): how much weight the one-class score needs for
a defect kind never labelled.

``--flips`` adds a lever not in anomalycli: the head also trained on the descriptors of
flipped copies (horizontal; horizontal, vertical and both), with or without averaging its score
over the same flips at test time (each flip is one more backbone pass per image).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from anomalycli import backbones, splits
from anomalycli.data import discover, image_batches
from anomalycli.methods import hybrid, patchcore

REPO = Path(__file__).resolve().parents[1]
DATA = [REPO.parent / "shared" / "data" / name for name in ("screws", "magtiles")]
# Descriptor -> which of the deep maps it pools (index 0 is the stride-16 map PatchCore also reads).
DESCRIPTORS = {"stride 16": [0], "stride 32 (last stage)": [-1], "stride 32 (both stages)": [1, 2], "stride 16 + 32 (shipped)": [0, 1, 2]}
C_VALUES = (0.01, 0.1, 1.0)
LOTO_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
FLIPS = {"h": (-1,), "v": (-2,), "hv": (-1, -2)}  # image dims each flipped copy reverses


@torch.no_grad()
def embed(paths, backbone: str, size: int, flips: bool = False):
    """Patch features (N, P, C) fp16, the pooled descriptor of each deep map [(N, D_i)], and with
    ``flips`` the shipped descriptor of each flipped copy {flip: (N, D)}."""
    extractor = backbones.FeatureExtractor(backbone, backbones.build(backbone, "imagenet")).eval()
    features, pooled, flipped = [], [], {name: [] for name in FLIPS if flips}
    for images, _, errors in image_batches(paths, size, patchcore.EMBED_BATCH):
        assert not any(errors), errors
        x = backbones.preprocess(images, backbone)
        maps = extractor(x, deep=True)
        features.append(patchcore.embed_maps(maps)[0].half())
        pooled.append([backbones.pooled([m]) for m in maps[1:]])
        for name in flipped:
            flipped[name].append(backbones.descriptor(extractor(x.flip(FLIPS[name]), deep=True)))
    return extractor, torch.cat(features), [torch.cat(column) for column in zip(*pooled)], {k: torch.cat(v) for k, v in flipped.items()}


def patchcore_scores(extractor, features, labels, folds, cv_folds: int, seed: int = 0) -> np.ndarray:
    """Held-out PatchCore scores, fitted as ``train`` fits it on the other folds."""
    scores = np.zeros(len(labels))
    for fold in range(folds.max() + 1):
        fit = np.flatnonzero(folds != fold)
        inner = np.arange(len(fit)) % cv_folds  # any split of the fit part: the bank is the union of its parts
        coresets = patchcore.fold_coresets(features[fit], labels[fit], inner, 0.01, seed=seed)
        model = patchcore.union_of(extractor, coresets)
        scores[folds == fold] = patchcore.score_all(model, features[folds == fold]).numpy()
    return scores


def regression_scores(x: np.ndarray, labels: np.ndarray, folds: np.ndarray, c: float, copies: tuple = (), test_time: bool = False) -> np.ndarray:
    """Held-out scores of the hybrid's head (``hybrid.train_global_head`` at ``c``); ``copies``
    (descriptors of flipped images) join each fold's training part, and with ``test_time`` a
    held-out image scores the mean over itself and its copies."""
    scores = np.zeros(len(labels))
    for fold in range(folds.max() + 1):
        fit = folds != fold
        train_x = np.concatenate([x[fit], *(copy[fit] for copy in copies)])
        train_y = np.concatenate([labels[fit]] * (1 + len(copies)))
        head = hybrid.train_global_head(torch.from_numpy(train_x), torch.from_numpy(train_y), c)
        views = [x, *copies] if test_time else [x]
        with torch.no_grad():
            scores[~fit] = np.mean([head(torch.from_numpy(view[~fit])).double().numpy() for view in views], axis=0)
    return scores


def fused(one_class: np.ndarray, supervised: np.ndarray, labels: np.ndarray, folds: np.ndarray, weight: float = 0.5) -> np.ndarray:
    out = np.zeros(len(labels))
    for fold in range(folds.max() + 1):
        reference = (folds != fold) & (labels == 0)
        z = [(s - s[reference].mean()) / s[reference].std() for s in (one_class, supervised)]
        out[folds == fold] = (weight * z[0] + (1 - weight) * z[1])[folds == fold]
    return out


def mean_auroc(labels, scores, folds) -> float:
    return float(np.mean([roc_auc_score(labels[folds == f], scores[folds == f]) for f in range(folds.max() + 1)]))


def unseen_types(one_class, x, labels, types, folds, log=print) -> list[tuple[str, float, list[float]]]:
    """Per defect type left out of the head: its AUROC against held-out good images, head alone and per fusion weight."""
    rows = []
    for kind in sorted(set(types[labels == 1].tolist())):
        head_auroc, fused_auroc = [], {w: [] for w in LOTO_WEIGHTS}
        for fold in range(folds.max() + 1):
            fit = (folds != fold) & (types != kind)
            held_out = ((folds == fold) & (labels == 0)) | (types == kind)
            head = hybrid.train_global_head(torch.from_numpy(x[fit]), torch.from_numpy(labels[fit]))
            with torch.no_grad():
                supervised = head(torch.from_numpy(x)).double().numpy()
            reference = fit & (labels == 0)
            z = [(s - s[reference].mean()) / s[reference].std() for s in (one_class, supervised)]
            head_auroc.append(roc_auc_score(labels[held_out], supervised[held_out]))
            for w in LOTO_WEIGHTS:
                fused_auroc[w].append(roc_auc_score(labels[held_out], (w * z[0] + (1 - w) * z[1])[held_out]))
        rows.append((kind, float(np.mean(head_auroc)), [float(np.mean(fused_auroc[w])) for w in LOTO_WEIGHTS]))
        log(f"  without {kind:20s} head {rows[-1][1]:.3f}  " + "  ".join(f"w={w:g}: {a:.3f}" for w, a in zip(LOTO_WEIGHTS, rows[-1][2])))
    return rows


def run(data: Path, backbone: str, size: int, flips: bool = False, log=print) -> tuple[list, list]:
    samples = splits.k_folds(discover(data).samples, 5, seed=0)
    labels, folds = np.array([s.label for s in samples]), np.array([s.fold for s in samples])
    start = time.perf_counter()
    extractor, features, pooled, flipped = embed([s.path for s in samples], backbone, size, flips)
    log(f"{data.name}: embedded {len(samples)} images in {time.perf_counter() - start:.0f} s")
    one_class = patchcore_scores(extractor, features, torch.from_numpy(labels), folds, 5)
    rows = [("patchcore alone", mean_auroc(labels, one_class, folds), None)]
    for name, which in DESCRIPTORS.items():
        x = torch.cat([pooled[i] for i in which], dim=1).double().numpy()
        for c in C_VALUES:
            supervised = regression_scores(x, labels, folds, c)
            rows.append((f"{name}, C={c:g}", mean_auroc(labels, supervised, folds), mean_auroc(labels, fused(one_class, supervised, labels, folds), folds)))
            log(f"  {rows[-1][0]:34s} head {rows[-1][1]:.4f}  fused {rows[-1][2]:.4f}")
    shipped = torch.cat(pooled, dim=1).double().numpy()
    for names in (["h"], ["h", "v", "hv"]) if flips else ():
        copies = tuple(flipped[name].double().numpy() for name in names)
        for test_time in (False, True):
            supervised = regression_scores(shipped, labels, folds, hybrid.HEAD_C, copies, test_time)
            name = f"shipped + {'/'.join(names)} flips in training{' and at test time' if test_time else ''}"
            rows.append((name, mean_auroc(labels, supervised, folds), mean_auroc(labels, fused(one_class, supervised, labels, folds), folds)))
            log(f"  {rows[-1][0]:34s} head {rows[-1][1]:.4f}  fused {rows[-1][2]:.4f}")
    types = np.array([s.defect_type or "" for s in samples])
    return rows, unseen_types(one_class, shipped, labels, types, folds, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="labelled folder (repeatable; default: screws and magtiles)")
    parser.add_argument("--backbone", default=backbones.DEFAULT_BACKBONE["hybrid"])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--flips", action="store_true", help="also measure flipped copies in the head's training and at test time")
    args = parser.parse_args(argv)
    for data in args.data or DATA:
        rows, unseen = run(data, args.backbone, args.size, args.flips)
        print(f"\n| {data.name}: head | head alone AUROC | fused with patchcore (weight 0.5) |\n| --- | --- | --- |")
        for name, alone, with_patchcore in rows:
            print(f"| {name} | {alone:.4f} | {'-' if with_patchcore is None else f'{with_patchcore:.4f}'} |")
        print(f"\n| {data.name}: type left out of the head | head alone | " + " | ".join(f"one-class weight {w:g}" for w in LOTO_WEIGHTS) + " |")
        print("| --- " * (2 + len(LOTO_WEIGHTS)) + "|")
        for kind, alone, fused_aurocs in unseen:
            print(f"| {kind} | {alone:.3f} | " + " | ".join(f"{a:.3f}" for a in fused_aurocs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
