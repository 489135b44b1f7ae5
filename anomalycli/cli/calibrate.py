from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from anomalycli import project
from anomalycli.cli.common import (
    DEFECT_RATE,
    MAX_FPR,
    TARGET_RECALL,
    data_for_model,
    is_folder_of_images,
    model_and_target,
    require_model_file,
    user_errors,
)
from anomalycli.cli.render import console, operating_point_text
from anomalycli.deploy import export
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UsageError, UserError
from anomalycli.files import check_writable
from anomalycli.judgement.size_rule import describe as describe_size_rule
from anomalycli.judgement.size_rule import parse_area
from anomalycli.workflows.calibrate import PixelChoices, recalibrate
from anomalycli.workflows.train_options import operating_rule

log = logging.getLogger("anomalycli")


@user_errors
def calibrate_command(
    args: Optional[list[Path]] = typer.Argument(
        None,
        metavar="[MODEL] [DATA]",
        help="Model file or run folder (default: the newest runs/train-N), then labelled images it was not trained on "
        "(default: none, the calibration scores kept in the model file).",
    ),
    model_option: Optional[Path] = typer.Option(None, "--model", help="Model file or run folder (default: the newest runs/train-N)."),
    target_recall: Optional[float] = TARGET_RECALL,
    max_fpr: Optional[float] = MAX_FPR,
    defect_rate: Optional[float] = DEFECT_RATE,
    normal_class: Optional[str] = typer.Option(None, help="Class name of good parts in DATA (default: the model's)."),
    labels: Optional[Path] = typer.Option(None, help="Labels CSV (filename,label[,defect_type]) for a flat DATA folder."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV from 'anomaly split'."),
    split: Optional[str] = typer.Option(None, help="Use only this split of DATA (default: all of it)."),
    min_area: Optional[str] = typer.Option(
        None,
        "--min-area",
        metavar="AREA",
        help="Size rule: a part whose every defect region is smaller than AREA is passed (50 or 50px: image pixels; 0.2mm2 with a pixel size; 0: no rule). "
        "The threshold is chosen, and recall and false alarms announced, for the verdicts the rule gives.",
    ),
    pixel_size: Optional[float] = typer.Option(
        None, "--pixel-size", metavar="MM", help="The size of an image pixel in mm, stored in the model (areas in mm² in predict's rows)."
    ),
    pixel_fpr: Optional[float] = typer.Option(
        None,
        "--pixel-fpr",
        metavar="RATE",
        help="A new pixel threshold, which makes the regions: this share of DATA's good pixels above it (the model's: 0.001).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "--output", "-o", help="Model file to write (default: a new run folder runs/train-N, which eval and predict then use)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Move a trained model's operating point without refitting: a new model file; the old one is untouched.

    anomaly calibrate --target-recall 0.95 re-chooses the threshold on the scores the model keeps.

    anomaly calibrate MODEL NEW_DATA chooses it on labelled images from the line the model never saw.
    """
    rule = operating_rule(target_recall, max_fpr, defect_rate)
    if pixel_size is not None and not pixel_size > 0:
        raise UsageError(f"--pixel-size is a pixel's size in mm, above 0 (got {pixel_size})")
    if pixel_fpr is not None and not 0 < pixel_fpr < 1:
        raise UsageError(f"--pixel-fpr is a share of good pixels, between 0 and 1 (got {pixel_fpr})")
    model_path, data = model_and_target(args, model_option, "DATA")
    require_model_file(model_path, "calibrate")
    model = AnomalyModel.load(model_path)
    pixel_size = pixel_size or model.config.get("pixel_size_mm")
    pixel = PixelChoices(None if min_area is None else parse_area(min_area, pixel_size), pixel_size, pixel_fpr)
    samples, source = None, ""
    if data is not None and labels is None and manifest is None and is_folder_of_images(data):
        raise UsageError(
            f"{data} holds images but no class folders: calibrate chooses the threshold on labelled images (good/ and a folder per "
            f"defect class, or --labels CSV); to teach the model good images of a changed line, run: anomaly adapt {model_path} {data}"
        )
    if data is not None:
        dataset = data_for_model(data, model.config, normal_class, labels, manifest)
        samples = dataset.in_split(split) if split else dataset.samples
        if not samples:
            raise UsageError(f"no images in split {split!r}; splits here: {', '.join(dataset.splits) or 'none'}")
        source = str(data)
    if out is not None and out.resolve() == model_path.resolve():
        raise UserError(f"--out {out} is the model being recalibrated; calibrate never replaces it, choose another name")
    check_writable(out, "--out", overwrite=overwrite)
    new_model, warnings = recalibrate(model, rule, samples, source, pixel=pixel)
    for warning in warnings:
        log.warning(warning)
    if out is None:
        made = {"recalibrated_from": str(model_path), "data": str(data) if data else None, "rule": rule.name, "value": rule.value}
        out = project.new_run(made) / project.MODEL_NAME
    export.save_model(new_model, out, overwrite=overwrite)
    cal = new_model.calibration
    console.print(f"threshold by {cal.rule}")
    if cal.min_area_px:
        console.print(f"size rule: {describe_size_rule(cal.min_area_px, new_model.config.get('pixel_size_mm'))}")
    if pixel_fpr is not None:
        console.print(f"pixel threshold: {new_model.config['pixel_threshold']['value']:.4g} ({new_model.config['pixel_threshold']['rule']})")
    console.print(operating_point_text(cal.expected, "expected on new images"))
    console.print(f"model: {out} (recalibrated from {model_path}, which is unchanged)")
