from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

# Nothing imported here imports PyTorch: the images start decoding before it loads (_decode_ahead).
from anomalycli import modelfile, project
from anomalycli.cli.common import ENGINE_HELP, RAY_HELP, check_threshold, model_and_target, user_errors
from anomalycli.cli.render import console, err_console, prediction_table, write_rows
from anomalycli.data.bit_depth import windows_of
from anomalycli.data.decoding import DecodeAhead, images_ahead
from anomalycli.data.framing import framing_of
from anomalycli.data.images import list_source, load_image
from anomalycli.deploy import engine_choice, loading, onnx_model
from anomalycli.deploy.regions import judge_regions, min_area_of, pixel_threshold_of, regions_in_columns, save_mask
from anomalycli.errors import Interrupted, UsageError, UserError
from anomalycli.files import check_writable
from anomalycli.judgement.size_rule import describe as describe_size_rule
from anomalycli.views.heatmaps import map_scale, mark_heatmaps_folder, overlay, panel, save_heatmap


@user_errors
def predict_command(
    args: Optional[list[Path]] = typer.Argument(
        None,
        metavar="[MODEL] SOURCE",
        help="Model file or run folder (default: the newest runs/train-N), then the images: one image, a folder (searched recursively) or a .txt file listing image paths, one a line.",
    ),
    model_option: Optional[Path] = typer.Option(None, "--model", help="Model file or run folder to use (default: the newest runs/train-N)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "--out", "-o", help="Write the rows to FILE.csv, or to FILE.json with the drift check beside them."
    ),
    heatmaps: Optional[Path] = typer.Option(None, help="Write a heat-map overlay PNG per image here (patchcore, hybrid)."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Heat maps as a panel: the image, then the overlay."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold on the 0..1 score (default: the model's, 0.5)."),
    batch_size: int = typer.Option(32, help="Images per batch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --output and heat-map files."),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help=RAY_HELP + " Every node must read SOURCE's paths."),
    masks: Optional[Path] = typer.Option(None, help="Write <stem>_mask.png here, at the image's own size, for every image with a defect region."),
    pixel_size: Optional[float] = typer.Option(
        None, "--pixel-size", metavar="MM", help="The size of an image pixel in mm: regions' areas in mm² and sizes in mm too."
    ),
) -> None:
    """A score in [0, 1] and a verdict for every image; heat maps where the method has them.

    Short form, in a folder holding runs/: anomaly predict SOURCE (the newest run's model).
    """
    threshold = check_threshold(threshold)
    model_path, source = model_and_target(args, model_option, "SOURCE")
    if source is None:
        raise UsageError("give the images to score, an IMAGE, a FOLDER or a .txt list of paths: anomaly predict [MODEL] SOURCE")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if pixel_size is not None and not pixel_size > 0:
        raise UsageError(f"--pixel-size is a pixel's size in mm, above 0 (got {pixel_size})")
    if ray is not None and masks is not None:
        raise UsageError("--masks is not available with --ray (maps stay on the workers); write masks without --ray")
    if ray is not None:
        if heatmaps is not None:
            raise UsageError(
                "--heatmaps is not available with --ray (maps stay on the workers); score with --ray, then draw heat maps without it for the images you look at"
            )
        from anomalycli.deploy.ray_cluster import check_address

        check_address(ray)
    if output is not None:
        if output.suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--output must end in .csv or .json (got {output.name})")
    check_writable(output, "--output", overwrite=overwrite)
    check_writable(heatmaps, "--heatmaps", folder=True)
    check_writable(masks, "--masks", folder=True)
    engine_choice.resolve_engine(engine)  # the option's mistakes before the files'
    paths, skipped, base = list_source(source)
    if not paths:
        raise UserError(f"no images found in {source}")
    with _decode_ahead(model_path, paths, batch_size) if ray is None else contextlib.nullcontext() as decoded:
        from anomalycli.deploy.scoring import check_drift, iter_scores

        model = loading.load(model_path, engine, min(onnx_model.CALLS_IN_FLIGHT, len(paths)))
        if heatmaps is not None and not model.has_maps:
            raise UsageError(f"a {model.method} model has no anomaly maps; --heatmaps needs a patchcore model")
        pixel_threshold, min_area = pixel_threshold_of(model), min_area_of(model)
        if masks is not None and pixel_threshold is None:
            raise UsageError("this model has no pixel threshold (a classifier, or trained before regions existed); train it again for --masks")
        if min_area and ray is not None:
            raise UsageError("this model has a size rule (calibrate --min-area), which needs the maps, and they stay on Ray's workers; predict without --ray")
        pixel_size = pixel_size or model.config.get("pixel_size_mm")
        # Regions where the model has a pixel threshold and the rows go to a file or decide verdicts (maps cost time).
        with_regions = pixel_threshold is not None and ray is None and (output is not None or masks is not None or bool(min_area))
        if pixel_threshold is not None and ray is not None and output is not None:
            err_console.print("regions: not made on Ray (the maps stay on the workers); predict without --ray for them", highlight=False)
        with_maps = heatmaps is not None or with_regions
        if ray is None:
            model, engine_notes = loading.on_engine(model, engine, len(paths), with_maps=with_maps)
            scored_rows = iter_scores(model, paths, batch_size, threshold, with_maps=with_maps, decoded=decoded)
        else:
            from anomalycli.deploy.ray_cluster import connect
            from anomalycli.deploy.ray_predict import score_paths

            scored_rows, engine_notes = score_paths(connect(ray), project.model_file(model_path), paths, engine, threshold, batch_size)
        for note in engine_notes:  # where the model runs, when not on its fast path (on Ray: each worker's, once)
            err_console.print(note, highlight=False, markup=False, soft_wrap=True)
        rows, kept = [], []
        scale = map_scale(model) if heatmaps is not None else None
        if heatmaps is not None:
            mark_heatmaps_folder(heatmaps)
        names = _output_names(paths, base) if heatmaps is not None or masks is not None else {}
        windows = windows_of(model.config)
        written: set[Path] = set()  # a path listed twice is drawn once
        try:
            for scored in scored_rows:
                found = judge_regions(scored, pixel_threshold, min_area) if with_regions else []
                rows.append({"path": str(scored.path), "score": scored.score, "raw_score": scored.raw, "verdict": scored.verdict, "error": scored.error})
                if min_area:
                    rows[-1]["passed_by_size"] = scored.passed_by_size
                if with_regions:
                    rows[-1]["regions"] = [r.to_dict(pixel_size) for r in found]
                    target = _named(masks, names.get(scored.path), "_mask.png")
                    if target is not None and found and target not in written:
                        save_mask(scored, pixel_threshold, target, overwrite)
                        written.add(target)
                target = _named(heatmaps, names.get(scored.path), ".png")
                if target is not None and scored.map is not None and target not in written:
                    image = load_image(scored.path, windows)
                    heat = overlay(image, scored.map, scale, flagged=scored.verdict == "anomaly")
                    save_heatmap(panel(image, heat) if side_by_side else heat, target, overwrite)
                    written.add(target)
                scored.map = None  # memory stays flat in the number of images
                kept.append(scored)
        except KeyboardInterrupt:
            raise Interrupted(_interrupted_line(len(rows), len(paths), output, [heatmaps, masks])) from None
    n_bad = sum(r["verdict"] == "unreadable" for r in rows)
    if n_bad == len(rows):
        raise UserError(f"none of the {n_bad} image file(s) in {source} could be read (first: {rows[0]['error']}); check that they are images")
    console.print(prediction_table(rows))
    n_anomaly = sum(r["verdict"] == "anomaly" for r in rows)
    summary = f"{n_anomaly} of {len(rows)} image{'' if len(rows) == 1 else 's'} flagged as anomalies"
    if n_bad:
        summary += f"; {n_bad} unreadable"
    if min_area:
        summary += f"; {sum(bool(r['passed_by_size']) for r in rows)} passed by the size rule ({describe_size_rule(min_area, pixel_size)})"
    if skipped:
        summary += f"; {len(skipped)} non-image file(s) skipped"
    console.print(summary)
    unplaced = sum(r["verdict"] == "anomaly" and not r["regions"] for r in rows) if with_regions else 0
    if unplaced:
        console.print(
            f"{unplaced} of the {n_anomaly} flagged image(s) have no region above the pixel threshold: the image score flagged them, "
            "so look at the whole part (a faint or thin defect, such as a crack, is outlined least)"
        )
    drift = check_drift(model, kept, str(model_path))
    if drift.message:
        err_console.print(drift.message, highlight=False, markup=False, soft_wrap=True)
    if output:
        if with_regions and output.suffix.lower() == ".csv":
            rows = [regions_in_columns(row, pixel_size) for row in rows]
        write_rows(output, rows, overwrite, {"drift": drift.to_dict()})
        console.print(f"rows written to {output}")
    if heatmaps:
        console.print(f"heat maps written to {heatmaps}: {scale.describe()}")
    if masks:
        console.print(f"masks of {sum(bool(r.get('regions')) for r in rows)} images with a defect region written to {masks}")


