#!/usr/bin/env python
"""The project's benchmark: cross-validated accuracy and speed on a labelled image folder.

    python benchmarks/bench.py                      # full run on ../shared/data/screws (under 30 min on 2 cores)
    python benchmarks/bench.py --loto               # ... and leave-one-type-out (about 15 min more)
    python benchmarks/bench.py --quick              # 2 folds, one config, tiny speed runs, with leave-one-type-out (< 3 min)
    python benchmarks/bench.py --quick --data DIR --out /tmp/bench.md   # any class-folder data set

Accuracy protocol (the same for every config): stratified k-fold CV over all images
(``splits.k_folds(samples, k, seed=0)``). For fold k the other folds are the training part;
``splits.train_val_split(part, 0.2, seed=0)`` cuts it into a fit part and a calibration part,
``train.fit`` fits on them (patchcore and hybrid cross-fit over both parts together; the
classifier fits on the first and calibrates on the second), and ``inference.evaluate`` scores fold k. So every fold's threshold comes from its own training
part only. Reported: mean and std over folds of image AUROC, F1, precision, recall, accuracy,
pixel AUROC (methods with maps, data with masks), per-defect-type recall and fit seconds.
Leave-one-type-out (``--loto``): each defect type in turn is withheld from fitting and
calibration and scored against held-out normal images (``loto_parts``).

Speed: raw backbone forward throughput, PatchCore fit wall time on all good images, predict
throughput (``inference.iter_scores``) at the data's own resolution and on 1024x1024 PNG copies,
and peak RSS; each speed stage runs in a fresh child process so its peak RSS is its own. Scale:
fit and predict on 1,000 and 5,000 images. Peer: anomalib's PatchCore (``peer_anomalib.py``, run
by the Python of a separate virtual environment; skipped with a note when there is none).

The data set must never be copied into the repository; this script only reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from anomalycli import backbones, inference, io, runtime, splits, train
from anomalycli.data import Sample, discover

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "screws"
DEFAULT_OUT = REPO / "BENCHMARKS.md"
METRICS = ("auroc", "f1", "precision", "recall", "accuracy", "pixel_auroc")


# --- configurations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One row of the accuracy table: a method and the settings that differ from TrainOptions'."""

    name: str
    method: str = "patchcore"  # patchcore | hybrid | classifier
    backbone: str = "efficientnet_lite0"
    image_size: int = 224
    coreset_ratio: float = 0.01  # patchcore, hybrid
    reweight: bool = False  # patchcore
    # classifier only
    epochs: int = 15
    batch_size: int = 32
    patience: int = 5
    weighted_loss: bool = True

    def options(self, data: str | Path, device: str) -> train.TrainOptions:
        return train.TrainOptions(
            data=str(data), method=self.method, backbone=self.backbone, image_size=self.image_size,
            coreset_ratio=self.coreset_ratio, reweight=self.reweight, device=device, epochs=self.epochs,
            batch_size=self.batch_size, patience=self.patience, weighted_loss=self.weighted_loss,
        )

    def describe(self) -> str:
        if self.method == "classifier":
            return f"{self.backbone}, {self.image_size}px, {self.epochs} epochs, batch {self.batch_size}, patience {self.patience}, weighted loss {'on' if self.weighted_loss else 'off'}"
        if self.method == "hybrid":
            return f"{self.backbone}, {self.image_size}px, coreset {self.coreset_ratio:g}, 5 cross-fitting folds"
        return f"{self.backbone}, {self.image_size}px, coreset {self.coreset_ratio:g}, reweight {'on' if self.reweight else 'off'}"


def make(method="patchcore", backbone="efficientnet_lite0", image_size=224, coreset_ratio=0.01, reweight=False, **classifier) -> Config:
    short = backbone.replace("efficientnet_", "")
    if method == "classifier":
        settings = {**dict(epochs=15, batch_size=32, patience=5, weighted_loss=True), **classifier}
        return Config(f"classifier {short} {image_size}px {settings['epochs']}ep", method, backbone, image_size, **settings)
    name = f"{method} {short} {image_size}px c{coreset_ratio:g}{' rw' if reweight else ''}"
    return Config(name, method, backbone, image_size, coreset_ratio, reweight)


def patchcore(backbone="efficientnet_lite0", image_size=224, coreset_ratio=0.01, reweight=False) -> Config:
    return make("patchcore", backbone, image_size, coreset_ratio, reweight)


def shipped(method: str = "patchcore") -> Config:
    """What ``anomaly train --method METHOD`` does with no other options."""
    options = train.TrainOptions(data="", method=method)
    options.validate()  # fills in the method's default backbone and image size
    return make(method, options.backbone, options.image_size, options.coreset_ratio, options.reweight)


SHIPPED = shipped()
CLASSIFIER = make("classifier")

