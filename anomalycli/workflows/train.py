"""``anomaly train`` without the terminal: pick the data, fit a method, calibrate, save a run folder."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from anomalycli import backbones, drift, io, project, quantize
from anomalycli.data import Dataset, Sample, discover, load_all
from anomalycli.errors import UsageError, UserError
from anomalycli.inference import resolve_device
from anomalycli.methods import METHODS, AnomalyModel, classifier, hybrid, patchcore
from anomalycli.calibration import OperatingRule, calibrate
from anomalycli.splits import k_folds, train_val_split
from anomalycli.training import ClassifierSettings, fit_classifier

log = logging.getLogger("anomalycli")

MODEL_NAME = project.MODEL_NAME
CHECKPOINT_NAME = "checkpoint.pt"
METHOD_NAMES = tuple(METHODS)
AUTO = "auto"  # the default: hybrid with enough labelled defects (choose_method), else patchcore
# Methods whose calibration scores come from cross-fitting over every labelled image, not a validation split.
CROSS_FITTED = ("patchcore", "hybrid")
# Screw defects are a few pixels wide: patch features see them better at 320 px (Accuracy in
# `git show cf0a644:BENCHMARKS.md`);
# the classifier keeps the ImageNet size, which fine-tuning on a CPU can afford.
DEFAULT_IMAGE_SIZE = {"classifier": 224, "patchcore": 320, "hybrid": 320}
# --fast: the backbone and size patchcore and the hybrid had before the 320 px default, about 2.5x
# times faster to predict for a few points of AUROC less (Accuracy in `git show cf0a644:BENCHMARKS.md`).
FAST_BACKBONE, FAST_IMAGE_SIZE = "efficientnet_lite0", 224
PRECISIONS = ("auto", "int8", "fp32")


@dataclass
class TrainOptions:
    data: str
    method: str = AUTO
    backbone: str | None = None  # None: the method's default (backbones.DEFAULT_BACKBONE)
    weights: str = "imagenet"
    image_size: int | None = None  # None: the method's default (DEFAULT_IMAGE_SIZE)
    normal_class: str = "good"
    labels: str | None = None
    manifest: str | None = None
    val_ratio: float = 0.1
    seed: int = 0
    device: str = "auto"
    # The operating point: at most one of these; none gives the max balanced accuracy.
    target_recall: float | None = None
    max_fpr: float | None = None
    defect_rate: float | None = None
    # classifier
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-3
    weighted_loss: bool = False
    sampler: str = "shuffle"
    select: str = "auroc"
    patience: int = 10
    # patchcore
    coreset_ratio: float = 0.01
    coreset_sampler: str = "greedy"
    reweight: bool = False
    # patchcore and hybrid: cross-fitting folds for the calibration scores (and the hybrid's fusion)
    cv_folds: int = 5
    run_dir: str | None = None
    fast: bool = False  # patchcore and hybrid: FAST_BACKBONE at FAST_IMAGE_SIZE unless given
    precision: str = "auto"  # patchcore and hybrid: the backbone's, one of PRECISIONS (see _backbone)
    ray: str | None = None  # patchcore and hybrid: fit on this Ray cluster ("local", "auto" or an address)

    def validate(self) -> None:
        # First: the other checks rely on the method's defaults.
        if self.method not in METHOD_NAMES:
            raise UsageError(f"--method must be one of {', '.join(METHOD_NAMES)} or {AUTO} (got {self.method})")
        if self.fast and self.method in CROSS_FITTED:
            self.image_size = self.image_size or FAST_IMAGE_SIZE
            self.backbone = self.backbone or FAST_BACKBONE
        if self.method in DEFAULT_IMAGE_SIZE:
            self.image_size = DEFAULT_IMAGE_SIZE[self.method] if self.image_size is None else self.image_size
            self.backbone = self.backbone or backbones.DEFAULT_BACKBONE[self.method]
        checks = [
            (self.image_size >= 32, f"--image-size must be at least 32 pixels (got {self.image_size})"),
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more (got {self.weight_decay})"),
            (0 < self.val_ratio < 1, f"--val-ratio must be between 0 and 1 (got {self.val_ratio})"),
            (0 < self.coreset_ratio <= 1, f"--coreset-ratio must be in (0, 1] (got {self.coreset_ratio})"),
            (self.cv_folds >= 2, f"--cv-folds must be at least 2 (got {self.cv_folds})"),
            (self.patience >= 1, f"--patience must be at least 1 (got {self.patience})"),
            (self.sampler in ("shuffle", "balanced"), f"--sampler must be shuffle or balanced (got {self.sampler})"),
            (self.select in ("auroc", "f1", "loss"), f"--select must be auroc, f1 or loss (got {self.select})"),
            (self.device in ("auto", "cpu", "cuda", "mps"), f"--device must be auto, cpu, cuda or mps (got {self.device})"),
            (self.precision in PRECISIONS, f"--precision must be {', '.join(PRECISIONS)} (got {self.precision})"),
            (self.ray is None or self.method in CROSS_FITTED, "--ray fits patchcore and hybrid models; the classifier trains on one machine (drop --ray)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.ray is not None:
            from anomalycli import cluster

            cluster.check_address(self.ray)
        self.operating_rule()
        backbones.get(self.backbone)

    def operating_rule(self) -> OperatingRule:
        return operating_rule(self.target_recall, self.max_fpr, self.defect_rate)

    def classifier_settings(self) -> ClassifierSettings:
        names = {f.name for f in fields(ClassifierSettings)}
        return ClassifierSettings(**{k: v for k, v in asdict(self).items() if k in names})


def operating_rule(target_recall: float | None, max_fpr: float | None, defect_rate: float | None) -> OperatingRule:
    """The rule the options name: --target-recall, --max-fpr or --defect-rate (one at most), else balanced."""
    checks = [
        (target_recall is None or 0 < target_recall <= 1, f"--target-recall must be in (0, 1] (got {target_recall})"),
        (max_fpr is None or 0 <= max_fpr < 1, f"--max-fpr must be in [0, 1) (got {max_fpr})"),
        (defect_rate is None or 0 < defect_rate < 1, f"--defect-rate must be between 0 and 1 (got {defect_rate})"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    given = {"recall": target_recall, "fpr": max_fpr, "f1": defect_rate}
    chosen = {name: value for name, value in given.items() if value is not None}
    if len(chosen) > 1:
        raise UsageError("give one of --target-recall, --max-fpr and --defect-rate: each sets the threshold on its own")
    return OperatingRule(*next(iter(chosen.items()))) if chosen else OperatingRule()


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    model: AnomalyModel
    validation: str  # where validation data came from, in words
    n_fit: int  # images the model was fitted on
    n_val: int
    history: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def choose_method(samples: list[Sample], cv_folds: int) -> str:
    """What ``--method auto`` fits: the hybrid once every cross-fitting fold can hold a labelled
    defect to learn from, else patchcore, which needs none (BENCHMARKS.md, Separation)."""
    return "hybrid" if sum(s.label == 1 for s in samples) >= cv_folds else "patchcore"


def choose_validation(dataset: Dataset, val_ratio: float, seed: int) -> tuple[list[Sample], list[Sample], str]:
    """Train and validation samples, and a sentence saying where validation came from."""
    if dataset.in_split("val"):
        source = "the val split folder" if not dataset.layout.startswith("manifest") else "the manifest's split column"
        return dataset.in_split("train"), dataset.in_split("val"), source
    pool = dataset.in_split("train") or [s for s in dataset.samples if s.split is None]
    if not pool:
        raise UserError(f"{dataset.root} has no training images (no train split); add DATA/train/<class>/ folders")
    train, val = train_val_split(pool, val_ratio, seed)
    return train, val, f"a stratified {val_ratio:g} split of the training images made now (seed {seed})"


def prepare_run_dir(run_dir: str | None) -> Path:
    if run_dir is None:
        return io.new_run_dir(project.RUNS, project.RUN_PREFIX)
    path = Path(run_dir)
    if path.exists() and any(path.iterdir()):
        raise UserError(f"run folder {path} already holds a run; choose a new --run-dir or leave it out for runs/train-N")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_classes(train: list[Sample], val: list[Sample], method: str, normal_class: str) -> None:
    if not any(s.label == 0 for s in train):
        raise UserError(f"no {normal_class!r} (normal) images in the training data; pass --normal-class NAME if good parts are named otherwise")
    if method == "classifier" and not any(s.label == 1 for s in train):
        raise UserError("the classifier needs anomalous images in the training data, and there are none; use --method patchcore, which learns from good images only")
    if not val:
        raise UserError("no validation images; add a val split or lower --val-ratio's rounding by adding images")


def train(options: TrainOptions, resume: str | None = None, show_progress: bool = True) -> TrainResult:
    state = None
    if resume is not None:
        options, state, run_dir = load_resume(resume)
    dataset = discover(options.data, options.normal_class, options.labels, options.manifest)
    if options.method == AUTO:
        options.method = choose_method(dataset.samples, options.cv_folds)
    if resume is None:
        options.validate()
    log.info(f"data: {dataset.root} ({dataset.layout}), {len(dataset.samples)} images")
    train_samples, val_samples, source = choose_validation(dataset, options.val_ratio, options.seed)
    _check_classes(train_samples, val_samples, options.method, options.normal_class)
    if options.method in CROSS_FITTED:
        source = f"none held out: every image scored out of fold over {options.cv_folds} folds"
    else:
        log.info(f"validation: {len(val_samples)} images from {source}")
    if resume is None:
        run_dir = prepare_run_dir(options.run_dir)
        io.write_text(run_dir / "args.json", json.dumps(asdict(options), indent=2))
    model, history, notes = fit(options, train_samples, val_samples, run_dir, state, show_progress)
    model_path = model.save(run_dir / MODEL_NAME)
    everything = train_samples + val_samples
    # PatchCore's bank holds the good images only.
    n_fit = {"patchcore": sum(s.label == 0 for s in everything), "hybrid": len(everything)}.get(options.method, len(train_samples))
    return TrainResult(run_dir, model_path, model, source, n_fit, len(val_samples), history, notes)


def fit(
    options: TrainOptions,
    train_samples: list[Sample],
    val_samples: list[Sample],
    run_dir: Path | None = None,
    state: dict | None = None,
    show_progress: bool = True,
) -> tuple[AnomalyModel, list[dict], list[str]]:
    """Fit ``options.method`` and calibrate it; the benchmark calls this per fold.

    Patchcore and the hybrid fit and cross-fit on both lists together (nothing is held out);
    the classifier fits on ``train_samples`` and calibrates on ``val_samples``. Returns the model, the classifier's per-epoch history (empty for patchcore) and warnings.
    With a ``run_dir`` the classifier saves a checkpoint there after every epoch.
    """
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    class_names = (options.normal_class, next((s.class_name for s in train_samples + val_samples if s.label == 1), "anomaly"))
    config = {
        "backbone": options.backbone,
        "image_size": options.image_size,
        "normal_class": options.normal_class,
        "class_names": list(class_names),
        # What review offers as number keys; it changes no score.
        "defect_types": sorted({s.defect_type for s in train_samples + val_samples if s.label == 1 and s.defect_type}),
    }
    if options.method == "classifier":
        return _train_classifier(options, config, train_samples, val_samples, device, run_dir, state, show_progress)
    if options.method == "hybrid":
        return _train_hybrid(options, config, train_samples + val_samples, device, show_progress)
    return _train_patchcore(options, config, train_samples + val_samples, device, show_progress)


def _load_split(samples: list[Sample], image_size: int, what: str, notes: list[str]):
    images, kept, errors = load_all(samples, image_size)
    for error in errors:
        log.warning(f"skipped unreadable {what} image: {error}")
    if errors:
        notes.append(f"{len(errors)} unreadable {what} image(s) skipped")
    return images, torch.tensor([s.label for s in kept]), kept


def _calibrate(model: AnomalyModel, labels: torch.Tensor, scores: torch.Tensor, rule: OperatingRule, source: str, notes: list[str], select=None) -> None:
    model.calibration, warning = calibrate(labels.numpy(), scores.numpy(), rule, source, select)
    if warning:
        log.warning(warning)
        notes.append(warning)


def _drift_reference(stats: np.ndarray, labels: torch.Tensor) -> dict:
    """The drift check's reference (``drift.reference``) from the fitted images' ``drift.image_stats``."""
    labels = labels.numpy()
    return drift.reference(stats[labels == 0], stats[labels == 1])


def _scores(model: AnomalyModel, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model.score(images[i : i + batch_size], with_maps=False)[0].cpu() for i in range(0, len(images), batch_size)])


def _train_classifier(options, config, train_samples, val_samples, device, run_dir: Path | None, state, show_progress):
    notes: list[str] = []
    train_images, train_labels, _ = _load_split(train_samples, options.image_size, "training", notes)
    val_images, val_labels, _ = _load_split(val_samples, options.image_size, "validation", notes)
    net = classifier.new_net(options.backbone, "none" if state else options.weights)
    settings = options.classifier_settings()

    def save_epoch(checkpoint: dict, row: dict) -> None:
        if run_dir is not None:
            with io.atomic_path(run_dir / CHECKPOINT_NAME) as tmp:
                torch.save(checkpoint, tmp)
            write_history(run_dir / "history.csv", checkpoint["history"])
        log.info(
            f"epoch {row['epoch']}/{settings.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} auroc {row['val_auroc']:.3f} f1 {row['val_f1']:.3f}  "
            f"{row['seconds']:.1f}s"
        )

    checkpoint = fit_classifier(
        net.model, settings, train_images, train_labels, val_images, val_labels, device,
        tuple(config["class_names"]), state, save_epoch, show_progress,
    )
    log.info(f"best epoch {checkpoint['best_epoch']} by validation {settings.select}")
    config = {**config, "best_epoch": checkpoint["best_epoch"], "select": settings.select, "drift": _drift_reference(drift.image_stats(train_images), train_labels)}
    model = AnomalyModel("classifier", net.to(device), config, calibration=None)
    _calibrate(model, val_labels, _scores(model, val_images, options.batch_size), options.operating_rule(), "validation", notes)
    return model, checkpoint["history"], notes


def _backbone(options, samples: list[Sample], device, deep: bool, notes: list[str]):
    """The frozen extractor a fit takes its features from, and what the model's config records of its precision.

    ``auto`` is int8 on a CPU (``quantize.py``: about twice as fast, there and at predict), unless
    its features disagree with fp32 ones; on a GPU the fp32 backbone is the fast one.
    """
    extractor = backbones.FeatureExtractor(options.backbone, backbones.build(options.backbone, options.weights)).to(device).eval()
    if options.precision == "fp32":
        return extractor, {"precision": "fp32", "precision_note": "trained with --precision fp32"}
    if options.precision == "auto" and device.type != "cpu":
        return extractor, {"precision": "fp32", "precision_note": f"trained on {device.type}, where the fp32 backbone is the fast one"}
    good = [s for s in samples if s.label == 0][: quantize.CALIBRATION_IMAGES]
    images, _, _ = load_all(good, options.image_size)
    int8, cosine = quantize.quantize(extractor.cpu(), images, deep)
    if cosine < quantize.MIN_COSINE:
        note = (f"{quantize.DISAGREED} on {len(images)} training images (median cosine "
                f"{cosine:.3f}, below {quantize.MIN_COSINE}); fitted with the fp32 backbone")
        log.warning(note)
        notes.append(note)
        return extractor.to(device), {"precision": "fp32", "precision_note": note}
    log.info(f"int8 backbone: median cosine {cosine:.3f} to fp32 features on {len(images)} training images")
    return int8, {"precision": "int8", **quantize.config_of(int8)}


def _embed(options, extractor, samples: list[Sample], show_progress, notes: list[str], with_descriptors: bool = False):
    """The patch features of every readable sample from ``extractor`` (streamed: pixels are
    never all held) and, ``with_descriptors``, their pooled descriptors: a ``patchcore.LocalFeatures``,
    or on Ray a ``cluster.RayFeatures`` whose patch features stay on the cluster. Then their
    labels, the samples kept and their cross-fitting folds.

    The samples are put in fold order first, so that each fold's images are consecutive: a fold's
    coreset parts and its out-of-fold scores then read consecutive features, on one machine or many.
    """
    all_folds = _cross_fit_folds(options, samples)
    order = np.argsort(all_folds, kind="stable")
    samples, all_folds = [samples[i] for i in order], all_folds[order]
    paths = [s.path for s in samples]
    if options.ray is not None:
        from anomalycli import cluster

        features, readable, errors = cluster.RayFeatures.embed(cluster.connect(options.ray), extractor, paths, options.image_size, show_progress, with_descriptors)
    else:
        embedded, descriptors, stats, readable, errors = patchcore.embed_images(extractor, paths, options.image_size, show_progress=show_progress, with_descriptors=with_descriptors)
        features = patchcore.LocalFeatures(extractor, embedded, descriptors, stats)
    for error in errors:
        log.warning(f"skipped unreadable training image: {error}")
    if errors:
        notes.append(f"{len(errors)} unreadable training image(s) skipped")
    kept, folds = [samples[i] for i in readable], all_folds[readable]
    labels = torch.tensor([s.label for s in kept])
    lacking = sorted(set(all_folds.tolist()) - set(folds[labels.numpy() == 0].tolist()))
    if lacking:
        raise UserError(f"cross-fitting fold {lacking[0]} has no readable good image; remove the unreadable files or lower --cv-folds")
    return features, labels, kept, folds


def _cross_fit_folds(options, samples: list[Sample]) -> np.ndarray:
    n_good = sum(s.label == 0 for s in samples)
    if n_good < 2:
        raise UserError(f"only {n_good} good image(s); cross-fitting needs at least 2 (add good images)")
    # A few defects are spread over fewer folds; fewer good images than folds lowers the fold count.
    return np.array([s.fold for s in k_folds(samples, min(options.cv_folds, n_good), options.seed, small_classes=True)])


def _train_patchcore(options, config, samples, device, show_progress):
    # Cross-fitting replaces a validation split: every good image is in the bank of the final
    # model and scored, out of fold, by the banks of the other folds; defects are scored alike.
    notes: list[str] = []
    extractor, precision = _backbone(options, samples, device, False, notes)
    features, labels, kept, folds = _embed(options, extractor, samples, show_progress, notes)
    coresets = features.fold_coresets(labels, folds, options.coreset_ratio, options.coreset_sampler, options.seed, show_progress)
    out_of_fold = features.out_of_fold_scores(folds, coresets, options.reweight, show_progress)
    net = patchcore.union_of(extractor, coresets, options.reweight)
    log.info(f"memory bank: {net.bank.shape[0]} patches of {net.bank.shape[1]} features from {int((labels == 0).sum())} good images")
    config = {
        **config, "bank_size": int(net.bank.shape[0]), "bank_parts": net.part_sizes, "score_blur": net.score_blur, "reweight": options.reweight,
        "coreset_ratio": options.coreset_ratio, "cv_folds": options.cv_folds, "batch_norm_folded": extractor.folded,
        "drift": _drift_reference(features.stats, labels), **precision,
    }
    model = AnomalyModel("patchcore", net, config, calibration=None)
    _calibrate(model, labels, out_of_fold, options.operating_rule(), "out-of-fold", notes)
    return model, [], notes


def _train_hybrid(options, config, samples, device, show_progress):
    notes: list[str] = []
    if not any(s.label == 1 for s in samples):
        raise UserError("the hybrid method needs labelled anomalous images, and there are none; use --method patchcore")
    extractor, precision = _backbone(options, samples, device, True, notes)
    features, labels, kept, folds = _embed(options, extractor, samples, show_progress, notes, with_descriptors=True)
    if not (labels == 1).any():
        raise UserError("none of the labelled anomalous images could be read, and the hybrid method needs them; use --method patchcore")
    coresets = features.fold_coresets(labels, folds, options.coreset_ratio, options.coreset_sampler, options.seed, show_progress)
    one_class = features.out_of_fold_scores(folds, coresets, reweight=False, show_progress=show_progress)
    net, out_of_fold, supervised = hybrid.fit(extractor, coresets, one_class, features.descriptors, labels, folds)
    log.info(f"hybrid: one-class weight {float(net.alpha):.2f}, memory bank {net.patchcore.bank.shape[0]} patches, "
             f"cross-fitted over {options.cv_folds} folds of {len(kept)} images")
    config = {
        **config, "bank_size": int(net.patchcore.bank.shape[0]), "bank_parts": net.patchcore.part_sizes, "score_blur": net.patchcore.score_blur,
        "head": "global", "descriptor_size": int(net.head.weight.shape[0]),
        "fusion": [*net.stats.tolist(), float(net.alpha)],
        "coreset_ratio": options.coreset_ratio, "cv_folds": options.cv_folds, "batch_norm_folded": extractor.folded,
        "drift": _drift_reference(features.stats, labels), **precision,
    }
    model = AnomalyModel("hybrid", net, config, calibration=None)
    rule = options.operating_rule()
    _calibrate(model, labels, out_of_fold, rule, "out-of-fold", notes, hybrid.selection(one_class, supervised, labels, rule))
    return model, [], notes


def write_history(path: Path, history: list[dict]) -> None:
    with io.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def load_resume(run_dir: str | Path) -> tuple[TrainOptions, dict, Path]:
    run_dir = Path(run_dir)
    args_path, checkpoint_path = run_dir / "args.json", run_dir / CHECKPOINT_NAME
    if not args_path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no args.json); pass the folder train created")
    if (run_dir / MODEL_NAME).exists():
        raise UserError(f"{run_dir} already finished ({MODEL_NAME} is there); nothing to resume")
    if not checkpoint_path.is_file():
        raise UserError(f"{run_dir} has no {CHECKPOINT_NAME} (stopped before the first epoch ended); start a new run")
    try:
        options = TrainOptions(**json.loads(args_path.read_text()))
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{run_dir} holds a damaged run ({type(exc).__name__}); start a new run") from None
    if options.method != "classifier":
        raise UserError("only classifier runs can be resumed; patchcore fits in minutes, so start it again")
    # A run killed outright (SIGKILL, power) may leave a half-written temporary file beside the
    # complete ones that atomic writes keep; it is never read, so it goes.
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    # history.csv is written just after the checkpoint, so a kill between the two leaves it an
    # epoch behind (or absent); the checkpoint's own copy is the one that counts.
    if state["history"]:
        write_history(run_dir / "history.csv", state["history"])
    log.info(f"resuming {run_dir} after epoch {state['epoch']}")
    return options, state, run_dir