def _interrupted_line(done: int, total: int, output: Path | None, folders: list[Path | None]) -> str:
    """What a predict stopped by Ctrl-C leaves: no rows (they are written whole at the end), and the
    heat maps and masks of the images judged so far, each file whole."""
    line = f"interrupted after {done} of {total} images"
    if output is not None:
        line += f"; nothing written to {output}"
    written = [str(folder) for folder in folders if folder is not None and folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())]
    if written:
        line += f"; the files written so far stay in {' and '.join(written)}: pass --overwrite to write them again"
    return line


def _decode_ahead(model_path: Path, paths: list[Path], batch_size: int) -> DecodeAhead | contextlib.nullcontext:
    """SOURCE's images decoding at the model's input size, begun before PyTorch's import (over a
    second on a small CPU, when the other core would idle): whole predict 5-10 % faster on 320
    PNGs (2 cores). Where the size cannot be read here (a damaged or foreign file, whose error
    comes from loading it), the images wait for the model."""
    path = project.model_file(model_path)
    config = _exported_config(path) if onnx_model.is_exported(path) else modelfile.read_meta(path).get("config")
    size = config.get("image_size") if isinstance(config, dict) else None
    if not isinstance(size, int):
        return contextlib.nullcontext()
    return DecodeAhead(paths, size, ahead=images_ahead(batch_size), framing=framing_of(config), windows=windows_of(config))


