"""What ``anomaly train`` is asked to do (``TrainOptions``, checked before any work), the choices
made from the data (method, validation split, operating rule), and its run folder: where it is
made, its history, and how a run resumes."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from anomalycli import files, project
from anomalycli.data.framing import FRAMINGS, LETTERBOX, SQUASH
from anomalycli.data.layouts import Dataset, Sample
from anomalycli.data.levels import AUTO as AUTO_LEVELS
from anomalycli.data.levels import LEVELS
from anomalycli.data.orientation import ORIENTATIONS
from anomalycli.data.splits import train_val_split
from anomalycli.detection import backbones, ignore
from anomalycli.detection.defaults import DEFAULT_IMAGE_SIZE, FAST_BACKBONE, FAST_IMAGE_SIZE, MAX_MS_PER_IMAGE
from anomalycli.detection.methods import METHODS, AnomalyModel
from anomalycli.detection.methods.classifier_training import ClassifierSettings
from anomalycli.detection.methods.pixel_head import HEAD_KINDS
from anomalycli.errors import UsageError, UserError
from anomalycli.judgement.thresholds import OperatingRule

log = logging.getLogger("anomalycli")

MODEL_NAME = project.MODEL_NAME
CHECKPOINT_NAME = "checkpoint.pt"
METHOD_NAMES = tuple(METHODS)
AUTO = "auto"  # the default: hybrid with enough labelled defects (choose_method), else patchcore
# Methods whose calibration scores come from cross-fitting over every labelled image, not a validation split.
CROSS_FITTED = ("patchcore", "hybrid")
PRECISIONS = ("auto", "int8", "fp32")


@dataclass
class TrainOptions:
    data: str
    method: str = AUTO
    backbone: str | None = None  # None: the method's default (backbones.DEFAULT_BACKBONE)
    weights: str = "imagenet"
    image_size: int | None = None  # None: the classifier's default; patchcore and hybrid choose from the data (input_size.py)
    max_ms_per_image: float = MAX_MS_PER_IMAGE  # patchcore and hybrid: the budget of scoring time an image a chosen size keeps within
    normal_class: str | None = "good"  # None: as discover finds it (train sets the class it found)
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
    coreset_ratio: float | None = None  # None: detection/defaults.bank_ratio's rule (every patch of a few goods, 1 % of many)
    coreset_sampler: str = "greedy"
    reweight: bool = False
    orientation: str = "auto"  # patchcore: auto (measured from the goods), free (the bank learns them turned) or fixed (data/orientation.py)
    # patchcore and hybrid: cross-fitting folds for the calibration scores (and the hybrid's fusion)
    cv_folds: int = 5
    run_dir: str | None = None
    fast: bool = False  # patchcore and hybrid: FAST_BACKBONE at FAST_IMAGE_SIZE unless given
    precision: str = "auto"  # patchcore and hybrid: the backbone's, one of PRECISIONS (see _backbone)
    ray: str | None = None  # patchcore and hybrid: fit on this Ray cluster ("local", "auto" or an address)
    ignore: list[str] | None = None  # patchcore and hybrid: don't-care masks (white = ignore), in the images' frame
    framing: str = SQUASH  # patchcore and hybrid: squash or letterbox (data/framing.py)
    levels: str = AUTO_LEVELS  # patchcore and hybrid: auto (measured from the goods), stretch or as-is (data/levels.py)
    pixel_head: bool = True  # hybrid: learn where defects lie from their masks, where 5 or more have one (methods/pixel_head.py)
    pixel_head_kinds: tuple[int, ...] = HEAD_KINDS  # hybrid: the pixel heads fitted (by hidden units, 0: linear); train keeps the best

    def validate(self) -> None:
        # First: the other checks rely on the method's defaults.
        if self.method not in METHOD_NAMES:
            raise UsageError(f"--method must be one of {', '.join(METHOD_NAMES)} or {AUTO} (got {self.method})")
        if self.fast and self.method in CROSS_FITTED:
            self.image_size = self.image_size or FAST_IMAGE_SIZE
            self.backbone = self.backbone or FAST_BACKBONE
        if self.method in DEFAULT_IMAGE_SIZE:
            if self.image_size is None and self.method not in CROSS_FITTED:
                self.image_size = DEFAULT_IMAGE_SIZE[self.method]
            self.backbone = self.backbone or backbones.DEFAULT_BACKBONE[self.method]
        checks = [
            (self.image_size is None or self.image_size >= 32, f"--image-size must be at least 32 pixels (got {self.image_size})"),
            (self.max_ms_per_image > 0, f"--max-ms-per-image must be positive (got {self.max_ms_per_image:g})"),
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more (got {self.weight_decay})"),
            (0 < self.val_ratio < 1, f"--val-ratio must be between 0 and 1 (got {self.val_ratio})"),
            (self.coreset_ratio is None or 0 < self.coreset_ratio <= 1, f"--coreset-ratio must be in (0, 1] (got {self.coreset_ratio})"),
            (self.orientation in ORIENTATIONS, f"--orientation must be {', '.join(ORIENTATIONS)} (got {self.orientation})"),
            (
                self.orientation == "auto" or self.method == "patchcore",
                "--orientation is patchcore's (a few good images, no defects); drop it for the hybrid and the classifier",
            ),
            (self.cv_folds >= 2, f"--cv-folds must be at least 2 (got {self.cv_folds})"),
            (self.patience >= 1, f"--patience must be at least 1 (got {self.patience})"),
            (self.sampler in ("shuffle", "balanced"), f"--sampler must be shuffle or balanced (got {self.sampler})"),
            (self.select in ("auroc", "f1", "loss"), f"--select must be auroc, f1 or loss (got {self.select})"),
            (self.device in ("auto", "cpu", "cuda", "mps"), f"--device must be auto, cpu, cuda or mps (got {self.device})"),
            (self.precision in PRECISIONS, f"--precision must be {', '.join(PRECISIONS)} (got {self.precision})"),
            (self.ray is None or self.method in CROSS_FITTED, "--ray fits patchcore and hybrid models; the classifier trains on one machine (drop --ray)"),
            (not self.ignore or self.method in CROSS_FITTED, "--ignore is for patchcore and hybrid models, whose maps it masks; the classifier has none"),
            (self.framing in FRAMINGS, f"--framing must be {' or '.join(FRAMINGS)} (got {self.framing})"),
            (self.levels in LEVELS, f"--levels must be {', '.join(LEVELS)} (got {self.levels})"),
            (
                self.levels == AUTO_LEVELS or self.method in CROSS_FITTED,
                "--levels is for patchcore and hybrid models; the classifier learns from the images as they are",
            ),
            (self.framing == SQUASH or self.method in CROSS_FITTED, "--framing letterbox is for patchcore and hybrid models; the classifier squashes"),
            (
                self.framing != LETTERBOX or not self.ignore,
                "--ignore needs one frame for every image, and letterboxing frames each shape its own way: drop --framing letterbox",
            ),
            (all(Path(p).is_file() for p in self.ignore or []), f"--ignore: no such file {next((p for p in self.ignore or [] if not Path(p).is_file()), '')}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.ignore:  # a mask that cannot be used is said before a run folder is made
            ignore.read_masks([Path(p) for p in self.ignore], self.image_size or DEFAULT_IMAGE_SIZE[self.method])
        if self.ray is not None:
            from anomalycli.deploy import ray_cluster

            ray_cluster.check_address(self.ray)
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
    pool = dataset.fitting_pool()
    if not pool:
        raise UserError(f"{dataset.root} has no training images (no train split); add DATA/train/<class>/ folders")
    train, val = train_val_split(pool, val_ratio, seed)
    return train, val, f"a stratified {val_ratio:g} split of the training images made now (seed {seed})"


def prepare_run_dir(run_dir: str | None) -> Path:
    if run_dir is None:
        return files.new_run_dir(project.RUNS, project.RUN_PREFIX)
    path = Path(run_dir)
    if path.exists() and any(path.iterdir()):
        raise UserError(f"run folder {path} already holds a run; choose a new --run-dir or leave it out for runs/train-N")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_history(path: Path, history: list[dict]) -> None:
    with files.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def load_resume(run_dir: str | Path) -> tuple[TrainOptions, dict, Path]:
    run_dir = Path(run_dir)
    args_path, checkpoint_path = run_dir / project.ARGS_NAME, run_dir / CHECKPOINT_NAME
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
