from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from anomalycli.cli.common import NORMAL_CLASS_HELP, data_folder, user_errors
from anomalycli.cli.render import console
from anomalycli.data.layouts import discover, write_manifest
from anomalycli.data.splits import held_out_split, k_folds
from anomalycli.errors import UsageError


@user_errors
def split_command(
    data: Optional[Path] = typer.Argument(None, help="Data folder to split (no image is copied; default: ./data)."),
    out: Path = typer.Option(Path("split.csv"), "--out", "--output", "-o", help="Manifest CSV to write: path,label,defect_type,split (or fold)."),
    val_ratio: float = typer.Option(0.1, help="Share of images held out for validation."),
    test_ratio: float = typer.Option(
        0.0, help="Share of images held out for testing first (split 'test'): train never reads them, eval reads them by default."
    ),
    folds: Optional[int] = typer.Option(None, help="Write K stratified folds (column 'fold') instead of train/val."),
    seed: int = typer.Option(0, help="Random seed."),
    normal_class: Optional[str] = typer.Option(None, help=NORMAL_CLASS_HELP),
    labels: Optional[Path] = typer.Option(None, help="Labels CSV for a flat folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Stratified (by class and defect type) train/validation split or k folds, as a manifest CSV."""
    if folds is not None and test_ratio:
        raise UsageError("--folds and --test-ratio are two ways to hold images out: give one")
    data = data_folder(data)
    dataset = discover(data, normal_class, labels)
    samples = dataset.samples
    if folds is not None:
        samples = k_folds(samples, folds, seed)
        column, groups = "fold", [str(f) for f in range(folds)]
    else:
        samples, column = held_out_split(samples, val_ratio, test_ratio, seed), "split"
        groups = ["train", "val"] + (["test"] if test_ratio else [])
    write_manifest(out, dataset.root, samples, column, overwrite)

    keys = sorted({(s.class_name, s.defect_type or "") for s in samples})
    table = Table(title=f"{len(samples)} images from {dataset.root} ({dataset.layout})")
    table.add_column("class")
    table.add_column("defect type")
    for g in groups:
        table.add_column(f"{column} {g}" if column == "fold" else g, justify="right")
    for class_name, defect in keys:
        counts = [sum(1 for s in samples if (s.class_name, s.defect_type or "") == (class_name, defect) and str(getattr(s, column)) == g) for g in groups]
        table.add_row(class_name, defect, *map(str, counts))
    console.print(table)
    console.print(f"manifest written to {out}; use it with --manifest {out} {data}")
