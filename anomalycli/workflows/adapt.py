"""``anomaly adapt`` without the terminal: teach a trained model a changed line from a few of its
good images, without refitting.

When the line changes (lighting, focus, camera, material) good parts score higher and the
threshold chosen at training flags far more of them than announced. Refitting on the new images
does not fix it (the threshold still rests on mostly old images), nor does recalibrating on a
handful of new goods (a threshold above all ten of them, and half the defects missed). Adapting:

1. **The bank learns the new goods.** PatchCore's bank is a union of per-fold coresets, and
   coresets compose: the new good images are dealt into the same folds, and each fold's coreset of
   their patches joins that fold's part of the bank. The share kept is the bank rule's for all
   the goods the model now knows (``detection/defaults.bank_ratio``; a share given to train
   stays), the old parts thinned to it where it fell, and where the model learnt its goods turned
   the new ones are learnt turned too: a new product's first few goods' model grows as a fit on
   all its goods would (BENCHMARKS.md, "A new product from a few goods"). Nothing else is
   refitted (backbone, the hybrid's head and fusion). A denser coreset of the new goods
   (10 %) lowered their scores more but the defects' too, below the stored defect scores the
   threshold is chosen against: on screws it missed one or two more of 10 defects at most shifts
   (BENCHMARKS.md, "The changed line", and Levers).
2. **The new goods are scored out of fold**, each by the bank without its own fold's part, exactly
   as training scored its images; they never meet their own patches.
3. **The threshold is re-chosen for the new line.** A handful of new goods says where the good
   parts now score, not the shape of their tail: the training goods' out-of-fold scores are moved
   to the new goods' median (after adaptation) and widened to their spread where that is wider
   (``moved``), and pooled with the new goods;
   against them stand the stored defect scores and any new labelled defects, scored by the adapted
   model. The operating rule (balanced accuracy by default) then picks the threshold; a model of
   goods alone (a new product's first few) keeps the goods-only rule over all of its goods, so
   adapting it with more goods of the same line grows it toward the full-data model.
4. **What the new point means**, with intervals, cross-validated as at training; the false-alarm
   interval also spans the uncertainty of the new goods' scores, bootstrapped over them.
5. **Defects among the goods?** The bank would learn them as good, and the stored defect scores
   cannot show it (the file keeps no training images to score again). Where the model flags most
   of the new goods although their light, contrast and sharpness are the training goods', a
   warning says so (``Adapted.suspect``).

The input model file is only read; the result is a new model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from anomalycli.data import encoding, trained_on
from anomalycli.data.bit_depth import saturated, windows_of
from anomalycli.data.framing import framing_of
from anomalycli.data.layouts import Sample
from anomalycli.data.levels import stretched
from anomalycli.data.orientation import FIXED, Orientation, turns
from anomalycli.deploy.regions import pixel_threshold_of
from anomalycli.detection import ignore, int8_backbone, region_maps
from anomalycli.detection.defaults import CORESET_RATIO, bank_ratio
from anomalycli.detection.methods import AnomalyModel, patchcore_fitting
from anomalycli.detection.methods.hybrid import GlobalHead, Hybrid
from anomalycli.detection.methods.hybrid_fitting import scores_and_grids
from anomalycli.detection.methods.patchcore import PatchCore
from anomalycli.detection.methods.patchcore_fitting import build_bank, embed_images
from anomalycli.errors import UserError
from anomalycli.judgement import drift, pixel_threshold
from anomalycli.judgement.thresholds import OperatingRule, calibrate
from anomalycli.workflows.turned_goods import goods_turned, learnt_views

MIN_NEW_GOODS = 5
# Good images of a changed line that the model mostly flags are expected (that is why one adapts);
# mostly flagged while they look like the training goods, they may be defects in the wrong folder.
SUSPECT_FLAGGED_SHARE = 0.5
BOOTSTRAP = 1000


@dataclass
class Adapted:
    model: AnomalyModel
    n_good: int  # new good images used
    n_defect: int  # new labelled defects used
    shift: float  # median raw-score shift of the new goods over the training goods, after adaptation
    flagged_before: float  # share of the new goods the input model flagged
    suspect: bool  # mostly flagged, yet like the training goods' light and focus: defects in the good images?
    folds: np.ndarray = field(repr=False)  # each new good's fold (its own part of the bank)
    out_of_fold: np.ndarray = field(repr=False)  # the new goods' out-of-fold scores
    warnings: list[str] = field(default_factory=list)


def _one_class(model: AnomalyModel) -> PatchCore:
    net = model.net
    return net.patchcore if isinstance(net, Hybrid) else net


def check_adaptable(model: AnomalyModel) -> None:
    if model.method not in ("patchcore", "hybrid"):
        raise UserError(f"adapt teaches a memory bank new good parts; a {model.method} model has none (train with --method patchcore or hybrid)")
    if not _one_class(model).part_sizes or (model.method == "hybrid" and not isinstance(model.net.head, GlobalHead)):
        raise UserError("this model file predates the cross-fitted bank and head that adapt extends; train it again with this anomalycli")
    if not model.calibration.scores:
        raise UserError("this model file keeps no calibration scores to set the new threshold against; train it again with this anomalycli")
    int8_backbone.require_training_features(model.net, "the new good parts would not match its bank")


@torch.no_grad()
def adapt(model: AnomalyModel, samples: list[Sample], rule: OperatingRule = OperatingRule(), seed: int = 0, show_progress: bool = False) -> Adapted:
    """A new model that knows ``samples``' good images (and, where labelled, defects) of a changed line."""
    check_adaptable(model)
    # Images the model was trained on are not the new line's: their scores would pull its threshold down.
    samples, left_out = trained_on.not_trained_on(model.config, samples)
    n_new_goods = sum(s.label == 0 for s in samples)
    if n_new_goods < MIN_NEW_GOODS:
        already = f"; {left_out} more were images it was trained on" if left_out else ""
        raise UserError(f"adapt needs at least {MIN_NEW_GOODS} good images from the line (got {n_new_goods}{already}); 10 to 20 is better")
    net = _one_class(model)
    hybrid, windows = model.method == "hybrid", windows_of(model.config)

    def embedded(paths: list, progress: bool):
        return embed_images(
            net.extractor,
            paths,
            model.config["image_size"],
            show_progress=progress,
            with_descriptors=hybrid,
            keep=ignore.keep_of(model.config),
            framing=framing_of(model.config),
            stretch=stretched(model.config),
            windows=windows,
        )

    features, descriptors, stats, readable, errors = embedded([s.path for s in samples], show_progress)
    warnings = [f"skipped unreadable image: {e}" for e in errors]
    if left_out:
        warnings.append(f"left out {left_out} images the model was trained on: they show it nothing of the new line")
    if too_bright := saturated([s.path for s in samples], windows):
        warnings.append(
            f"{len(too_bright)} of the new images go beyond the {windows.described()} the model reads its goods on (first: {too_bright[0]}): "
            "their brightest or darkest pixels saturate, and a defect there cannot show; train again on goods of the new line for its range"
        )
    labels = np.array([samples[i].label for i in readable], dtype=int)
    goods, defects = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    if len(goods) < MIN_NEW_GOODS:
        raise UserError(f"only {len(goods)} of the good images could be read; adapt needs at least {MIN_NEW_GOODS}")

    def scored_by(net, index: np.ndarray, with_grids: bool = False) -> patchcore_fitting.Scores:
        if hybrid:
            return scores_and_grids(net, features[index], descriptors[index], with_grids)
        return patchcore_fitting.scores_and_grids(net, features[index], with_grids)

    before = scored_by(model.net, goods).scores
    flagged_before = float((before >= model.calibration.threshold).float().mean())
    # A bank taught defects passes them, and the stored defect scores the threshold stands on cannot
    # show it. A part or camera that moved looks so too, so this is a warning, not a refusal
    # (BENCHMARKS.md, "The changed line": defects passed as goods, and each shift's goods).
    suspect = flagged_before >= SUSPECT_FLAGGED_SHARE and bool(drift.like_training_goods(model, stats[goods]))
    if suspect:
        warnings.append(
            f"the model flags {flagged_before:.0%} of these good images, yet they are as bright, contrasted and sharp as its training goods: "
            "if the part or camera moved, adapting is right; if some are defective parts, the adapted model passes such defects (check them, adapt again without them)"
        )

    # 1. Deal the new goods into the bank's folds; each fold's coreset joins its part, their turned
    # copies with them where the model learnt its goods turned, at the share of patches the bank
    # rule gives all the goods it has now (a few goods' model then grows as a fit on them all would).
    parts = list(torch.split(net.bank.cpu(), net.part_sizes))
    folds = np.empty(len(goods), dtype=int)
    folds[np.random.default_rng(seed).permutation(len(goods))] = np.arange(len(goods)) % len(parts)
    growth = _bank_growth(model, len(goods), features.shape[1])
    ratio = growth.ratio
    if ratio < growth.old_ratio:
        parts = [build_bank(part, ratio / growth.old_ratio, seed=seed) for part in parts]
    good_paths = [samples[readable[i]].path for i in goods]
    with goods_turned([samples[readable[i]] for i in goods], growth.orientation, growth.turns, model.config["image_size"], windows) as turned:
        copies = [s.path for s in turned.samples[len(goods) :]]
        copy_features, _, _, copies_read, _ = embedded(copies, False) if copies else (features[:0], None, None, [], [])
    copy_fold = np.array([folds[good_paths.index(turned.copy_of[copies[i]])] for i in copies_read], dtype=int)
    channels = features.shape[-1]
    for f in np.unique(folds):
        patches = torch.cat([features[goods[folds == f]], copy_features[copy_fold == f]]).reshape(-1, channels)
        parts[f] = torch.cat([parts[f], build_bank(patches, ratio, seed=seed)])

    # 2. Each new good scored out of fold: by the bank without its own fold's part.
    with_maps = pixel_threshold_of(model) is not None
    out_of_fold = patchcore_fitting.Scores.gathered(
        len(goods),
        [
            (np.flatnonzero(folds == f), scored_by(model.net.with_bank(torch.cat([p for i, p in enumerate(parts) if i != f])), goods[folds == f], with_maps))
            for f in np.unique(folds)
        ],
    )
    adapted_net = model.net.with_bank(torch.cat(parts), [len(p) for p in parts])
    new_defects = scored_by(adapted_net, defects, with_maps) if len(defects) else patchcore_fitting.Scores(torch.empty(0), None)
    config = dict(model.config)
    areas = None
    if with_maps:
        paths = [samples[i].path for i in readable]
        config["pixel_threshold"], areas = _regions_of_new_line(model, out_of_fold, new_defects, [paths[i] for i in goods], [paths[i] for i in defects])

    # 3. The threshold for the new line.
    stored = model.calibration
    old_scores, old_labels = np.asarray(stored.scores, dtype=float), np.asarray(stored.labels, dtype=int)
    old_goods, old_defects = old_scores[old_labels == 0], old_scores[old_labels == 1]
    new_goods = out_of_fold.scores.numpy().astype(float)
    shift = float(np.median(new_goods) - np.median(old_goods))
    good_scores = np.concatenate([moved(old_goods, new_goods), new_goods])
    defect_scores = np.concatenate([old_defects, new_defects.scores.numpy()])
    scores = np.concatenate([good_scores, defect_scores])
    pooled_labels = np.r_[np.zeros(len(good_scores), int), np.ones(len(defect_scores), int)]
    source = (
        f"adapted: {len(old_goods)} training goods moved by the new goods' median shift ({shift:+.3g}), "
        f"{len(new_goods)} new goods out of fold, {len(old_defects)} training and {len(defects)} new defects"
    )
    if areas is not None and len(stored.areas) == len(stored.scores):
        # Each image's largest region, in the pooled order: the training's stored ones, then the new line's.
        old_areas = np.asarray(stored.areas, dtype=float)
        areas = np.concatenate([old_areas[old_labels == 0], areas[0], old_areas[old_labels == 1], areas[1]])
    else:
        areas = None  # a file from before the size rule keeps no areas, and has no rule to keep
    min_area = stored.min_area_px if areas is not None else 0.0
    calibration, warning = calibrate(pooled_labels, scores, rule, source, areas=areas, min_area_px=min_area)
    if warning:
        warnings.append(warning)
    calibration.expected["false_alarm_rate_ci"] = false_alarm_interval(calibration.expected, old_goods, new_goods, calibration.threshold, seed)

    config = {
        **config,
        "coreset_ratio": ratio,
        **({"orientation": {**model.config["orientation"], "turns": growth.turns, "views": growth.views}} if "orientation" in model.config else {}),
        "bank_size": int(sum(len(p) for p in parts)),
        "bank_parts": [len(p) for p in parts],
        "adapted": [*model.config.get("adapted", []), {"new_good": int(len(goods)), "new_defect": int(len(defects)), "shift": shift}],
    }
    config = trained_on.added(config, [samples[i].path for i in readable])
    if "encoding" in model.config:
        config["encoding"] = encoding.added(model.config["encoding"], good_paths)
    if "drift" in model.config:
        config["drift"] = drift.adapted_reference(model.config["drift"], stats[goods])
    else:
        config["drift"] = drift.reference(stats[goods], stats[defects])
    new_model = replace(model, net=adapted_net.eval(), config=config, calibration=calibration)
    return Adapted(new_model, len(goods), len(defects), shift, flagged_before, suspect, folds, new_goods, warnings)


