from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import ENGINE_HELP, check_threshold, model_and_target, user_errors
from anomalycli.data import list_images, load_image
from anomalycli.errors import UsageError, UserError
from anomalycli.engines import load_model, on_engine
from anomalycli.inference import iter_scores
from anomalycli.heatmaps import map_scale, overlay, panel
from anomalycli.render import console, prediction_table, save_png, write_rows


@user_errors
def predict_command(
    args: Optional[list[Path]] = typer.Argument(
        None, metavar="[MODEL] FOLDER",
        help="Model file or run folder (default: the newest runs/train-N), then the folder of images (searched recursively).",
    ),
    model_option: Optional[Path] = typer.Option(None, "--model", help="Model file or run folder to use (default: the newest runs/train-N)."),
    output: Optional[Path] = typer.Option(None, help="Write the rows to FILE.csv or FILE.json."),
    heatmaps: Optional[Path] = typer.Option(None, help="Write a heat-map overlay PNG per image here (patchcore, hybrid)."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Heat maps as a panel: the image, then the overlay."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold on the 0..1 score (default: the model's, 0.5)."),
    batch_size: int = typer.Option(32, help="Images per batch."),
    overwrite: bool = typer.Option(False, help="Replace existing --output and heat-map files."),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
) -> None:
    """A score in [0, 1] and a verdict for every image; heat maps where the method has them.

    Short form, in a folder holding runs/: anomaly predict FOLDER (the newest run's model).
    """
    threshold = check_threshold(threshold)
    model_path, folder = model_and_target(args, model_option, "FOLDER")
    if folder is None:
        raise UsageError("give the FOLDER of images to score: anomaly predict [MODEL] FOLDER")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if output is not None:
        if output.suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--output must end in .csv or .json (got {output.name})")
        if output.exists() and not overwrite:
            raise UserError(f"{output} already exists; choose another name or pass --overwrite to replace it")
    model = load_model(model_path, engine)
    if heatmaps is not None and not model.has_maps:
        raise UsageError(f"a {model.method} model has no anomaly maps; --heatmaps needs a patchcore model")
    paths, skipped = list_images(folder)
    if not paths:
        raise UserError(f"no images found in {folder}")
    model = on_engine(model, engine, len(paths), with_maps=heatmaps is not None)
    rows = []
    scale = map_scale(model) if heatmaps is not None else None
    for scored in iter_scores(model, paths, batch_size, threshold, with_maps=heatmaps is not None):
        rel = scored.path.relative_to(folder)
        rows.append({"path": str(scored.path), "score": scored.score, "raw_score": scored.raw, "verdict": scored.verdict, "error": scored.error})
        if heatmaps is not None and scored.map is not None:
            image = load_image(scored.path)
            heat = overlay(image, scored.map, scale)
            save_png(panel(image, heat) if side_by_side else heat, heatmaps / rel.with_suffix(".png"), overwrite)
    n_bad = sum(r["verdict"] == "unreadable" for r in rows)
    if n_bad == len(rows):
        raise UserError(f"none of the {n_bad} image file(s) in {folder} could be read (first: {rows[0]['error']}); check that they are images")
    console.print(prediction_table(rows))
    n_anomaly = sum(r["verdict"] == "anomaly" for r in rows)
    summary = f"{n_anomaly} of {len(rows)} images flagged as anomalies"
    if n_bad:
        summary += f"; {n_bad} unreadable"
    if skipped:
        summary += f"; {len(skipped)} non-image file(s) skipped"
    console.print(summary)
    if output:
        write_rows(output, rows, overwrite)
        console.print(f"rows written to {output}")
    if heatmaps:
        console.print(f"heat maps written to {heatmaps}: {scale.describe()}")
