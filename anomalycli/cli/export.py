from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import model_and_target, require_model_file, user_errors
from anomalycli.cli.render import console
from anomalycli.deploy import export
from anomalycli.detection import int8_backbone
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UsageError
from anomalycli.files import check_writable

FORMATS = ("onnx",)


@user_errors
def export_command(
    args: Optional[list[Path]] = typer.Argument(None, metavar="[MODEL]", help="Model file or run folder (default: the newest runs/train-N)."),
    out: Optional[Path] = typer.Option(None, "--out", "--output", "-o", help="File to write (default: model.onnx beside the model file)."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    fp32: bool = typer.Option(
        False,
        "--fp32",
        help="Only for fp32 models: a model fitted with an int8 backbone has its bank in int8 features, which fp32 ones would score differently (7-15 % of verdicts flip); its int8 graph runs on any CPU.",
    ),
) -> None:
    """Write the model as one self-contained ONNX file for the line PC: no anomalycli or PyTorch needed there.

    It takes uint8 RGB images at the model's size and returns the score (anomaly at >= 0.5), the raw
    score and, for patchcore and hybrid, the anomaly map; predict and eval accept it as MODEL.
    """
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)} (got {format})")
    if args and len(args) > 1:
        raise UsageError("too many arguments: give [MODEL] and --out FILE")
    model_path, _ = model_and_target(None, args[0] if args else None, "MODEL")
    require_model_file(model_path, "export")
    out = out or model_path.with_name(f"{model_path.stem}.onnx")
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out must end in .onnx (got {out.name})")
    check_writable(out, "--out", overwrite=overwrite)
    model = AnomalyModel.load(model_path)
    if fp32 and int8_backbone.int8_of(model.net) is not None:
        raise UsageError(
            "--fp32 would score this model's int8 bank with fp32 features, which flips 7-15 % of verdicts; export it without "
            "--fp32 (its int8 graph runs on any CPU), or train with --precision fp32 for an fp32 model"
        )
    export.export_onnx(model, out, overwrite)
    size = model.config["image_size"]
    precision = "int8 backbone and search" if int8_backbone.int8_of(model.net) is not None else "fp32 backbone"
    console.print(f"{model.method} model exported to {out} ({out.stat().st_size / 1e6:.1f} MB, {precision})")
    console.print(f"input: images, uint8 N x 3 x {size} x {size} RGB; outputs: {', '.join(export.output_names(model))}")
