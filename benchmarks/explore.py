#!/usr/bin/env python
"""Fast PatchCore exploration on cached features: the levers anomalycli does not have yet.

The protocol ``bench.py`` had before cross-fitting (k_folds seed 0, train_val_split 0.2 seed 0,
best-F1 threshold weighted to the training anomaly share on the calibration part = val + the fit
part's anomalies; metrics from ``metrics.binary_report``): a tool for comparing levers by AUROC,
not for the threshold, which ``operating_point.py`` measures,
but every image is embedded once per (backbone, size, layers, augmentation) and each fold only
re-runs the coreset and the nearest-neighbour search. With the default levers it reproduces
``bench.py`` fold for fold (same memory bank, same AUROC and F1 per fold), minutes faster.

    python benchmarks/explore.py --size 256 --coreset 0.1 --aug rot4 --layers 2,4

Prototype levers (not in anomalycli):
  --layers  which EfficientNet-Lite stages feed the patch features (default 2,4 = anomalycli's)
  --aug     extra copies of the fit part's good images in the memory bank:
            none | flip (h, v) | rot4 (0/90/180/270) | d8 (rot4 x hflip) | rotN (N evenly spaced angles)
  --score   image score: max (anomalycli) | blurmax (max of the blurred map) | gridblurS (max of the patch grid blurred with sigma S patches) | topK (mean of the K largest patches)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

from anomalycli import backbones  # noqa: E402
from anomalycli.coreset import SAMPLERS, nearest_distances  # noqa: E402
from anomalycli.data import discover, image_to_tensor, load_all, load_mask, open_image, to_grey_or_rgb  # noqa: E402
from PIL import Image  # noqa: E402
from anomalycli.methods.patchcore import PatchCore, _gaussian_blur  # noqa: E402
from anomalycli.calibration import OperatingRule, calibrate  # noqa: E402
from anomalycli.metrics import binary_report, pixel_auroc  # noqa: E402

FEATURE_CACHE: dict = {}


class StageExtractor(torch.nn.Module):
    """EfficientNet-Lite feature maps at the given stages (anomalycli uses stages 2 and 4)."""

    def __init__(self, name: str, stages: tuple[int, ...]):
        super().__init__()
        self.model = backbones.build(name, "imagenet").eval()
        self.stages = stages

    def forward(self, x):
        return [out for stage, out in self.model.stages(x, last_stage=max(self.stages)) if stage in self.stages]


def embed(maps: list[torch.Tensor], grid_stage_index: int) -> torch.Tensor:
    """PatchCore.embed generalised: 3x3 average, every map brought onto the grid of map ``grid_stage_index``."""
    size = maps[grid_stage_index].shape[-2:]
    maps = [F.avg_pool2d(m, 3, stride=1, padding=1) for m in maps]
    out = []
    for m in maps:
        if m.shape[-2:] == size:
            out.append(m)
        elif m.shape[-1] > size[-1]:
            out.append(F.adaptive_avg_pool2d(m, size))
        else:
            out.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False))
    return torch.cat(out, dim=1).flatten(2).transpose(1, 2)


def augment(images: torch.Tensor, aug: str) -> list[torch.Tensor]:
    """Copies of uint8 images for the bank (the originals first)."""
    if aug == "none":
        return [images]
    if aug == "flip":
        return [images, images.flip(-1), images.flip(-2)]
    if aug == "rot4":
        return [torch.rot90(images, k, dims=(-2, -1)) for k in range(4)]
    if aug == "d8":
        rots = [torch.rot90(images, k, dims=(-2, -1)) for k in range(4)]
        return rots + [r.flip(-1) for r in rots]
    if aug.startswith("rot"):
        n = int(aug[3:])
        # Arbitrary angles: fill the corners with the image's median grey (screws lie on a plain background).
        out = [images]
        fill = float(images.float().median())
        for i in range(1, n):
            out.append(TF.rotate(images, 360.0 * i / n, interpolation=TF.InterpolationMode.BILINEAR, fill=fill))
        return out
    raise SystemExit(f"unknown --aug {aug}")


@torch.no_grad()
def features_for(samples, backbone: str, size: int, stages: tuple[int, ...], grid: int, aug: str = "none", batch: int = 32):
    """{path: fp16 (h*w, C)} per augmentation copy: a list with one dict per copy."""
    key = (backbone, size, stages, grid, aug, tuple(s.path for s in samples))
    if key in FEATURE_CACHE:
        return FEATURE_CACHE[key]
    extractor = StageExtractor(backbone, stages)
    images, kept, errors = (letterboxed_all if LETTERBOX else load_all)(samples, size)
    assert not errors, errors
    copies = []
    for variant in augment(images, aug):
        feats = []
        for i in range(0, len(variant), batch):
            x = backbones.preprocess(variant[i : i + batch], backbone)
            feats.append(embed(extractor(x), stages.index(grid)).half())
        feats = torch.cat(feats)
        copies.append({s.path: f for s, f in zip(kept, feats)})
    side = int(math.isqrt(next(iter(copies[0].values())).shape[0]))
    FEATURE_CACHE[key] = (copies, side)
    return copies, side


# --letterbox: pad each image to a square (its own median grey) before resizing, instead of squashing it.
LETTERBOX = False


def letterbox(image: Image.Image, size: int, resample=Image.BILINEAR) -> Image.Image:
    """``image`` centred on a square of its median colour, then resized to ``size``: the aspect kept."""
    side = max(image.size)
    fill = tuple(int(v) for v in np.median(np.asarray(image).reshape(-1, len(image.getbands())), axis=0))
    square = Image.new(image.mode, (side, side), fill if len(fill) > 1 else fill[0])
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square.resize((size, size), resample, reducing_gap=3.0 if resample == Image.BILINEAR else None)


def letterboxed_all(samples, size: int):
    tensors = [image_to_tensor(letterbox(to_grey_or_rgb(open_image(s.path)), size), size) for s in samples]
    return torch.stack(tensors), list(samples), []


def letterboxed_mask(path, size: int) -> torch.Tensor:
    with Image.open(path) as mask:
        return torch.from_numpy(np.array(letterbox(mask.convert("L"), size, Image.NEAREST)) > 127)


def weighted_f1_threshold(labels, scores, weights=None) -> float:
    """metrics.best_f1_threshold with sample weights (ties go to the higher cut)."""
    from sklearn import metrics as skm

    precision, recall, thresholds = skm.precision_recall_curve(labels, scores, sample_weight=weights)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[np.flatnonzero(f1 == f1.max())[-1]])


class Scorer:
    """PatchCore.forward on precomputed features."""

    def __init__(self, bank: torch.Tensor, reweight: bool, score: str, knn: int = 1):
        self.net = PatchCore(None, bank.float(), reweight=reweight)
        self.score, self.knn = score, knn

    def __call__(self, features: torch.Tensor, side: int, size: int, want_maps: bool):
        n = features.shape[0]
        flat = features.reshape(-1, features.shape[-1]).float()
        dist, idx = nearest_distances(flat, self.net.bank, k=self.knn)
        patch = dist.mean(1).view(n, side * side) if self.knn > 1 else dist[:, 0].view(n, side * side)
        maps = None
        if want_maps or self.score == "blurmax":
            maps = F.interpolate(patch.view(n, 1, side, side), size=(size, size), mode="bilinear", align_corners=False)
            maps = _gaussian_blur(maps, sigma=4.0).squeeze(1)
        if self.score == "blurmax":
            scores = maps.flatten(1).max(1).values
        elif self.score.startswith("gridblur"):
            sigma = float(self.score[8:])
            scores = _gaussian_blur(patch.view(n, 1, side, side), sigma=sigma).flatten(1).max(1).values
        elif self.score.startswith("top"):
            scores = patch.topk(int(self.score[3:]), dim=1).values.mean(1)
        else:
            scores, worst = patch.max(dim=1)
            if self.net.reweight:
                feats = features.float()
                ar = torch.arange(n)
                scores = scores * self.net._weights(feats[ar, worst], idx[:, 0].view(n, -1)[ar, worst])
        return scores, maps


def cv(samples, args, log=print) -> dict:
    stages = tuple(int(s) for s in args.layers.split(","))
    grid = args.grid if args.grid is not None else min((s for s in stages if s >= 2), default=min(stages))
    plain, side = features_for(samples, args.backbone, args.size, stages, grid, "none")
    folds = []
    for fold, (fit_part, calib_part, held_out) in enumerate(bench.fold_parts(samples, args.folds)):
        start = time.perf_counter()
        good = [s for s in fit_part if s.label == 0]
        all_good = [s for s in samples if s.label == 0]
        copies, _ = features_for(all_good, args.backbone, args.size, stages, grid, args.aug) if args.aug != "none" else (plain, side)
        bank = torch.cat([torch.stack([c[s.path] for s in good]).reshape(-1, plain[0][good[0].path].shape[-1]) for c in copies])
        chosen = SAMPLERS["greedy"](args.coreset, seed=0).run(bank)
        scorer = Scorer(bank[chosen], args.reweight, args.score, args.knn)
        calibration_samples = calib_part + [s for s in fit_part if s.label == 1]
        cal_scores, _ = scorer(torch.stack([plain[0][s.path] for s in calibration_samples]), side, args.size, False)
        training = fit_part + calib_part
        prevalence = sum(s.label for s in training) / len(training)
        # As train._train_patchcore: max F1 weighted to the training data's anomaly share.
        calibration, _ = calibrate(np.array([s.label for s in calibration_samples]), cal_scores.numpy(), OperatingRule("f1", prevalence))
        fit_seconds = time.perf_counter() - start
        test_scores, maps = scorer(torch.stack([plain[0][s.path] for s in held_out]), side, args.size, True)
        raw = test_scores.numpy()
        predicted = (calibration.normalise(raw) >= 0.5).astype(int)
        labels = [s.label for s in held_out]
        report = binary_report(labels, raw, predicted, [s.defect_type for s in held_out], n_boot=0)
        truth, pix = [], []
        for s, m in zip(held_out, maps):
            if s.mask or s.label == 0:
                t = (letterboxed_mask if LETTERBOX else load_mask)(s.mask, args.size) if s.mask else torch.zeros(args.size, args.size, dtype=torch.bool)
                truth.append(t.numpy()[::4, ::4].ravel())
                pix.append(m.numpy()[::4, ::4].ravel())
        report["pixel_auroc"] = pixel_auroc(np.concatenate(truth), np.concatenate(pix)) if truth else None
        # Threshold variants (diagnostics): the calibration part only; every calibration image unweighted
        # (anomalycli before 1da28aa); and the best threshold on the test fold itself (an upper bound on F1).
        cal_labels = np.array([s.label for s in calibration_samples])
        cal_raw = cal_scores.numpy()
        variants = {}
        n_val = len(calib_part)
        variants["val"] = weighted_f1_threshold(cal_labels[:n_val], cal_raw[:n_val])
        variants["unweighted"] = weighted_f1_threshold(cal_labels, cal_raw)
        variants["oracle"] = weighted_f1_threshold(np.array(labels), raw)
        extra = {}
        for name, threshold in variants.items():
            r = binary_report(labels, raw, (raw >= threshold).astype(int), n_boot=0)
            extra[f"f1_{name}"], extra[f"precision_{name}"], extra[f"recall_{name}"] = r["f1"], r["precision"], r["recall"]
        folds.append({"fold": fold, "fit_seconds": fit_seconds, "bank": int(len(chosen)), **{k: report[k] for k in bench.METRICS}, **extra,
                      "per_defect": {k: v["recall"] for k, v in report["per_defect_type"].items()}})
        if args.verbose:
            log(f"  fold {fold}: auroc {report['auroc']:.3f} f1 {report['f1']:.3f} pixel {report['pixel_auroc']:.3f} bank {len(chosen)} {fit_seconds:.1f}s")
    extra_keys = [k for k in folds[0] if k.startswith(("f1_", "precision_", "recall_"))]
    summary = {k: bench.mean_std([f[k] for f in folds if f[k] is not None]) for k in (*bench.METRICS, "fit_seconds", *extra_keys)}
    kinds = sorted({k for f in folds for k in f["per_defect"]})
    summary["per_defect"] = {k: float(np.mean([f["per_defect"][k] for f in folds if k in f["per_defect"]])) for k in kinds}
    return {"folds": folds, "summary": summary}


def label(args) -> str:
    return (f"{args.backbone.replace('efficientnet_', '')} {args.size}px c{args.coreset:g}{' rw' if args.reweight else ''} "
            f"L{args.layers.replace(',', '')}{'' if args.grid is None else f'g{args.grid}'} aug:{args.aug}{' letterbox' if args.letterbox else ''} score:{args.score}{'' if args.knn == 1 else f' k{args.knn}'}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=bench.DEFAULT_DATA)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--coreset", type=float, default=0.01)
    p.add_argument("--reweight", action="store_true")
    p.add_argument("--layers", default="2,4")
    p.add_argument("--grid", type=int, default=None, help="stage whose grid the patches live on (default: the finest of stage >= 2)")
    p.add_argument("--aug", default="none")
    p.add_argument("--letterbox", action="store_true", help="pad images (and masks) to a square instead of squashing them")
    p.add_argument("--score", default="max")
    p.add_argument("--knn", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--log", type=Path, default=Path("/tmp/explore.jsonl"), help="append one JSON line per run here")
    return p


def run(argv: list[str], samples=None) -> dict:
    args = parser().parse_args(argv)
    global LETTERBOX
    LETTERBOX = args.letterbox
    samples = samples or discover(args.data).samples
    start = time.perf_counter()
    result = cv(samples, args)
    s = result["summary"]
    name = label(args)
    print(f"{name:70s} auroc {bench.pm(s['auroc'])} f1 {bench.pm(s['f1'])} pixel {bench.pm(s['pixel_auroc'])} "
          f"fit {bench.pm(s['fit_seconds'], 1)}s  [{time.perf_counter() - start:.0f}s]  "
          f"f1 val/unweighted/oracle {s['f1_val'][0]:.3f}/{s['f1_unweighted'][0]:.3f}/{s['f1_oracle'][0]:.3f}  P/R {s['precision'][0]:.2f}/{s['recall'][0]:.2f}  "
          + " ".join(f"{k[:6]}={v:.2f}" for k, v in s["per_defect"].items()), flush=True)
    with open(args.log, "a") as f:
        f.write(json.dumps({"name": name, "argv": argv, **result}) + "\n")
    return result


if __name__ == "__main__":
    # Several runs in one process share the feature cache: separate them with ' -- '.
    argv = sys.argv[1:]
    runs, current = [], []
    for a in argv:
        if a == "--":
            runs.append(current)
            current = []
        else:
            current.append(a)
    runs.append(current)
    samples = None
    for r in runs:
        run(r, samples)