@dataclass
class BankGrowth:
    """How the bank learns more goods (``_bank_growth``)."""

    orientation: Orientation  # the model's, kept
    turns: int  # the orientations each new good is learnt at
    views: int  # the good images (goods and copies) the bank will have learnt
    old_ratio: float  # the share of patches the bank kept
    ratio: float  # the share it keeps now


def _bank_growth(model: AnomalyModel, n_new_goods: int, patches_per_image: int) -> BankGrowth:
    """How the bank learns ``n_new_goods`` more: the model's orientation and the turns each new good
    is learnt at, the share of patches its bank kept, and the share it keeps now (the bank rule
    over all its goods, where train chose by the rule; a share the user gave stays)."""
    stored = model.config.get("orientation", {"kind": FIXED, "mirrored": False, "spread_degrees": None, "reason": "", "turns": 1})
    found = Orientation(stored["kind"], stored["mirrored"], stored["spread_degrees"], stored["reason"])
    n_old_goods = int((np.asarray(model.calibration.labels) == 0).sum())
    count = turns(n_old_goods + n_new_goods, found.kind)
    # Counted, not recomputed from the turns: goods adapted in before may have been learnt at other turns.
    views = learnt_views(stored, n_old_goods) + (2 if found.mirrored else 1) * n_new_goods * count
    old_ratio = model.config.get("coreset_ratio", CORESET_RATIO)
    # A file from before the rule was kept keeps its share.
    ratio = bank_ratio(patches_per_image * views, n_old_goods + n_new_goods, model.config.get("coreset_ratio_given", old_ratio))
    return BankGrowth(found, count, views, old_ratio, ratio)