def _exported_config(path: Path) -> dict | None:
    """The model's config in an ``anomaly export`` file's metadata, or None where it cannot be read."""
    try:
        import onnx  # not needed to run the file: without it, the images wait for the model

        properties = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(properties[onnx_model.META_KEY])["config"]
    except Exception:  # anything wrong with the file is loading's to say, in its one line
        return None


def _output_names(paths: list[Path], base: Path) -> dict[Path, Path]:
    """Each image's name under --heatmaps and --masks, less the ".png" or "_mask.png" it gets: its
    path below SOURCE without its extension; with it where two images differ only by it (a.png and
    a.jpg: a.png.png and a.jpg.png, not one a.png written over the other), and numbered where still
    alike (two listed files of one name from two folders)."""
    plain = {path: _relative(path, base).with_suffix("") for path in dict.fromkeys(paths)}
    shared = Counter(plain.values())
    names = {path: _relative(path, base) if shared[name] > 1 else name for path, name in plain.items()}
    seen: Counter = Counter()
    for path, name in names.items():
        seen[name] += 1
        if seen[name] > 1:
            names[path] = name.with_name(f"{name.name}-{seen[name]}")
    return names


def _named(folder: Path | None, name: Path | None, ending: str) -> Path | None:
    """``folder``/``name`` + ``ending`` (an image's heat map or mask), None without the folder."""
    return None if folder is None else folder / name.with_name(name.name + ending)


def _relative(path: Path, base: Path) -> Path:
    """Where an image's heat map goes under --heatmaps: its path below SOURCE (a listed file
    elsewhere: its name)."""
    try:
        relative = path.relative_to(base)
    except ValueError:
        return Path(path.name)
    return Path(path.name) if ".." in relative.parts else relative
