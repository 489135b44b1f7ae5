from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from anomalycli import project
from anomalycli.cli.common import DEFECT_RATE, MAX_FPR, TARGET_RECALL, model_and_target, require_model_file, user_errors
from anomalycli.cli.render import console, operating_point_text
from anomalycli.data.layouts import discover
from anomalycli.deploy import export
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UsageError, UserError
from anomalycli.workflows.calibrate import recalibrate
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
    out: Optional[Path] = typer.Option(None, help="Model file to write (default: a new run folder runs/train-N, which eval and predict then use)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out file."),
) -> None:
    """Move a trained model's operating point without refitting: a new model file; the old one is untouched.

    anomaly calibrate --target-recall 0.95 re-chooses the threshold on the scores the model keeps;
    anomaly calibrate MODEL NEW_DATA chooses it on labelled images from the line the model never saw.
    """
    rule = operating_rule(target_recall, max_fpr, defect_rate)
    model_path, data = model_and_target(args, model_option, "DATA")
    require_model_file(model_path, "calibrate")
    model = AnomalyModel.load(model_path)
    samples, source = None, ""
    if data is not None:
        dataset = discover(data, normal_class or model.config["normal_class"], labels, manifest)
        samples = dataset.in_split(split) if split else dataset.samples
        if not samples:
            raise UsageError(f"no images in split {split!r}; splits here: {', '.join(dataset.splits) or 'none'}")
        source = str(data)
    if out is not None and out.resolve() == model_path.resolve():
        raise UserError(f"--out {out} is the model being recalibrated; calibrate never replaces it, choose another name")
    new_model, warning = recalibrate(model, rule, samples, source)
    if warning:
        log.warning(warning)
    if out is None:
        made = {"recalibrated_from": str(model_path), "data": str(data) if data else None, "rule": rule.name, "value": rule.value}
        out = project.new_run(made) / project.MODEL_NAME
    export.save_model(new_model, out, overwrite=overwrite)
    cal = new_model.calibration
    console.print(f"threshold by {cal.rule}")
    console.print(operating_point_text(cal.expected, "expected on new images"))
    console.print(f"model: {out} (recalibrated from {model_path}, which is unchanged)")