SPEED = patchcore()  # the speed targets are at 224 px on the offline Lite0
# The default run (about half an hour on 2 CPU cores): the shipped patchcore, the speed config, the
# shipped hybrid, and the classifier (see --classifier). --levers adds one lever at a time from
# lite0/224px/0.01 (about an hour more).
DEFAULT_CONFIGS = [SHIPPED, SPEED, shipped("hybrid")]
LEVERS = [
    patchcore(image_size=256),
    patchcore(image_size=320),
    patchcore(coreset_ratio=0.05),
    patchcore(coreset_ratio=0.1),
    patchcore(reweight=True),
    patchcore("efficientnet_lite2", 320),
    patchcore("efficientnet_lite1", 320, coreset_ratio=0.05),
]
QUICK_CONFIGS = [patchcore()]  # a smoke test: lite0/224px/0.01 whatever the shipped defaults, so it stays fast
QUICK_MAX_IMAGES = 120  # --quick cross-validates this many images at most (stratified), to stay well under 3 minutes


def parse_config(text: str) -> Config:
    """``key=value,key=value`` over Config's fields, e.g. ``image_size=256,coreset_ratio=0.1,reweight=1``."""
    types = {f.name: f.type for f in fields(Config)}
    values: dict = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in types or key == "name":
            raise SystemExit(f"--config: unknown key {key!r}; use {', '.join(k for k in types if k != 'name')}")
        kind = types[key]
        if kind in ("bool", bool):
            values[key] = value.strip().lower() in ("1", "true", "yes", "on")
        elif kind in ("int", int):
            values[key] = int(value)
        elif kind in ("float", float):
            values[key] = float(value)
        else:
            values[key] = value.strip()
    method = values.get("method", "patchcore")
    if method not in train.METHOD_NAMES:
        raise SystemExit(f"--config: method must be one of {', '.join(train.METHOD_NAMES)}")
    # Keys left out take the method's shipped defaults, as `anomaly train` would.
    base = shipped(method)
    defaults = {"backbone": base.backbone, "image_size": base.image_size, "coreset_ratio": base.coreset_ratio, "reweight": base.reweight}
    if method == "classifier":
        defaults.update(epochs=CLASSIFIER.epochs, batch_size=CLASSIFIER.batch_size, patience=CLASSIFIER.patience, weighted_loss=CLASSIFIER.weighted_loss)
    return make(**{**defaults, **values})


# --- accuracy: k-fold cross-validation -------------------------------------------------


@dataclass
class FoldResult:
    fold: int
    n_fit: int
    n_calib: int
    n_test: int
    fit_seconds: float
    eval_seconds: float
    metrics: dict  # METRICS -> value or None
    per_defect: dict  # defect type -> recall
    bank_size: int | None = None
    threshold: float | None = None
    warnings: list = field(default_factory=list)


@dataclass
class CVResult:
    config: Config
    folds: list[FoldResult]

    def values(self, key: str) -> list[float]:
        return [f.metrics[key] for f in self.folds if f.metrics.get(key) is not None]

    def stat(self, key: str) -> tuple[float | None, float | None]:
        return mean_std(self.values(key))

    def fit_seconds(self) -> tuple[float | None, float | None]:
        return mean_std([f.fit_seconds for f in self.folds])

    def defect_types(self) -> list[str]:
        return sorted({k for f in self.folds for k in f.per_defect})

    def defect_stat(self, kind: str) -> tuple[float | None, float | None]:
        return mean_std([f.per_defect[kind] for f in self.folds if kind in f.per_defect])


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), (float(statistics.stdev(values)) if len(values) > 1 else 0.0)


def subsample(samples: list[Sample], n: int, seed: int = 0) -> list[Sample]:
    """A stratified (class and defect type) subset of ``n`` samples, in their original order."""
    from sklearn.model_selection import train_test_split

    keys = splits.strata(samples)
    try:
        keep, _ = train_test_split(list(range(len(samples))), train_size=n, random_state=seed, stratify=keys)
    except ValueError:  # a stratum too small to split: fall back to class only
        keep, _ = train_test_split(list(range(len(samples))), train_size=n, random_state=seed, stratify=[s.label for s in samples])
    return [samples[i] for i in sorted(keep)]


def fold_parts(samples: list[Sample], k: int, seed: int = 0) -> list[tuple[list[Sample], list[Sample], list[Sample]]]:
    """For each fold: (fit part, calibration part, held-out fold)."""
    assigned = splits.k_folds(samples, k, seed=seed)
    parts = []
    for fold in range(k):
        held_out = [s for s in assigned if s.fold == fold]
        training = [s for s in assigned if s.fold != fold]
        fit_part, calib_part = splits.train_val_split(training, val_ratio=0.2, seed=seed)
        parts.append((fit_part, calib_part, held_out))
    return parts


def fit_model(config: Config, data: Path, fit_part, calib_part, device: str):
    """The default fit: ``train.fit`` as ``anomaly train`` runs it. Prototypes pass their own."""
    model, _history, notes = train.fit(config.options(data, device), fit_part, calib_part, show_progress=False)
    return model, notes


