"""``anomaly train`` without the terminal: pick the data, fit a method, calibrate, save a run folder."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from anomalycli import files, project
from anomalycli.data import encoding, trained_on
from anomalycli.data.bit_depth import BitDepth, bit_depth, windows_of
from anomalycli.data.confounds import taken_differently
from anomalycli.data.framing import SQUASH
from anomalycli.data.layouts import Sample, discover
from anomalycli.data.levels import goods_sample, levels, stretched
from anomalycli.data.orientation import readable_images
from anomalycli.data.resolution import FEATURE_STRIDE
from anomalycli.data.splits import k_folds
from anomalycli.data.tensors import load_all
from anomalycli.deploy import export
from anomalycli.detection import backbones, ignore, int8_backbone
from anomalycli.detection.defaults import LEAVE_ONE_OUT_GOODS, bank_ratio
from anomalycli.detection.device import resolve_device
from anomalycli.detection.methods import AnomalyModel, classifier, hybrid_fitting, patchcore_fitting
from anomalycli.detection.methods.classifier_training import fit_classifier
from anomalycli.errors import Interrupted, UserError
from anomalycli.judgement import drift
from anomalycli.judgement.thresholds import OperatingRule, calibrate, require_defects_for
from anomalycli.onnx_runtime import DISAGREED
from anomalycli.workflows import input_size, train_pixels
from anomalycli.workflows.train_options import (  # noqa: F401 (the options are train's too)
    AUTO,
    CHECKPOINT_NAME,
    CROSS_FITTED,
    METHOD_NAMES,
    MODEL_NAME,
    PRECISIONS,
    TrainOptions,
    TrainResult,
    choose_method,
    choose_validation,
    load_resume,
    operating_rule,
    prepare_run_dir,
    write_history,
)
from anomalycli.workflows.turned_goods import turned_goods

log = logging.getLogger("anomalycli")


def _check_classes(train: list[Sample], val: list[Sample], method: str, normal_class: str) -> None:
    if not any(s.label == 0 for s in train):
        raise UserError(f"no {normal_class!r} (normal) images in the training data; pass --normal-class NAME if good parts are named otherwise")
    if method == "classifier" and not any(s.label == 1 for s in train):
        raise UserError(
            "the classifier needs anomalous images in the training data, and there are none; use --method patchcore, which learns from good images only"
        )
    if not val:
        raise UserError("no validation images; add a val split or lower --val-ratio's rounding by adding images")


def train(options: TrainOptions, resume: str | None = None, show_progress: bool = True) -> TrainResult:
    state = None
    if resume is not None:
        options, state, run_dir = load_resume(resume)
    dataset = discover(options.data, options.normal_class, options.labels, options.manifest)
    options.normal_class = dataset.normal_class  # as given, or as discover found it (OK/NG folders)
    fitted_on = dataset.fitting_pool()  # checked before it is split: a split of too few images has its own error
    if not any(s.label == 0 for s in fitted_on):
        classes = ", ".join(sorted({s.class_name for s in fitted_on}))
        raise UserError(
            f"no image of the good parts' class {dataset.normal_class!r} to train on (classes: {classes}); "
            "pass --normal-class NAME to say which class holds the good parts"
        )
    if options.method == AUTO:  # on the defects it can learn from: a test split's are never fitted on
        options.method = choose_method(fitted_on, options.cv_folds)
    if resume is None:
        options.validate()
    n_images = len(dataset.samples)
    log.info(f"data: {dataset.root} ({dataset.layout}), {n_images} image{'' if n_images == 1 else 's'}")
    if options.method in CROSS_FITTED:
        _check_enough_goods(sum(s.label == 0 for s in fitted_on))
    require_defects_for(options.operating_rule(), sum(s.label == 1 for s in fitted_on), sum(s.label == 0 for s in fitted_on))
    if differently := taken_differently([s.path for s in fitted_on if s.label == 0], [s.path for s in fitted_on if s.label == 1]):
        log.warning(differently)
    train_samples, val_samples, source = choose_validation(dataset, options.val_ratio, options.seed)
    _check_classes(train_samples, val_samples, options.method, options.normal_class)
    if options.method in CROSS_FITTED:
        source = f"none held out: every image scored out of fold over {_fold_count(options, train_samples + val_samples)} folds"
    else:
        log.info(f"validation: {len(val_samples)} images from {source}")
    if resume is None:
        run_dir = prepare_run_dir(options.run_dir)
        project.write_args(run_dir, asdict(options))
    try:
        model, history, notes = fit(options, train_samples, val_samples, run_dir, state, show_progress)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_line(run_dir)) from None
    everything = train_samples + val_samples
    paths = [s.path for s in everything]
    model = replace(model, config={**trained_on.recorded(model.config, paths), "encoding": encoding.summary(paths)})
    model_path = export.save_model(model, run_dir / MODEL_NAME)
    # PatchCore's bank holds the good images only.
    n_fit = {"patchcore": sum(s.label == 0 for s in everything), "hybrid": len(everything)}.get(options.method, len(train_samples))
    return TrainResult(run_dir, model_path, model, source, n_fit, len(val_samples), history, notes)


def _interrupted_line(run_dir: Path) -> str:
    """What a fit stopped by Ctrl-C leaves: a classifier's checkpoint after its first epoch; else
    (patchcore and the hybrid fit in one go) no model and nothing to resume from."""
    if (run_dir / CHECKPOINT_NAME).is_file():
        return f"interrupted; the last finished epoch is kept in {run_dir / CHECKPOINT_NAME}: continue with anomaly train --resume {run_dir}"
    return f"interrupted; {run_dir} holds no model and nothing to resume from; start the fit again"


def fit(
    options: TrainOptions,
    train_samples: list[Sample],
    val_samples: list[Sample],
    run_dir: Path | None = None,
    state: dict | None = None,
    show_progress: bool = True,
    depth: BitDepth | None = None,
) -> tuple[AnomalyModel, list[dict], list[str]]:
    """Fit ``options.method`` and calibrate it; the benchmark calls this per fold.

    Patchcore and the hybrid fit and cross-fit on both lists together (nothing is held out);
    the classifier fits on ``train_samples`` and calibrates on ``val_samples``. Returns the model, the classifier's per-epoch history (empty for patchcore) and warnings.
    With a ``run_dir`` the classifier saves a checkpoint there after every epoch. ``depth``: the
    goods' ``bit_depth``, where measured already (each input size tried fits again).
    """
    if depth is None:
        depth = bit_depth([s.path for s in train_samples + val_samples if s.label == 0])
        if depth.reason:
            log.info(f"bit depth: {depth.reason}")
        if depth.warning:
            log.warning(depth.warning)
    if options.method in CROSS_FITTED and options.image_size is None:
        return input_size.fit_best_size(
            options, train_samples + val_samples, lambda sized: fit(sized, train_samples, val_samples, run_dir, state, show_progress, depth)
        )
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
    if depth.reason:  # the goods hold 16-bit or float files
        config.update(depth.windows.to_config())
    windows = windows_of(config)
    if options.ignore:
        config["ignore"] = ignore.to_config(ignore.read_masks([Path(p) for p in options.ignore], options.image_size))
    if options.method in CROSS_FITTED:
        config["framing"] = options.framing
        if options.framing != SQUASH:
            log.info(f"framing: {options.framing} (each image's shape kept, the square's rest mirrored)")
        goods = goods_sample([s.path for s in train_samples + val_samples if s.label == 0])
        config["levels"] = levels(readable_images(goods, windows=windows), options.levels).to_dict()
        log.info(f"levels: {config['levels']['kind']}: {config['levels']['reason']}")
    if options.method == "classifier":
        return _train_classifier(options, config, train_samples, val_samples, device, run_dir, state, show_progress)
    if options.method == "hybrid":
        return _train_hybrid(options, config, train_samples + val_samples, device, show_progress)
    return _train_patchcore(options, config, train_samples + val_samples, device, show_progress)


def _load_split(samples: list[Sample], image_size: int, what: str, notes: list[str], config: dict):
    images, kept, errors = load_all(samples, image_size, windows=windows_of(config))
    for error in errors:
        log.warning(f"skipped unreadable {what} image: {error}")
    if errors:
        notes.append(f"{len(errors)} unreadable {what} image(s) skipped")
    return images, torch.tensor([s.label for s in kept]), kept


def _calibrate(
    model: AnomalyModel, labels: torch.Tensor, scores: torch.Tensor, rule: OperatingRule, source: str, notes: list[str], select=None, areas=None
) -> None:
    model.calibration, warning = calibrate(labels.numpy(), scores.numpy(), rule, source, select, areas)
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
    train_images, train_labels, _ = _load_split(train_samples, options.image_size, "training", notes, config)
    val_images, val_labels, _ = _load_split(val_samples, options.image_size, "validation", notes, config)
    net = classifier.new_net(options.backbone, "none" if state else options.weights)
    settings = options.classifier_settings()

    def save_epoch(checkpoint: dict, row: dict) -> None:
        if run_dir is not None:
            with files.atomic_path(run_dir / CHECKPOINT_NAME) as tmp:
                torch.save(checkpoint, tmp)
            write_history(run_dir / "history.csv", checkpoint["history"])
        log.info(
            f"epoch {row['epoch']}/{settings.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} auroc {row['val_auroc']:.3f} f1 {row['val_f1']:.3f}  "
            f"{row['seconds']:.1f}s"
        )

    checkpoint = fit_classifier(
        net.model,
        settings,
        train_images,
        train_labels,
        val_images,
        val_labels,
        device,
        tuple(config["class_names"]),
        state,
        save_epoch,
        show_progress,
    )
    log.info(f"best epoch {checkpoint['best_epoch']} by validation {settings.select}")
    config = {
        **config,
        "best_epoch": checkpoint["best_epoch"],
        "select": settings.select,
        "drift": _drift_reference(drift.image_stats(train_images), train_labels),
    }
    model = AnomalyModel("classifier", net.to(device), config, calibration=None)
    _calibrate(model, val_labels, _scores(model, val_images, options.batch_size), options.operating_rule(), "validation", notes)
    return model, checkpoint["history"], notes


def _backbone(options, samples: list[Sample], device, deep: bool, notes: list[str], config: dict):
    """The frozen extractor a fit takes its features from, and what the model's config records of its precision.

    ``auto`` is int8 on a CPU (``int8_backbone.py``: about twice as fast, there and at predict), unless
    its features disagree with fp32 ones; on a GPU the fp32 backbone is the fast one.
    """
    extractor = backbones.FeatureExtractor(options.backbone, backbones.build(options.backbone, options.weights)).to(device).eval()
    if options.precision == "fp32":
        return extractor, {"precision": "fp32", "precision_note": "trained with --precision fp32"}
    if options.precision == "auto" and device.type != "cpu":
        return extractor, {"precision": "fp32", "precision_note": f"trained on {device.type}, where the fp32 backbone is the fast one"}
    good = [s for s in samples if s.label == 0][: int8_backbone.CALIBRATION_IMAGES]
    images, _, _ = load_all(good, options.image_size, config["framing"], windows_of(config))
    int8, cosine = int8_backbone.quantize(extractor.cpu(), images, deep, stretch=stretched(config))
    if cosine < int8_backbone.MIN_COSINE:
        note = f"{DISAGREED} on {len(images)} training images (median cosine {cosine:.3f}, below {int8_backbone.MIN_COSINE}); fitted with the fp32 backbone"
        log.warning(note)
        notes.append(note)
        return extractor.to(device), {"precision": "fp32", "precision_note": note}
    log.info(f"int8 backbone: median cosine {cosine:.3f} to fp32 features on {len(images)} training images")
    return int8, {"precision": "int8", **int8_backbone.config_of(int8)}


def _embed(
    options, extractor, samples: list[Sample], show_progress, notes: list[str], config: dict, with_descriptors: bool = False, copy_of: dict | None = None
):
    """The patch features of every readable sample from ``extractor`` (streamed: pixels are
    never all held) and, ``with_descriptors``, their pooled descriptors: a ``patchcore_fitting.LocalFeatures``,
    or on Ray a ``ray_fit.RayFeatures`` whose patch features stay on the cluster. Then their
    labels, the samples kept and their cross-fitting folds.

    The samples are put in fold order first, so that each fold's images are consecutive: a fold's
    coreset parts and its out-of-fold scores then read consecutive features, on one machine or many.
    ``copy_of``: turned copies of goods (``turned_goods``), each in its original's fold.
    """
    all_folds = _cross_fit_folds(options, samples, copy_of)
    order = np.argsort(all_folds, kind="stable")
    samples, all_folds = [samples[i] for i in order], all_folds[order]
    paths = [s.path for s in samples]
    keep, framing, stretch, windows = ignore.keep_of(config), config["framing"], stretched(config), windows_of(config)
    if options.ray is not None:
        from anomalycli.deploy import ray_cluster, ray_fit

        features, readable, errors = ray_fit.RayFeatures.embed(
            ray_cluster.connect(options.ray), extractor, paths, options.image_size, show_progress, with_descriptors, keep, framing, stretch, windows
        )
    else:
        embedded, descriptors, stats, readable, errors = patchcore_fitting.embed_images(
            extractor,
            paths,
            options.image_size,
            show_progress=show_progress,
            with_descriptors=with_descriptors,
            keep=keep,
            framing=framing,
            stretch=stretch,
            windows=windows,
        )
        features = patchcore_fitting.LocalFeatures(extractor, embedded, descriptors, stats)
    for error in errors:
        log.warning(f"skipped unreadable training image: {error}")
    if errors:
        notes.append(f"{len(errors)} unreadable training image(s) skipped")
    kept, folds = [samples[i] for i in readable], all_folds[readable]
    labels = torch.tensor([s.label for s in kept])
    # A fold left with no image at all (its only good unreadable: leave-one-out) is no fold; one left
    # with defects and no good has no bank part of its own to be the complement of.
    lacking = sorted(set(folds.tolist()) - set(folds[labels.numpy() == 0].tolist()))
    if lacking:
        raise UserError(f"cross-fitting fold {lacking[0]} has no readable good image; remove the unreadable files or lower --cv-folds")
    return features, labels, kept, folds


def _check_enough_goods(n_good: int) -> None:
    if n_good < 2:
        raise UserError(
            f"only {n_good} good image{'' if n_good == 1 else 's'}: the threshold is set on each good's score from a bank "
            "fitted on the others, so it needs at least 2 (add good images; a new photo of a good part, placed again, is one)"
        )


def _fold_count(options, originals: list[Sample]) -> int:
    n_good = sum(s.label == 0 for s in originals)
    _check_enough_goods(n_good)
    if options.method == "patchcore" and n_good <= LEAVE_ONE_OUT_GOODS and not any(s.label == 1 for s in originals):
        return n_good  # see LEAVE_ONE_OUT_GOODS
    # A few defects are spread over fewer folds; fewer good images than folds lowers the fold count.
    return min(options.cv_folds, n_good)


def _cross_fit_folds(options, samples: list[Sample], copy_of: dict | None = None) -> np.ndarray:
    copy_of = copy_of or {}
    originals = [s for s in samples if s.path not in copy_of]
    folded = k_folds(originals, _fold_count(options, originals), options.seed, small_classes=True)
    fold_of = {}
    for sample in folded:
        fold_of.setdefault(sample.path, sample.fold)
    return np.array([fold_of[copy_of.get(s.path, s.path)] for s in samples])


def _train_patchcore(options, config, samples, device, show_progress):
    # Cross-fitting replaces a validation split: every good image is in the bank of the final
    # model and scored, out of fold, by the banks of the other folds; defects are scored alike.
    notes: list[str] = []
    extractor, precision = _backbone(options, samples, device, False, notes, config)
    with turned_goods(samples, options.orientation, options.image_size, bool(options.ignore), windows_of(config)) as turned:
        features, labels, kept, folds = _embed(options, extractor, turned.samples, show_progress, notes, config, copy_of=turned.copy_of)
        n_good = sum(s.label == 0 for s in samples)
        ratio = bank_ratio(int((labels == 0).sum()) * _patches_per_image(options), n_good, options.coreset_ratio)
        coresets = features.fold_coresets(labels, folds, ratio, options.coreset_sampler, options.seed, show_progress)
        # The copies taught the bank; what the threshold and the pixel threshold know is the originals,
        # so only they are scored (16 goods learnt at 24 turns: 16 images scored out of fold, not 384).
        original = np.array([s.path not in turned.copy_of for s in kept])
        out_of_fold = features.out_of_fold(folds, coresets, options.reweight, with_grids=True, show_progress=show_progress, images=np.flatnonzero(original))
    labels, kept = labels[torch.from_numpy(original)], [s for s, o in zip(kept, original) if o]
    net = patchcore_fitting.union_of(extractor, coresets, options.reweight)
    log.info(
        f"memory bank: {net.bank.shape[0]} patches of {net.bank.shape[1]} features from {int((labels == 0).sum())} good images ({ratio:.1%} of their patches)"
    )
    config = {
        **config,
        "bank_size": int(net.bank.shape[0]),
        "bank_parts": net.part_sizes,
        "score_blur": net.score_blur,
        "map_blur": net.map_blur,
        "reweight": options.reweight,
        "coreset_ratio": ratio,
        "coreset_ratio_given": options.coreset_ratio,  # None: the bank rule chose, and adapt applies it again
        "cv_folds": options.cv_folds,
        "batch_norm_folded": extractor.folded,
        "drift": _drift_reference(features.stats[original], labels),
        **turned.config(),
        **precision,
    }
    pixel, areas = train_pixels.pixel_threshold_of(out_of_fold, labels, kept, options.image_size, net.map_blur, config["framing"])
    model = AnomalyModel("patchcore", net, {**config, **pixel}, calibration=None)
    _calibrate(model, labels, out_of_fold.scores, options.operating_rule(), "out-of-fold", notes, areas=areas)
    return model, [], notes


def _patches_per_image(options) -> int:
    return (options.image_size // FEATURE_STRIDE) ** 2


def _train_hybrid(options, config, samples, device, show_progress):
    notes: list[str] = []
    if not any(s.label == 1 for s in samples):
        raise UserError("the hybrid method needs labelled anomalous images, and there are none; use --method patchcore")
    extractor, precision = _backbone(options, samples, device, True, notes, config)
    features, labels, kept, folds = _embed(options, extractor, samples, show_progress, notes, config, with_descriptors=True)
    if not (labels == 1).any():
        raise UserError("none of the labelled anomalous images could be read, and the hybrid method needs them; use --method patchcore")
    n_good = int((labels == 0).sum())
    ratio = bank_ratio(n_good * _patches_per_image(options), n_good, options.coreset_ratio)
    coresets = features.fold_coresets(labels, folds, ratio, options.coreset_sampler, options.seed, show_progress)
    one_class_fold = features.out_of_fold(folds, coresets, reweight=False, with_grids=True, show_progress=show_progress)
    one_class = one_class_fold.scores
    net, out_of_fold, supervised = hybrid_fitting.fit(extractor, coresets, one_class, features.descriptors, labels, folds)
    net.pixel_head, pixel_head_settings, pixel, areas = train_pixels.pixel_head_and_threshold(
        features, one_class_fold, labels, kept, folds, options, config["framing"], net.patchcore.map_blur
    )
    log.info(
        f"hybrid: one-class weight {float(net.alpha):.2f}, memory bank {net.patchcore.bank.shape[0]} patches, "
        f"cross-fitted over {len(np.unique(folds))} folds of {len(kept)} images"
    )
    config = {
        **config,
        "bank_size": int(net.patchcore.bank.shape[0]),
        "bank_parts": net.patchcore.part_sizes,
        "score_blur": net.patchcore.score_blur,
        "map_blur": net.patchcore.map_blur,
        "head": "global",
        "pixel_head": pixel_head_settings,
        "descriptor_size": int(net.head.weight.shape[0]),
        "fusion": [*net.stats.tolist(), float(net.alpha)],
        "coreset_ratio": ratio,
        "coreset_ratio_given": options.coreset_ratio,  # None: the bank rule chose, and adapt applies it again
        "cv_folds": options.cv_folds,
        "batch_norm_folded": extractor.folded,
        "drift": _drift_reference(features.stats, labels),
        **precision,
    }
    model = AnomalyModel("hybrid", net, {**config, **pixel}, calibration=None)
    rule = options.operating_rule()
    _calibrate(model, labels, out_of_fold, rule, "out-of-fold", notes, hybrid_fitting.selection(one_class, supervised, labels, rule), areas)
    return model, [], notes
