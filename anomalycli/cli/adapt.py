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
from anomalycli.data.images import list_source
from anomalycli.data.layouts import Sample
from anomalycli.deploy import export
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UsageError, UserError
from anomalycli.files import check_writable
from anomalycli.workflows.adapt import adapt
from anomalycli.workflows.train_options import operating_rule

log = logging.getLogger("anomalycli")


@user_errors
def adapt_command(
    args: Optional[list[Path]] = typer.Argument(
        None,
        metavar="[MODEL] DATA",
        help="Model file or run folder (default: the newest runs/train-N), then images from the changed line: a folder or a "
        ".txt list of good images, or a folder with good/ and defect class folders (or --labels) to add labelled defects too.",
    ),
    model_option: Optional[Path] = typer.Option(None, "--model", help="Model file or run folder (default: the newest runs/train-N)."),
    target_recall: Optional[float] = TARGET_RECALL,
    max_fpr: Optional[float] = MAX_FPR,
    defect_rate: Optional[float] = DEFECT_RATE,
    normal_class: Optional[str] = typer.Option(None, help="Class name of good parts in DATA's class folders (default: the model's)."),
    labels: Optional[Path] = typer.Option(None, help="Labels CSV (filename,label[,defect_type]) for a flat DATA folder."),
    out: Optional[Path] = typer.Option(
        None, "--out", "--output", "-o", help="Model file to write (default: a new run folder runs/train-N, which eval and predict then use)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    seed: int = typer.Option(0, help="Seed of the folds the new images are dealt into."),
) -> None:
    """Adapt a model to a changed line (light, focus, camera) with 5 to 50 of its good images, without refitting.

    The new goods join the memory bank; the threshold is re-chosen on them, scored out of fold,
    and the stored defect scores. A new model file; the old one is untouched.
    """
    rule = operating_rule(target_recall, max_fpr, defect_rate)
    model_path, data = model_and_target(args, model_option, "DATA")
    if data is None:
        raise UsageError("give the new line's good images, a FOLDER or a .txt list: anomaly adapt [MODEL] DATA")
    require_model_file(model_path, "adapt")
    if out is not None and out.resolve() == model_path.resolve():
        raise UserError(f"--out {out} is the model being adapted; adapt never replaces it, choose another name")
    check_writable(out, "--out", overwrite=overwrite)
    model = AnomalyModel.load(model_path)
    samples = line_samples(data, model.config, normal_class, labels)
    result = adapt(model, samples, rule, seed=seed, show_progress=True)
    for warning in result.warnings:
        log.warning(warning)
    if out is None:
        made = {"adapted_from": str(model_path), "data": str(data), "rule": rule.name, "value": rule.value, "seed": seed}
        out = project.new_run(made) / project.MODEL_NAME
    export.save_model(result.model, out, overwrite=overwrite)
    cal = result.model.calibration
    console.print(
        f"{result.n_good} new good images joined the memory bank ({_bank_change(model.config, result.model.config)})"
        + (f", and {result.n_defect} new defects the calibration scores" if result.n_defect else "")
        + f"; before adapting, the model flagged {100 * result.flagged_before:.0f}% of the new good images"
    )
    console.print(f"threshold by {cal.rule}")
    console.print(operating_point_text(cal.expected, "expected on the new line"))
    console.print(f"model: {out} (adapted from {model_path}, which is unchanged)")


def _bank_change(before: dict, after: dict) -> str:
    """'5,120 -> 5,280 patches', and where the bank rule's share fell or the goods were turned, so."""
    text = f"{before['bank_size']:,} -> {after['bank_size']:,} patches"
    if after.get("coreset_ratio", 0) < before.get("coreset_ratio", 0):
        text += f": {100 * after['coreset_ratio']:.2g}% of all the goods' patches kept, as a fit on them all would"  # 1.3%, not 1%
    turns, turns_before = (config.get("orientation", {}).get("turns", 1) for config in (after, before))
    if turns < turns_before:  # the first goods keep their turns: only a fit at once learns every good at today's
        learnt = f"at {turns} orientations" if turns > 1 else "as they are"
        text += (
            f"; the new goods learnt {learnt}, the rule for this many goods, the first ones at {turns_before}: a fit on all of them "
            "at once would learn every good so and keep a smaller bank (a faster predict; on the screws it also separated better, BENCHMARKS.md, Levers)"
        )
    elif turns > 1:
        text += f"; the new goods learnt at {turns} orientations, as the model's were"
    return text


def line_samples(data: Path, model_config: dict, normal_class: str | None, labels: Path | None) -> list[Sample]:
    """DATA's images: labelled where DATA has class folders or a labels CSV, else all good."""
    if labels is None and (data.is_file() or is_folder_of_images(data)):
        paths, _, _ = list_source(data)
        if not paths:
            raise UserError(f"no images found in {data}")
        return [Sample(path, normal_class or model_config["normal_class"], 0) for path in paths]
    return data_for_model(data, model_config, normal_class, labels).samples
