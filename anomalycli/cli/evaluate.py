from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import ENGINE_HELP, check_threshold, command_line, data_folder, data_for_model, model_and_target, user_errors
from anomalycli.cli.render import confusion_table, console, defect_table, err_console, metrics_table, operating_point_text, trade_off_table, write_json
from anomalycli.data.layouts import attach_masks
from anomalycli.deploy.engines import describe, load_model, on_engine
from anomalycli.errors import UsageError
from anomalycli.files import check_writable
from anomalycli.judgement.size_rule import describe as describe_size_rule
from anomalycli.views.report import check_folder, write_report
from anomalycli.workflows.evaluate import evaluate


@user_errors
def eval_command(
    args: Optional[list[Path]] = typer.Argument(
        None,
        metavar="[MODEL] [DATA]",
        help="Model file or run folder (default: the newest runs/train-N), then the labelled data folder (default: ./data).",
    ),
    model_option: Optional[Path] = typer.Option(None, "--model", help="Model file or run folder to evaluate (default: the newest runs/train-N)."),
    normal_class: Optional[str] = typer.Option(
        None, help="Class name of good parts in DATA (default: the model's where DATA has it, else the one named OK, normal, pass, iO or the like)."
    ),
    labels: Optional[Path] = typer.Option(None, help="Labels CSV (filename,label[,defect_type]) for a flat folder."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV from 'anomaly split'."),
    split: Optional[str] = typer.Option(None, help="Evaluate only this split (default: test if there is one, else all)."),
    masks: Optional[Path] = typer.Option(None, help="Folder of defect masks (<name>_mask.png): adds pixel AUROC."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold on the 0..1 score (default: the model's, 0.5)."),
    batch_size: int = typer.Option(32, help="Images per batch."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    report_dir: Optional[Path] = typer.Option(
        None, "--report", help="Also write an HTML report (plots, a gallery of mistakes and close calls) into this folder."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file or --report folder."),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
) -> None:
    """Confusion matrix, accuracy, precision, recall, F1, AUROC (with 95% CIs), recall per defect type.

    Short form, in a folder holding data/ and runs/: anomaly eval (or anomaly eval DATA).
    """
    threshold = check_threshold(threshold)
    model_path, data = model_and_target(args, model_option, "DATA")
    data = data_folder(data)
    check_writable(json_out, "--json", overwrite=overwrite)
    check_writable(report_dir, "--report")  # built beside the folder, then renamed into place
    if report_dir is not None:
        check_folder(report_dir, overwrite)
    model = load_model(model_path, engine)
    dataset = data_for_model(data, model.config, normal_class, labels, manifest)
    samples = dataset.samples
    chosen = split or ("test" if dataset.in_split("test") else None)
    if chosen:
        samples = dataset.in_split(chosen)
        if not samples:
            raise UsageError(f"no images in split {chosen!r}; splits here: {', '.join(dataset.splits) or 'none'}")
    if masks is not None:
        samples = attach_masks(samples, masks)
    model, engine_note = on_engine(model, engine, len(samples))
    if engine_note:
        err_console.print(engine_note, highlight=False, markup=False, soft_wrap=True)
    report, rows = evaluate(model, samples, batch_size, threshold, with_masks=any(s.mask for s in samples), model_name=str(model_path))
    report["split"] = chosen or "all"
    console.print(f"{model.method} model on {len(samples)} images ({'split ' + chosen if chosen else 'all splits'}) of {dataset.root}")
    console.print(confusion_table(report, model.config["class_names"]))
    console.print(metrics_table(report))
    if report["per_defect_type"]:
        console.print(defect_table(report))
    cal = report["calibration"]
    console.print(f"the threshold rests on {cal['n_normal']} normal and {cal['n_anomaly']} anomalous calibration images")
    if report["min_area_px"]:
        console.print(
            f"size rule: {describe_size_rule(report['min_area_px'], model.config.get('pixel_size_mm'))}; the verdicts and the points below are under it"
        )
    console.print(operating_point_text(cal.get("expected"), "calibration expected"))
    console.print(operating_point_text(report["operating_point"], f"measured here at threshold {threshold:g}"))
    if report["announcement_misses"]:
        console.print(
            f"[yellow]the announced point does not hold on these images: {'; '.join(report['announcement_misses'])}; "
            "if they come from a changed line, see the drift check and anomaly adapt[/yellow]",
            highlight=False,
        )
    seen = report["trained_on"] or {}
    if seen.get("message"):
        console.print(f"[yellow]{seen['message']}[/yellow]", highlight=False)
    if seen.get("unseen_point"):
        fresh = seen["unseen_point"]["n_normal"] + seen["unseen_point"]["n_anomaly"]
        console.print(operating_point_text(seen["unseen_point"], f"measured on the {fresh} images it was not trained on"))
    if report["trade_off"]:
        console.print(trade_off_table(report["trade_off"], report["operating_point"]))
    if report["drift"]["message"]:
        err_console.print(report["drift"]["message"], highlight=False, markup=False, soft_wrap=True)
    if report["n_unreadable"]:
        console.print(f"[yellow]{report['n_unreadable']} unreadable image(s) left out[/yellow]")
    if report["taken_differently"]:
        console.print(f"warning: {report['taken_differently']}", style="yellow", markup=False, highlight=False)
    if json_out:
        write_json(json_out, report, overwrite)
        console.print(f"metrics written to {json_out}")
    if report_dir:
        about = {
            "model": model_path,
            "method": model.method,
            "backbone": model.config["backbone"],
            "image size": model.config["image_size"],
            "engine": describe(model),
            "data": dataset.root,
            "split": chosen or "all",
            "threshold": f"{threshold:g} on the 0..1 score",
            "command": command_line(),
            "made": datetime.now().isoformat(timespec="seconds"),
        }
        page = write_report(report_dir, report, samples, rows, model, about, overwrite)
        console.print(f"report written to {page}")