def run_cv(
    config: Config, data: Path, samples: list[Sample], k: int, device: str = "cpu", fit_fn=fit_model, log=print,
    fold_budget: float | None = None,
) -> CVResult:
    """k-fold CV of one config; with ``fold_budget`` (seconds), stop after fold 0 if fitting it took longer."""
    folds = []
    for fold, (fit_part, calib_part, held_out) in enumerate(fold_parts(samples, k)):
        start = time.perf_counter()
        model, notes = fit_fn(config, data, fit_part, calib_part, device)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        report, _rows = inference.evaluate(model, held_out, with_masks=True, n_boot=0, show_progress=False)
        eval_seconds = time.perf_counter() - start
        metrics = {key: report.get(key) for key in METRICS}
        per_defect = {kind: v["recall"] for kind, v in report["per_defect_type"].items()}
        result = FoldResult(
            fold, len(fit_part), len(calib_part), len(held_out), fit_seconds, eval_seconds, metrics, per_defect,
            model.config.get("bank_size"), model.calibration.threshold, list(notes),
        )
        folds.append(result)
        log(
            f"  fold {fold}: auroc {fmt(metrics['auroc'])} f1 {fmt(metrics['f1'])} pixel {fmt(metrics['pixel_auroc'])} "
            f"fit {fit_seconds:.1f}s eval {eval_seconds:.1f}s recall by type {json.dumps({k: round(v, 2) for k, v in per_defect.items()})}"
            + (f"  ({'; '.join(notes)})" if notes else "")
        )
        del model
        if fold_budget is not None and fit_seconds > fold_budget:
            log(f"  stopping after fold {fold}: fitting took {fit_seconds:.0f}s, over the {fold_budget:.0f}s budget")
            break
    return CVResult(config, folds)


# --- accuracy on a defect kind never seen: leave one defect type out ----------------------


@dataclass
class HeldOutType:
    kind: str
    n_defects: int
    n_normal: int
    recall: float | None  # of the held-out kind, at the threshold calibrated without it
    auroc: float | None  # held-out kind vs held-out normal images
    false_positive_rate: float | None  # on the held-out normal images
    fit_seconds: float


@dataclass
class LotoResult:
    config: Config
    types: list[HeldOutType]

    def mean(self, key: str) -> float | None:
        return mean_std([getattr(t, key) for t in self.types if getattr(t, key) is not None])[0]


def loto_parts(samples: list[Sample], seed: int = 0):
    """For each defect type T: (T, fit part, calibration part, held out = every T defect + a 1/k share of normals).

    The training part holds the other normals and every defect of the other types, cut 80/20 into
    fit and calibration parts as in the CV protocol; nothing of type T is fitted on or calibrated on.
    """
    kinds = sorted({s.defect_type for s in samples if s.label == 1})
    normal = splits.k_folds([s for s in samples if s.label == 0], len(kinds), seed=seed)
    for i, kind in enumerate(kinds):
        held_out = [s for s in normal if s.fold == i] + [s for s in samples if s.label == 1 and s.defect_type == kind]
        training = [s for s in normal if s.fold != i] + [s for s in samples if s.label == 1 and s.defect_type != kind]
        fit_part, calib_part = splits.train_val_split(training, val_ratio=0.2, seed=seed)
        yield kind, fit_part, calib_part, held_out


def run_loto(config: Config, data: Path, samples: list[Sample], device: str = "cpu", fit_fn=fit_model, log=print, type_budget: float | None = None) -> LotoResult:
    """Leave-one-type-out of one config; with ``type_budget`` (seconds), stop after the first type if fitting took longer."""
    rows = []
    for kind, fit_part, calib_part, held_out in loto_parts(samples):
        start = time.perf_counter()
        model, _notes = fit_fn(config, data, fit_part, calib_part, device)
        fit_seconds = time.perf_counter() - start
        report, _ = inference.evaluate(model, held_out, n_boot=0, show_progress=False)
        cm = report["confusion_matrix"]
        fpr = cm["fp"] / (cm["fp"] + cm["tn"]) if cm["fp"] + cm["tn"] else None
        row = HeldOutType(kind, sum(s.label for s in held_out), sum(1 - s.label for s in held_out), report["recall"], report["auroc"], fpr, fit_seconds)
        rows.append(row)
        log(f"  without {kind}: recall {fmt(row.recall)} auroc {fmt(row.auroc)} fpr {fmt(row.false_positive_rate)} fit {fit_seconds:.1f}s")
        del model
        if type_budget is not None and fit_seconds > type_budget:
            log(f"  stopping after {kind}: fitting took {fit_seconds:.0f}s, over the {type_budget:.0f}s budget")
            break
    return LotoResult(config, rows)


# --- speed ------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident memory of this process, in MiB.

    Linux's VmHWM (in /proc/self/status) is the high-water mark of this process's own memory;
    getrusage's ru_maxrss is not usable in a child, since Linux carries it across exec from
    the parent (so every stage would report the parent's peak).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def stage_backbone(args) -> dict:
    """Raw forward throughput of the feature extractor PatchCore uses (no memory bank)."""
    extractor = backbones.FeatureExtractor(args.backbone, backbones.build(args.backbone, "imagenet")).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            extractor(x)
        for _ in range(args.repeats):
            start = time.perf_counter()
            extractor(x)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"images_per_s": args.batch / median, "median_batch_s": median, "repeats": args.repeats}


