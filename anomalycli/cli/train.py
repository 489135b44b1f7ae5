from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import NORMAL_CLASS_HELP, RAY_HELP, data_folder, user_errors
from anomalycli.cli.render import console, curves_png, err_console, operating_point_text
from anomalycli.detection import backbones
from anomalycli.detection.defaults import MAX_MS_PER_IMAGE
from anomalycli.errors import UsageError
from anomalycli.files import check_writable
from anomalycli.workflows.train import AUTO, CROSS_FITTED, TrainOptions, train

DEFAULTS = {f.name: f.default for f in fields(TrainOptions)}
CLASSIFIER_ONLY = ("epochs", "lr", "weight_decay", "weighted_loss", "sampler", "select", "patience")

BACKBONE_HELP = "Backbone (default: efficientnet_lite1 for patchcore and hybrid, efficientnet_lite0 for the classifier). " + "; ".join(
    f"{b.name}: {'works offline' if b.offline else 'needs internet once'} ({b.weights_source})" for b in backbones.BACKBONES.values()
)


@user_errors
def train_command(
    ctx: typer.Context,
    data: Optional[Path] = typer.Argument(None, help="Data folder (class folders, split folders, MVTec AD, or flat with --labels; default: ./data)."),
    method: Optional[str] = typer.Option(
        None,
        help="auto (the default: hybrid when at least --cv-folds defective images are labelled, else patchcore), patchcore (learns from good images only), hybrid (patchcore fused with a head trained on the labelled defects) or classifier. A classifier-only option implies classifier.",
    ),
    backbone: Optional[str] = typer.Option(None, help=BACKBONE_HELP),
    weights: str = typer.Option("imagenet", help="imagenet, none (random) or PATH to a state dict."),
    image_size: Optional[int] = typer.Option(
        None,
        help="Images are resized to this square size (default: the classifier 224; patchcore and hybrid choose from the data: 320, or larger where the images are large, the defects small and the larger size's out-of-fold verdicts are better).",
    ),
    max_ms_per_image: float = typer.Option(
        MAX_MS_PER_IMAGE, help="patchcore and hybrid: a size chosen from the data scores an image within this many ms on this CPU."
    ),
    fast: bool = typer.Option(
        False, "--fast", help="patchcore and hybrid: EfficientNet-Lite0 at 224 px, about 2.5x faster to predict for a little less separation."
    ),
    precision: str = typer.Option(
        "auto",
        help="patchcore and hybrid: the backbone's precision, auto (int8 on a CPU: predict about a third faster, fit faster; fp32 where int8 features disagree, or on a GPU), int8 or fp32.",
    ),
    normal_class: Optional[str] = typer.Option(None, help=NORMAL_CLASS_HELP),
    labels: Optional[Path] = typer.Option(None, help="Labels CSV (filename,label[,defect_type]) for a flat folder."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV from 'anomaly split' (its split column picks validation)."),
    val_ratio: float = typer.Option(0.1, help="Validation share when the data has no val split."),
    seed: int = typer.Option(0, help="Random seed (same seed, same data, same CPU: same model)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    target_recall: Optional[float] = typer.Option(
        None, help="Operating point: catch at least this share of the defects (e.g. 0.95); the false-alarm rate it costs is reported."
    ),
    max_fpr: Optional[float] = typer.Option(
        None,
        help="Operating point: flag at most this share of good parts (e.g. 0.01); the recall left is reported. Also the rule when there are no labelled defects (default 0.01 then).",
    ),
    defect_rate: Optional[float] = typer.Option(None, help="Operating point: the largest F1 at this defect rate on the line (e.g. 0.05)."),
    epochs: int = typer.Option(60, help="[classifier] Epochs at most."),
    batch_size: int = typer.Option(64, help="Batch size."),
    lr: float = typer.Option(1e-4, help="[classifier] AdamW learning rate."),
    weight_decay: float = typer.Option(1e-3, help="[classifier] AdamW weight decay."),
    weighted_loss: bool = typer.Option(False, "--weighted-loss", help="[classifier] Class weights 'balanced' in the loss."),
    sampler: str = typer.Option("shuffle", help="[classifier] shuffle, or balanced (WeightedRandomSampler)."),
    select: str = typer.Option("auroc", help="[classifier] Keep the epoch best by validation auroc, f1 or loss."),
    patience: int = typer.Option(10, help="[classifier] Stop after this many epochs without improvement."),
    coreset_ratio: Optional[float] = typer.Option(
        DEFAULTS["coreset_ratio"],
        help="[patchcore, hybrid] Share of patches kept in the memory bank (default: every patch of a few good images, up to 8,192; 1 % of many).",
    ),
    orientation: str = typer.Option(
        DEFAULTS["orientation"],
        help="[patchcore] auto (measured from the good images), free (the bank learns the goods turned: parts that come at any angle) or fixed.",
    ),
    reweight: bool = typer.Option(False, "--reweight", help="[patchcore] The paper's re-weighting of the image score."),
    cv_folds: int = typer.Option(
        5,
        help="[patchcore, hybrid] Cross-fitting folds: every labelled image is scored by a model that never saw it, for the threshold (and the hybrid's fusion weight).",
    ),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", "--out", "--output", "-o", help="Run folder to create (default runs/train-N; never overwritten)."
    ),
    resume: Optional[Path] = typer.Option(None, help="Continue an interrupted classifier run from its folder."),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="[ADDRESS]", help="[patchcore, hybrid] " + RAY_HELP + " Every node must read DATA; the model is the one this machine would fit."
    ),
    ignore: Optional[list[Path]] = typer.Option(
        None,
        "--ignore",
        metavar="MASK",
        help="[patchcore, hybrid] A don't-care mask, white where a label, date code or fixture must never count, in the images' frame, "
        "or LabelMe's JSON of polygons and rectangles drawn on one image; repeat for several.",
    ),
    framing: str = typer.Option(
        "squash",
        help="[patchcore, hybrid] How images become the square input: squash, or letterbox (each image's shape kept, the rest mirrored; "
        "not with --ignore). On tiles of many shapes letterbox sharpened the maps but found fewer defect regions (BENCHMARKS.md).",
    ),
    levels: str = typer.Option(
        DEFAULTS["levels"],
        help="[patchcore, hybrid] auto (measured from the good images: stretched where their exposure varies), stretch (each image's "
        "1st to 99th percentile of grey onto one range before the backbone) or as-is.",
    ),
    no_pixel_head: bool = typer.Option(
        False,
        "--no-pixel-head",
        help="[hybrid] Maps of the distances alone. By default, where 5 or more defects have masks, the maps also learn from them where "
        "defects lie: sharper maps and fewer false regions, less gain on a defect type never seen (BENCHMARKS.md, Localisation).",
    ),
    # The default, still taken; hidden, as a flag pair's second column took a fifth of an 80-column help's width.
    pixel_head_asked: bool = typer.Option(False, "--pixel-head", hidden=True),
) -> None:
    """Train a detector and calibrate its threshold; writes a run folder with model.safetensors.

    Short form, in a folder holding data/: anomaly train (then anomaly eval, anomaly predict FOLDER).
    """
    method_defaulted = False
    if resume is not None:
        result = train(None, resume=resume)
    else:
        data = data_folder(data)
        check_writable(run_dir, "--run-dir", folder=True)
        given = {k for k in CLASSIFIER_ONLY if ctx.get_parameter_source(k).name != "DEFAULT"}
        if method is None:
            method_defaulted = not given
            method = "classifier" if given else AUTO
        elif method == "patchcore" and given:
            err_console.print(f"[yellow]warning:[/yellow] {', '.join('--' + g.replace('_', '-') for g in sorted(given))} only apply to the classifier; ignored")
        if no_pixel_head and pixel_head_asked:
            raise UsageError("--pixel-head and --no-pixel-head contradict each other; give one")
        pixel_head = not no_pixel_head
        if not pixel_head and method in ("patchcore", "classifier"):
            err_console.print(f"[yellow]warning:[/yellow] --no-pixel-head only applies to the hybrid (a {method} model has no pixel head); ignored")
        options = TrainOptions(
            data=str(data),
            method=method,
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            max_ms_per_image=max_ms_per_image,
            normal_class=normal_class,
            labels=str(labels) if labels else None,
            manifest=str(manifest) if manifest else None,
            val_ratio=val_ratio,
            seed=seed,
            device=device,
            target_recall=target_recall,
            max_fpr=max_fpr,
            defect_rate=defect_rate,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            weighted_loss=weighted_loss,
            sampler=sampler,
            select=select,
            patience=patience,
            coreset_ratio=coreset_ratio,
            orientation=orientation,
            reweight=reweight,
            cv_folds=cv_folds,
            run_dir=str(run_dir) if run_dir else None,
            fast=fast,
            precision=precision,
            ray=ray,
            ignore=[str(p) for p in ignore] if ignore else None,
            framing=framing,
            levels=levels,
            pixel_head=pixel_head,
        )
        result = train(options)
    if result.history:
        curves_png(result.history, result.run_dir / "curves.png")
    cal = result.model.calibration
    console.print(
        f"trained {result.model.method} on {result.n_fit} images; validation: "
        f"{result.validation if result.model.method in CROSS_FITTED else f'{result.n_val} images from {result.validation}'}\n"
        f"threshold by {cal.rule}"
    )
    console.print(operating_point_text(cal.expected, "expected on new images"))
    pixel = result.model.config.get("pixel_threshold")
    if pixel:
        console.print(
            f"pixel threshold {pixel['value']:.4g} (defect regions are the map above it), by {pixel['rule']}; "
            f"{100 * pixel['good_pixel_rate']:.2f} % of good pixels above it, out of fold"
        )
    for line in input_size_lines(result.model.config.get("input_size")):
        console.print(line)
    turned = result.model.config.get("orientation")
    if turned:
        learnt = (
            f"; the bank learnt each good at {turned['turns']} orientations" + (" and mirrored" if turned["mirrored"] else "")
            if turned["kind"] == "free"
            else ""
        )
        console.print(f"orientation: {turned['kind']}: {turned['reason']}{learnt}; bank {result.model.config['bank_size']:,} patches")
    chosen_levels = result.model.config.get("levels")
    if chosen_levels:
        console.print(f"levels: {chosen_levels['kind']}: {chosen_levels['reason']}")
    console.print(f"model: {result.model_path}")
    if method_defaulted or method == AUTO:
        console.print(_auto_note(result.model.method, cal.n_anomaly, result.model.config.get("cv_folds", DEFAULTS["cv_folds"])))


