#!/usr/bin/env python
"""The project's benchmark: cross-validated accuracy and speed on a labelled image folder.

    python benchmarks/bench.py                      # full run on ../shared/data/screws -> BENCHMARKS.md
    python benchmarks/bench.py --quick              # 2 folds, one config, tiny speed runs (< 3 min)
    python benchmarks/bench.py --quick --data DIR --out /tmp/bench.md   # any class-folder data set

Accuracy protocol (the same for every config): stratified k-fold CV over all images
(``splits.k_folds(samples, k, seed=0)``). For fold k the other folds are the training part;
``splits.train_val_split(part, 0.2, seed=0)`` cuts it into a fit part and a calibration part,
``train.fit`` fits on the first and sets the threshold on the second, and
``inference.evaluate`` scores fold k. So every fold's threshold comes from its own training
part only. Reported: mean and std over folds of image AUROC, F1, precision, recall, accuracy,
pixel AUROC (methods with maps, data with masks), per-defect-type recall and fit seconds.

Speed: raw backbone forward throughput, PatchCore fit wall time on all good images, predict
throughput (``inference.iter_scores``) at the data's own resolution and on 1024x1024 PNG copies,
and peak RSS; each speed stage runs in a fresh child process so its peak RSS is its own.

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

from anomalycli import backbones, inference, splits, train
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

# The full run (about an hour on 2 CPU cores): the shipped defaults first (they also set the speed
# section), then one lever at a time from lite0/224px/0.01, then the best combination, then hybrid.
_LEVERS = [
    patchcore(),
    patchcore(image_size=256),
    patchcore(image_size=320),
    patchcore(coreset_ratio=0.05),
    patchcore(coreset_ratio=0.1),
    patchcore(reweight=True),
    patchcore("efficientnet_lite1", 320),
    patchcore("efficientnet_lite2", 320),
    patchcore("efficientnet_lite1", 320, coreset_ratio=0.05),
    make("hybrid"),  # hybrid at lite1/320px takes over 7 minutes a fold here; run it with --config if wanted
]
FULL_CONFIGS = [SHIPPED] + [c for c in _LEVERS if c.name != SHIPPED.name]
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
            f"fit {fit_seconds:.1f}s eval {eval_seconds:.1f}s" + (f"  ({'; '.join(notes)})" if notes else "")
        )
        del model
        if fold_budget is not None and fit_seconds > fold_budget:
            log(f"  stopping after fold {fold}: fitting took {fit_seconds:.0f}s, over the {fold_budget:.0f}s budget")
            break
    return CVResult(config, folds)


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


def _good_samples(data: Path, limit: int | None) -> list[Sample]:
    good = [s for s in discover(data).samples if s.label == 0]
    return good[:limit] if limit else good


def _fit_all_good(args, good: list[Sample]):
    """PatchCore on all good images, calibrated on a few of them (no anomalies needed)."""
    config = patchcore(args.backbone, args.size, args.coreset_ratio, args.reweight)
    calib = good[: max(2, len(good) // 10)]
    model, _, _ = train.fit(config.options(args.data, "cpu"), good, calib, show_progress=False)
    return model


def stage_fit(args) -> dict:
    good = _good_samples(Path(args.data), args.limit)
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
    paths = [s.path for s in discover(args.data).samples][: args.n_predict]
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
        start = time.perf_counter()
        n = sum(1 for _ in inference.iter_scores(model, paths, batch_size=args.batch, show_progress=False))
        seconds = time.perf_counter() - start
    return {"images_per_s": n / seconds, "n_images": n, "seconds": seconds}


STAGES = {"backbone": stage_backbone, "fit": stage_fit, "predict": stage_predict}


def run_stage(stage: str, **settings) -> dict:
    """One speed stage in a fresh interpreter, so its peak RSS is its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--_stage", stage]
    for key, value in settings.items():
        if value is None:
            continue
        command += [f"--_{key}", str(value)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"speed stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_main(argv: list[str]) -> None:
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
    parser.add_argument("--_save", dest="save", default=None)
    parser.add_argument("--_model", dest="model", default=None)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    result = STAGES[args.stage](args)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def run_speed(data: Path, config: Config, quick: bool, log=print) -> list[dict]:
    """Rows of the speed table."""
    rows = []
    common = dict(data=data, backbone=config.backbone, size=config.image_size, coreset_ratio=config.coreset_ratio, reweight=config.reweight)
    batch = 8 if quick else 32
    bb = run_stage("backbone", backbone=config.backbone, size=224, batch=batch, warmup=1 if quick else 3, repeats=2 if quick else 10)
    rows.append({"what": f"backbone forward ({config.backbone}, 224px, batch {batch}, median of {bb['repeats']})", "value": f"{bb['images_per_s']:.1f} images/s", "rss": bb["peak_rss_mib"]})
    log(f"  {rows[-1]['what']}: {rows[-1]['value']}")
    limit = 16 if quick else None
    n_predict = 16 if quick else None
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        model_path = Path(tmp) / "model.safetensors"
        fit = run_stage("fit", limit=limit, save=model_path, **common)
        rows.append({"what": f"PatchCore fit on {fit['n_images']} good images ({config.describe()}; load, features, coreset, calibration)", "value": f"{fit['seconds']:.1f} s (bank {fit['bank_size']} patches)", "rss": fit["peak_rss_mib"]})
        log(f"  {rows[-1]['what']}: {rows[-1]['value']}")
        for upscale in (None, 1024):
            pred = run_stage("predict", model=model_path, data=data, n_predict=n_predict, upscale=upscale, batch=batch)
            source = f"{upscale}x{upscale} PNG copies" if upscale else "files as they are"
            rows.append({"what": f"predict ({config.image_size}px model, iter_scores, batch {batch}, default loader workers) on {pred['n_images']} {source}", "value": f"{pred['images_per_s']:.1f} images/s", "rss": pred["peak_rss_mib"]})
            log(f"  {rows[-1]['what']}: {rows[-1]['value']}")
    return rows


# --- report -----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def pm(stat: tuple[float | None, float | None], digits: int = 3) -> str:
    mean, std = stat
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(args, data: Path, samples: list[Sample], results: list[CVResult], speed: list[dict], notes: list[str]) -> str:
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
        "",
        "## Accuracy",
        "",
        f"Stratified {args.folds}-fold cross-validation (`splits.k_folds(samples, {args.folds}, seed=0)`). For each fold the "
        "other folds are cut by `splits.train_val_split(part, 0.2, seed=0)` into a fit part and a calibration part; "
        "`train.fit` fits on the first and sets the threshold on the second by its own rule (PatchCore: max F1 weighted to the "
        "training data's anomaly share, over the calibration part plus the fit part's anomalies; hybrid: cross-fitted over "
        "both parts), and `inference.evaluate` scores the held-out fold. Mean ± std over folds. Fit seconds = `train.fit` "
        "wall time per fold (image loading, features, coreset, calibration).",
        "",
        "| config | image AUROC | F1 | precision | recall | accuracy | pixel AUROC | fit s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.config.name}{' (defaults)' if r.config == SHIPPED else ''} | {pm(r.stat('auroc'))} | {pm(r.stat('f1'))} | {pm(r.stat('precision'))} | {pm(r.stat('recall'))} "
            f"| {pm(r.stat('accuracy'))} | {pm(r.stat('pixel_auroc'))} | {pm(r.fit_seconds(), 1)} |"
        )
    kinds = sorted({k for r in results for k in r.defect_types()})
    if kinds:
        lines += ["", "Recall per defect type (mean over folds):", "", "| config | " + " | ".join(kinds) + " |", "| --- |" + " --- |" * len(kinds)]
        for r in results:
            lines.append(f"| {r.config.name} | " + " | ".join(fmt(r.defect_stat(k)[0], 2) for k in kinds) + " |")
    lines += ["", "Configs:", ""] + [f"- **{r.config.name}**: {r.config.method}, {r.config.describe()}" for r in results]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    if speed:
        lines += [
            "",
            "## Speed",
            "",
            "Each stage runs in a fresh process; peak RSS is that process's high-water mark (VmHWM; the one image-decoding loader worker of predict is a separate process, not counted).",
            "",
            "| what | result | peak RSS MiB |",
            "| --- | --- | --- |",
        ] + [f"| {row['what']} | {row['value']} | {row['rss']:.0f} |" for row in speed]
    return "\n".join(lines) + "\n"