def _regions_of_new_line(model: AnomalyModel, goods: patchcore_fitting.Scores, defects: patchcore_fitting.Scores, good_paths: list, defect_paths: list):
    """The pixel threshold for the new line, and the largest region areas of its goods and defects
    there (for the size rule, beside the training images' stored areas).

    The threshold moves with the new goods' out-of-fold maps, as the image threshold moves with
    their scores: by the shift of the level that ``pixel_threshold.GOOD_LEVEL`` of their pixels
    reach over the training goods' level. Their patches are in the bank, so on a line whose goods
    look as before again the shift is small; where the line stays noisier, the threshold follows,
    and the rule's text says by how much."""
    pixel = dict(model.config["pixel_threshold"])
    size, blur, framing = int(model.config["image_size"]), _one_class(model).map_blur, framing_of(model.config)
    sampled, good_peaks = region_maps.sampled_and_peaks(goods, good_paths, size, blur, framing)
    shift = float(np.quantile(sampled, pixel_threshold.GOOD_LEVEL)) - pixel["good_level"] if "good_level" in pixel else 0.0
    level = pixel["value"] + shift
    pixel.update(
        value=level,
        good_level=pixel.get("good_level", level) + shift,
        goods_value=pixel.get("goods_value", pixel["value"]) + shift,
        rule=f"{pixel['rule']}; adapted: moved {shift:+.3g} with the {len(good_paths)} new goods' out-of-fold maps, "
        f"{100 * float(np.mean(sampled >= level)):.2f} % of their pixels above it",
    )
    good_areas = region_maps.region_areas(goods, good_peaks, level, good_paths, size, blur, framing)
    defect_areas = []
    if defect_paths:
        defect_areas = region_maps.region_areas(defects, None, level, defect_paths, size, blur, framing)
    return pixel, (np.asarray(good_areas), np.asarray(defect_areas))


def moved(old_goods: np.ndarray, new_goods: np.ndarray) -> np.ndarray:
    """The training goods' scores as the new line's goods would score: centred on the new goods'
    median, and spread as widely as the new goods where those spread wider (a changed line is
    often less uniform: defocus, noise); never narrower, which a handful cannot vouch for."""
    spread = np.subtract(*np.percentile(new_goods, [75, 25])) / max(np.subtract(*np.percentile(old_goods, [75, 25])), 1e-12)
    return (old_goods - np.median(old_goods)) * max(1.0, spread) + np.median(new_goods)


def false_alarm_interval(expected: dict, old_goods: np.ndarray, new_goods: np.ndarray, threshold: float, seed: int = 0) -> list[float]:
    """The expected point's false-alarm interval, widened to cover the new line's own uncertainty:
    the 95 % range of the rate at ``threshold`` over bootstrap resamples of the few new goods."""
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(BOOTSTRAP):
        resample = rng.choice(new_goods, len(new_goods))
        rates.append(np.mean(np.concatenate([moved(old_goods, resample), resample]) >= threshold))
    low, high = np.percentile(rates, [2.5, 97.5])
    interval = expected["false_alarm_rate_ci"]
    return [float(min(interval[0], low)), float(max(interval[1], high))]