def repeated(items: list, n: int | None) -> list:
    """The first ``n`` of ``items`` cycled as often as needed (scale runs: copies of a small data set)."""
    return items if not n else [items[i % len(items)] for i in range(n)]


def _good_samples(data: Path, limit: int | None, repeat_to: int | None = None) -> list[Sample]:
    good = [s for s in discover(data).samples if s.label == 0]
    return repeated(good[:limit] if limit else good, repeat_to)


def _fit_all_good(args, good: list[Sample]):
    """PatchCore on all good images, calibrated on their out-of-fold scores (no anomalies needed)."""
    config = patchcore(args.backbone, args.size, args.coreset_ratio, args.reweight)
    model, _, _ = train.fit(config.options(args.data, "cpu"), good, [], show_progress=False)
    return model


def stage_fit(args) -> dict:
    good = _good_samples(Path(args.data), args.limit, args.repeat_to)
    start = time.perf_counter()
    model = _fit_all_good(args, good)
    seconds = time.perf_counter() - start
    if args.save:
        model.save(args.save)
    return {"seconds": seconds, "n_images": len(good), "bank_size": model.config["bank_size"]}


def stage_predict(args) -> dict:
    """iter_scores throughput at the files' own resolution, or on 1024x1024 PNG copies of them."""
    from PIL import Image

    from anomalycli.methods import AnomalyModel

    model = AnomalyModel.load(args.model)  # the one the fit stage saved
    paths = repeated([s.path for s in discover(args.data).samples][: args.n_predict], args.repeat_to)
    with tempfile.TemporaryDirectory(prefix="bench-1024-") as tmp:
        if args.upscale:
            copies = []
            for i, path in enumerate(paths):
                copy = Path(tmp) / f"{i:04d}.png"
                with Image.open(path) as image:  # keep the file's mode: grayscale stays grayscale, as a camera writes it
                    image.resize((args.upscale, args.upscale), Image.BICUBIC).save(copy)
                copies.append(copy)
            paths = copies
        # Warm-up on one batch, then the timed pass.
        for _ in inference.iter_scores(model, paths[: args.batch], batch_size=args.batch, show_progress=False):
            pass
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            n = sum(1 for _ in inference.iter_scores(model, paths, batch_size=args.batch, show_progress=False))
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"images_per_s": n / seconds, "n_images": n, "seconds": seconds, "repeats": args.repeats}


STAGES = {"backbone": stage_backbone, "fit": stage_fit, "predict": stage_predict}


# --quick runs each stage in this process: its peak memory is then not its own, but the test suite
# saves an interpreter start (several seconds) per stage.
STAGES_IN_PROCESS = False


def run_stage(stage: str, **settings) -> dict:
    """One speed stage in a fresh interpreter, so its peak RSS is its own."""
    arguments = ["--_stage", stage]
    for key, value in settings.items():
        if value is None:
            continue
        arguments += [f"--_{key}", str(value)]
    if STAGES_IN_PROCESS:
        return stage_result(arguments)
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"speed stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_main(argv: list[str]) -> None:
    print(json.dumps(stage_result(argv)))