def input_size_lines(choice: dict | None) -> list[str]:
    """What size train chose and why, with each size's measured trade-off (a few lines)."""
    if not choice:
        return []
    lines = [f"input size {choice['chosen']} px: {choice['plan']['reason']}" + (f"; {choice['why']}" if len(choice["plan"]["candidates"]) > 1 else "")]
    if len(choice["trials"]) > 1:
        base = choice["trials"][0]
        for t in choice["trials"]:
            lines.append(
                f"  {t['size']} px: out-of-fold AUROC {_number(t['auroc'], 3)}; recall {_number(t['recall'], 2)}, false alarms {_number(t['false_alarms'], 2)} "
                f"at its own point; recall {_number(t.get('recall_at_default_point'), 2)} at {base['size']} px's false alarms; "
                f"scoring {t['ms_per_image']:.0f} ms an image on this CPU; bank {t['bank_patches']} patches; fitted in {t['fit_seconds']:.0f} s"
            )
    return lines


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _auto_note(method: str, n_anomaly: int, folds: int) -> str:
    """Why ``--method auto`` chose what it did, and the other choice."""
    if method == "hybrid":
        return (
            f"method: hybrid, chosen because {n_anomaly} defective images are labelled: it learns from them (--method patchcore learns from good images only)"
        )
    if n_anomaly:
        return f"method: patchcore; the {n_anomaly} defective image(s) only set the threshold. With {folds} or more the default also learns from them (hybrid)"
    return "method: patchcore (no labelled defects to learn from)"