def to_json(results: list[CVResult], speed: list[dict]) -> dict:
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
        "speed": speed,
    }


# --- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
    parser.add_argument("--no-speed", action="store_true", help="skip the speed section")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the accuracy section")
    parser.add_argument("--device", default="cpu", help="device for fitting and scoring (default cpu)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.folds = args.folds or (2 if args.quick else 5)
    classifier_mode = args.classifier or ("off" if args.quick else "auto")
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    warnings.filterwarnings("ignore")

    data = args.data.resolve()
    samples = discover(data).samples
    args.n_found = len(samples)
    max_images = args.max_images if args.max_images is not None else (QUICK_MAX_IMAGES if args.quick else 0)
    if max_images and len(samples) > max_images:
        samples = subsample(samples, max_images)
    configs = [parse_config(c) for c in args.config] or (QUICK_CONFIGS if args.quick else FULL_CONFIGS)
    print(f"data {data}: {len(samples)} images; {args.folds} folds; {len(configs)} config(s)", flush=True)

    results: list[CVResult] = []
    notes: list[str] = []
    if not args.no_accuracy:
        for config in configs:
            print(f"{config.name}", flush=True)
            results.append(run_cv(config, data, samples, args.folds, args.device))
        # With --config, the classifier runs only when asked for (--classifier on/auto).
        wanted = classifier_mode == "on" or (classifier_mode == "auto" and (args.classifier == "auto" or not args.config))
        if wanted and not any(c.method == "classifier" for c in configs):
            print(CLASSIFIER.name, flush=True)
            budget = args.classifier_budget if classifier_mode == "auto" else None
            result = run_cv(CLASSIFIER, data, samples, args.folds, args.device, fold_budget=budget)
            results.append(result)
            if len(result.folds) < args.folds:
                notes.append(
                    f"{CLASSIFIER.name}: {len(result.folds)} of {args.folds} folds only (fitting fold {result.folds[-1].fold} took "
                    f"{result.folds[-1].fit_seconds:.0f}s, over the {args.classifier_budget:.0f}s --classifier-budget; "
                    "--classifier on runs every fold)"
                )
    speed: list[dict] = []
    if not args.no_speed:
        print("speed", flush=True)
        speed_config = next((c for c in configs if c.method == "patchcore"), SHIPPED)
        speed = run_speed(data, speed_config, args.quick)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(args, data, samples, results, speed, notes))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, speed), indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