def stage_result(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--_stage", dest="stage", required=True)
    parser.add_argument("--_data", dest="data", default=str(DEFAULT_DATA))
    parser.add_argument("--_backbone", dest="backbone", default="efficientnet_lite0")
    parser.add_argument("--_size", dest="size", type=int, default=224)
    parser.add_argument("--_batch", dest="batch", type=int, default=32)
    parser.add_argument("--_warmup", dest="warmup", type=int, default=2)
    parser.add_argument("--_repeats", dest="repeats", type=int, default=5)
    parser.add_argument("--_coreset_ratio", dest="coreset_ratio", type=float, default=0.01)
    parser.add_argument("--_reweight", dest="reweight", type=lambda v: v == "True", default=False)
    parser.add_argument("--_limit", dest="limit", type=int, default=None)
    parser.add_argument("--_n_predict", dest="n_predict", type=int, default=None)
    parser.add_argument("--_upscale", dest="upscale", type=int, default=None)
    parser.add_argument("--_repeat_to", dest="repeat_to", type=int, default=None)
    parser.add_argument("--_save", dest="save", default=None)
    parser.add_argument("--_model", dest="model", default=None)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    result = STAGES[args.stage](args)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def fit_settings(data: Path, config: Config) -> dict:
    """What the fit stage needs to know of a config."""
    return dict(data=data, backbone=config.backbone, size=config.image_size, coreset_ratio=config.coreset_ratio, reweight=config.reweight)


def run_speed(data: Path, config: Config, quick: bool, log=print) -> list[dict]:
    """Rows of the speed table: raw forward, fit, predict at the files' size and from 1024 px PNGs."""
    rows = []

    def add(what: str, value: str, rss: float, **extra) -> None:
        rows.append({"what": what, "value": value, "rss": rss, **extra})
        log(f"  {what}: {value}")

    common = fit_settings(data, config)
    batch = 8 if quick else 32
    bb = run_stage("backbone", backbone=config.backbone, size=config.image_size, batch=batch, warmup=1 if quick else 3, repeats=2 if quick else 10)
    add(f"backbone forward ({config.backbone}, {config.image_size}px, batch {batch}, median of {bb['repeats']})", f"{bb['images_per_s']:.1f} images/s", bb["peak_rss_mib"], images_per_s=bb["images_per_s"])
    limit = 16 if quick else None
    n_predict = 16 if quick else None
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        model_path = Path(tmp) / "model.safetensors"
        fits = [run_stage("fit", limit=limit, save=model_path, **common) for _ in range(repeats)]
        fit_s = statistics.median(f["seconds"] for f in fits)
        add(f"PatchCore fit on {fits[0]['n_images']} good images ({config.describe()}; load, features, coreset, calibration; median of {repeats} runs)",
            f"{fit_s:.1f} s (bank {fits[0]['bank_size']} patches)", max(f["peak_rss_mib"] for f in fits), seconds=fit_s, n_images=fits[0]["n_images"])
        for upscale in (None, 1024):
            pred = run_stage("predict", model=model_path, data=data, n_predict=n_predict, upscale=upscale, batch=batch, repeats=repeats)
            source = f"{upscale}x{upscale} PNG copies" if upscale else "files as they are"
            ratio = pred["images_per_s"] / bb["images_per_s"]
            add(f"predict ({config.image_size}px model, iter_scores, batch {batch}, default loader workers) on {pred['n_images']} {source}, median of {repeats} passes",
                f"{pred['images_per_s']:.1f} images/s ({ratio:.2f} of raw forward)", pred["peak_rss_mib"], images_per_s=pred["images_per_s"])
    return rows


def run_scale(data: Path, config: Config, quick: bool, log=print) -> list[dict]:
    """Fit and predict on 1,000 and 5,000 images (the data's files, cycled): per-image time and peak memory.

    Predict uses a model fitted on the data's own good images: the memory bank grows with the
    images fitted (coreset ratio), and a bank fitted on 5,000 copies would time the search, not
    whether predicting many images stays flat.
    """
    rows = []
    sizes = (64,) if quick else (1000, 5000)  # quick: one size, so the test suite stays short
    common = fit_settings(data, config)
    for n in sizes:
        fit = run_stage("fit", repeat_to=n, **common)
        rows.append({"what": f"fit on {n} good images", "n": n, "seconds": fit["seconds"], "ms_per_image": 1000 * fit["seconds"] / n,
                     "rss": fit["peak_rss_mib"], "bank_size": fit["bank_size"]})
        log(f"  fit {n}: {fit['seconds']:.1f} s, {rows[-1]['ms_per_image']:.1f} ms/image, bank {fit['bank_size']}, peak {fit['peak_rss_mib']:.0f} MiB")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        model_path = Path(tmp) / "model.safetensors"
        own = run_stage("fit", save=model_path, limit=16 if quick else None, **common)
        for n in sizes:
            pred = run_stage("predict", model=model_path, data=data, repeat_to=n, batch=8 if quick else 32, repeats=1)
            rows.append({"what": f"predict {n} images", "n": n, "seconds": pred["seconds"], "ms_per_image": 1000 * pred["seconds"] / n,
                         "rss": pred["peak_rss_mib"], "bank_size": own["bank_size"]})
            log(f"  predict {n}: {pred['images_per_s']:.1f} images/s, peak {pred['peak_rss_mib']:.0f} MiB")
    return rows


PEER_SCRIPT = Path(__file__).resolve().parent / "peer_anomalib.py"


def run_peer(data: Path, config: Config, python: str, quick: bool, log=print) -> dict | None:
    """anomalib's PatchCore timed on the same images and settings, in its own virtual environment.

    Its greedy coreset takes far too long at ``config.coreset_ratio`` here, so it runs at two small
    ratios; the coreset time is linear in the number of centres picked, and a straight line through
    the two runs gives its time at the config's ratio (stated as extrapolated in the report).
    """
    good = _good_samples(data, None)
    folder = good[0].path.parent
    n_fit = 16 if quick else len(good)
    ratios = (0.01, 0.02) if quick else (0.001, 0.002)
    runs = []
    for ratio in ratios:
        with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
            out = Path(tmp) / "peer.json"
            command = [python, str(PEER_SCRIPT), "--good-dir", str(folder), "--n-fit", str(n_fit), "--predict-dir", str(folder),
                       "--n-predict", str(16 if quick else 96), "--image-size", str(config.image_size), "--coreset-ratio", str(ratio),
                       "--backbone", config.backbone, "--json", str(out)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode == 3:
                log("  anomalib is not installed in that environment: peer skipped")
                return None
            if done.returncode != 0:
                raise RuntimeError(f"peer run failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(out.read_text()))
        log(f"  anomalib ratio {ratio:g}: embed {runs[-1]['embed_s']:.1f}s coreset {runs[-1]['coreset_s']:.1f}s bank {runs[-1]['bank_size']}")
    (a, b) = runs
    per_centre = (b["coreset_s"] - a["coreset_s"]) / max(1, b["bank_size"] - a["bank_size"])
    target_bank = round(config.coreset_ratio * a["n_patches"])
    coreset_s = a["coreset_s"] + per_centre * (target_bank - a["bank_size"])
    embed_s = statistics.median([r["embed_s"] for r in runs])
    return {
        "runs": runs, "n_fit": n_fit, "coreset_ratio": config.coreset_ratio, "target_bank": target_bank,
        "coreset_s_extrapolated": coreset_s, "fit_s_extrapolated": embed_s + coreset_s,
        "predict_images_per_s": statistics.median([r["predict_images_per_s"] for r in runs]),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "anomalib_version": a["anomalib_version"],
    }


# --- report -----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def pm(stat: tuple[float | None, float | None], digits: int = 3) -> str:
    mean, std = stat
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(args, data: Path, samples: list[Sample], results: list[CVResult], loto: list[LotoResult], speed: list[dict],
             scale: list[dict], peer: dict | None, speed_config: Config, notes: list[str]) -> str:
    n_anomaly = sum(s.label for s in samples)
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{' '.join(['python', 'benchmarks/bench.py', *map(shlex.quote, args.argv)])}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), device {args.device}.",
        "",
        f"Data: `{data.name}`, {len(samples)} images ({len(samples) - n_anomaly} normal, {n_anomaly} anomalous"
        + (f"; a stratified subset of {args.n_found}, seed 0)" if len(samples) < args.n_found else ")")
        + (f", {sum(1 for s in samples if s.mask)} with masks." if any(s.mask for s in samples) else ", no masks."),
    ]
    if results:
        lines += [
            "",
            "## Accuracy",
            "",
            f"Stratified {args.folds}-fold cross-validation (`splits.k_folds(samples, {args.folds}, seed=0)`). For each fold the "
            "other folds are cut by `splits.train_val_split(part, 0.2, seed=0)` into a fit part and a calibration part; "
            "`train.fit` fits and sets the threshold by the default rule, max balanced accuracy (patchcore and hybrid: on "
            "out-of-fold scores cross-fitted over both parts together; classifier: fitted on the first part, calibrated on the "
            "second), and `inference.evaluate` scores the held-out fold. "
            "Mean ± std over folds. Fit seconds = `train.fit` wall time per fold (image loading, features, coreset or training, calibration).",
            "",
            "| config | folds | image AUROC | F1 | precision | recall | accuracy | pixel AUROC | fit s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results:
            lines.append(
                f"| {r.config.name}{' (defaults)' if r.config == SHIPPED else ''} | {len(r.folds)} | {pm(r.stat('auroc'))} | {pm(r.stat('f1'))} | {pm(r.stat('precision'))} | {pm(r.stat('recall'))} "
                f"| {pm(r.stat('accuracy'))} | {pm(r.stat('pixel_auroc'))} | {pm(r.fit_seconds(), 1)} |"
            )
        kinds = sorted({k for r in results for k in r.defect_types()})
        if kinds:
            lines += ["", "Recall per defect type (mean over folds):", "", "| config | " + " | ".join(kinds) + " |", "| --- |" + " --- |" * len(kinds)]
            for r in results:
                lines.append(f"| {r.config.name} | " + " | ".join(fmt(r.defect_stat(k)[0], 2) for k in kinds) + " |")
        lines += ["", "Configs:", ""] + [f"- **{r.config.name}**: {r.config.method}, {r.config.describe()}" for r in results]
    if loto:
        kinds = [t.kind for t in max(loto, key=lambda r: len(r.types)).types]
        lines += [
            "",
            "## A defect type never seen: leave one type out",
            "",
            "For each defect type T: held out = every T defect plus one of "
            f"{len(kinds)} stratified folds of the normal images; the rest (other normals, every defect of the other types) is cut "
            "80/20 into fit and calibration parts exactly as in the CV. Nothing of type T is fitted or calibrated on. Recall of T "
            "at the calibrated threshold, AUROC of T against the held-out normals, false-positive rate on them.",
            "",
            "| config | " + " | ".join(f"{k} recall / AUROC" for k in kinds) + " | mean recall | mean AUROC | mean FPR |",
            "| --- |" + " --- |" * (len(kinds) + 3),
        ]
        for r in loto:
            by_kind = {t.kind: t for t in r.types}
            cells = [f"{fmt(by_kind[k].recall, 2)} / {fmt(by_kind[k].auroc, 3)}" if k in by_kind else "not run" for k in kinds]
            lines.append(f"| {r.config.name} | " + " | ".join(cells) + f" | {fmt(r.mean('recall'), 2)} | {fmt(r.mean('auroc'))} | {fmt(r.mean('false_positive_rate'), 3)} |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    if speed:
        lines += [
            "",
            "## Speed",
            "",
            f"Config: {speed_config.name} ({speed_config.describe()}). Each stage runs in a fresh process; peak RSS is that "
            "process's high-water mark (VmHWM; predict's image-decoding loader worker is a separate process, not counted).",
            "",
            "| what | result | peak RSS MiB |",
            "| --- | --- | --- |",
        ] + [f"| {row['what']} | {row['value']} | {row['rss']:.0f} |" for row in speed]
    if scale:
        lines += [
            "",
            "### Scale",
            "",
            "The data set's files cycled to N paths (copies, not new images). Fit: the memory bank keeps the coreset ratio of "
            "all patches, so it grows with N; the greedy coreset runs over parts of at most 524,288 patches, so its time per "
            "image levels off once the parts are full. Predict: the model fitted on the data's own good images. One run each.",
            "",
            "| what | seconds | ms per image | memory bank | peak RSS MiB |",
            "| --- | --- | --- | --- | --- |",
        ] + [f"| {r['what']} | {r['seconds']:.1f} | {r['ms_per_image']:.1f} | {r['bank_size']} | {r['rss']:.0f} |" for r in scale]
    if peer:
        ours_fit = next((r for r in speed if r["what"].startswith("PatchCore fit")), None)
        ours_predict = next((r for r in speed if r["what"].startswith("predict") and "as they are" in r["what"]), None)
        a, b = peer["runs"]
        lines += [
            "",
            "### Peer: anomalib's PatchCore",
            "",
            f"anomalib {peer['anomalib_version']} (`benchmarks/peer_anomalib.py`, its plain torch `PatchcoreModel`, random "
            f"weights, {speed_config.backbone} at {speed_config.image_size} px, layers at strides 8 and 16) on the same "
            f"{a['n_fit']} good images. Its greedy coreset ran at ratios {a['coreset_ratio']:g} and {b['coreset_ratio']:g} "
            f"(banks of {a['bank_size']} and {b['bank_size']}); its coreset time at {peer['coreset_ratio']:g} "
            f"(bank {peer['target_bank']}) is **extrapolated** along the straight line through those two runs "
            "(each greedy step costs the same).",
            "",
            "| what | anomalib | anomalycli | ratio |",
            "| --- | --- | --- | --- |",
            f"| features (decode + forward) on {a['n_fit']} images, s | {a['embed_s']:.1f} / {b['embed_s']:.1f} | | |",
            f"| coreset at {a['coreset_ratio']:g} / {b['coreset_ratio']:g}, s (measured) | {a['coreset_s']:.1f} / {b['coreset_s']:.1f} | | |",
            f"| fit at coreset {peer['coreset_ratio']:g}, s | {peer['fit_s_extrapolated']:.1f} (extrapolated) | "
            + (f"{ours_fit['seconds']:.1f} | {peer['fit_s_extrapolated'] / ours_fit['seconds']:.0f}x faster |" if ours_fit else "- | - |"),
            f"| predict from the files, images/s | {peer['predict_images_per_s']:.1f} | "
            + (f"{ours_predict['images_per_s']:.1f} | {ours_predict['images_per_s'] / peer['predict_images_per_s']:.1f}x |" if ours_predict else "- | - |"),
            f"| peak RSS MiB | {peer['peak_rss_mib']:.0f} | " + (f"{ours_fit['rss']:.0f} |  |" if ours_fit else "- | |"),
        ]
    return "\n".join(lines) + "\n"


def to_json(results: list[CVResult], loto: list[LotoResult], speed: list[dict], scale: list[dict], peer: dict | None) -> dict:
    return {
        "accuracy": [
            {
                "config": asdict(r.config),
                "summary": {key: r.stat(key) for key in METRICS} | {"fit_seconds": r.fit_seconds()},
                "per_defect_recall": {k: r.defect_stat(k) for k in r.defect_types()},
                "folds": [asdict(f) for f in r.folds],
            }
            for r in results
        ],
        "leave_one_type_out": [{"config": asdict(r.config), "types": [asdict(t) for t in r.types]} for r in loto],
        "speed": speed,
        "scale": scale,
        "peer": peer,
    }


# --- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    runtime.keep_memory_flat()  # as the anomaly command does
    if argv and argv[0] == "--_stage":
        stage_main(argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 folds, one config, tiny speed runs (under 3 minutes)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"labelled image folder (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report to write (default BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, default=None, help="also write every fold's numbers as JSON here")
    parser.add_argument("--folds", type=int, default=None, help="CV folds (default 5; 2 with --quick)")
    parser.add_argument("--max-images", type=int, default=None,
                        help=f"cross-validate a stratified subset of this many images (default all; {QUICK_MAX_IMAGES} with --quick)")
    parser.add_argument("--config", action="append", default=[], metavar="K=V,...",
                        help="run this config instead of the built-in list, e.g. method=patchcore,backbone=efficientnet_lite0,image_size=256,coreset_ratio=0.1,reweight=1; "
                             "keys left out take the method's shipped defaults (repeatable)")
    parser.add_argument("--classifier", choices=("auto", "on", "off"), default=None,
                        help="also cross-validate the classifier: auto = stop after fold 0 if it took over --classifier-budget (default auto; off with --quick)")
    parser.add_argument("--classifier-budget", type=float, default=240.0, help="seconds one classifier fold may take for --classifier auto")
    parser.add_argument("--levers", action="store_true", help="also cross-validate one patchcore lever at a time (about an hour more)")
    parser.add_argument("--loto", action="store_true", help="also hold out each defect type in turn (leave-one-type-out; always on with --quick)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed section (and scale and peer)")
    parser.add_argument("--no-scale", action="store_true", help="skip fit and predict on 1,000 and 5,000 images")
    parser.add_argument("--no-peer", action="store_true", help="skip anomalib's PatchCore")
    parser.add_argument("--peer-python", default=None,
                        help="Python of a virtual environment with anomalib (default $ANOMALIB_PYTHON, else ../peer-venv/bin/python)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the accuracy section")
    parser.add_argument("--device", default="cpu", help="device for fitting and scoring (default cpu)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.folds = args.folds or (2 if args.quick else 5)
    global STAGES_IN_PROCESS
    STAGES_IN_PROCESS = args.quick
    classifier_mode = args.classifier or ("off" if args.quick else "auto")
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    warnings.filterwarnings("ignore")

    data = args.data.resolve()
    samples = discover(data).samples
    args.n_found = len(samples)
    max_images = args.max_images if args.max_images is not None else (QUICK_MAX_IMAGES if args.quick else 0)
    if max_images and len(samples) > max_images:
        samples = subsample(samples, max_images)
    configs = [parse_config(c) for c in args.config] or (QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS + (LEVERS if args.levers else []))
    print(f"data {data}: {len(samples)} images; {args.folds} folds; {len(configs)} config(s)", flush=True)

    results: list[CVResult] = []
    loto: list[LotoResult] = []
    notes: list[str] = []
    speed: list[dict] = []
    scale: list[dict] = []
    peer = None
    speed_config = next((c for c in configs if c.method == "patchcore"), SPEED) if args.config else SPEED

    def save() -> None:
        """Write what is measured so far: a long run that stops early keeps its finished sections."""
        args.out.parent.mkdir(parents=True, exist_ok=True)
        io.write_text(args.out, markdown(args, data, samples, results, loto, speed, scale, peer, speed_config, notes))
        if args.json:
            io.write_text(args.json, json.dumps(to_json(results, loto, speed, scale, peer), indent=2, default=str))

    # With --config, the classifier runs only when asked for (--classifier on/auto).
    wanted = classifier_mode == "on" or (classifier_mode == "auto" and (args.classifier == "auto" or not args.config))
    if wanted and not any(c.method == "classifier" for c in configs):
        configs = configs + [CLASSIFIER]
    budget = args.classifier_budget if classifier_mode == "auto" else None
    if not args.no_accuracy:
        for config in configs:
            print(f"{config.name}", flush=True)
            result = run_cv(config, data, samples, args.folds, args.device, fold_budget=budget if config.method == "classifier" else None)
            results.append(result)
            save()
            if len(result.folds) < args.folds:
                notes.append(
                    f"{config.name}: {len(result.folds)} of {args.folds} folds only (fitting fold {result.folds[-1].fold} took "
                    f"{result.folds[-1].fit_seconds:.0f}s, over the {args.classifier_budget:.0f}s --classifier-budget; "
                    "--classifier on runs every fold)"
                )
    if (args.loto or args.quick) and any(s.label for s in samples):
        for config in configs:
            if config == SPEED and SHIPPED in configs and config != SHIPPED:
                continue  # one patchcore is enough to see what a never-seen defect does
            print(f"leave one type out: {config.name}", flush=True)
            result = run_loto(config, data, samples, args.device, type_budget=budget if config.method == "classifier" else None)
            loto.append(result)
            save()
    if not args.no_speed:
        print("speed", flush=True)
        speed = run_speed(data, speed_config, args.quick)
        save()
        if not args.no_scale:
            print("scale", flush=True)
            scale = run_scale(data, speed_config, args.quick)
            save()
        peer_python = args.peer_python or os.environ.get("ANOMALIB_PYTHON") or str(REPO.parent / "peer-venv" / "bin" / "python")
        if args.no_peer:
            pass
        elif not Path(peer_python).exists():
            notes.append(f"anomalib peer skipped: no Python at {peer_python} (README.md, Benchmarks, says how to make its environment)")
        else:
            print("peer: anomalib", flush=True)
            peer = run_peer(data, speed_config, peer_python, args.quick)
            if peer is None:
                notes.append(f"anomalib peer skipped: {peer_python} has no anomalib")

    save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
