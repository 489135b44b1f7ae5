from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import NORMAL_CLASS_HELP, data_folder, is_folder_of_images, user_errors
from anomalycli.cli.render import console, inspection_tables, write_json
from anomalycli.data.layouts import discover, unlabelled
from anomalycli.files import check_writable
from anomalycli.workflows.inspect import inspect_dataset


@user_errors
def inspect_command(
    data: Optional[Path] = typer.Argument(None, help="Data folder: class folders, split/class folders or MVTec AD (default: ./data)."),
    normal_class: Optional[str] = typer.Option(None, help=NORMAL_CLASS_HELP),
    labels: Optional[Path] = typer.Option(None, help="Labels CSV (filename,label[,defect_type]) for a flat folder."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV written by 'anomaly split'."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the facts to this JSON file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file."),
) -> None:
    """What is in a data set: counts, imbalance, defect types, sizes, unreadable files, duplicates."""
    data = data_folder(data)
    check_writable(json_out, "--json", overwrite=overwrite)
    flat = labels is None and manifest is None and is_folder_of_images(data)
    if flat:
        console.print(
            f"{data} holds images but no class folders: they are measured as one unlabelled group, taken for goods; to train, put "
            f"the good ones in {data}/good/ and the defective ones in {data}/<defect class>/, or pass --labels CSV",
            markup=False,
            highlight=False,
        )
    facts = inspect_dataset(unlabelled(data) if flat else discover(data, normal_class, labels, manifest))
    for table in inspection_tables(facts):
        console.print(table)
    if facts["skipped_files"]:
        console.print(f"skipped {len(facts['skipped_files'])} file(s) that are not images")
    if facts["misshapen_masks"]:
        first = facts["misshapen_masks"][0]
        console.print(
            f"warning: {len(facts['misshapen_masks'])} mask(s) have another shape than their image (first: {first['path']}, "
            f"{first['mask']} against {first['image']}): masks are resized onto their image, so these outline the wrong pixels; "
            "give each image its own mask (--json lists them)",
            style="yellow",
            markup=False,
            highlight=False,
        )
    for key, what in (("empty_masks", "mark nothing"), ("masks_marking_most", "mark most of their image (drawn black on white?)")):
        if facts[key]:
            console.print(
                f"warning: {len(facts[key])} defect mask(s) {what} (first: {facts[key][0]}): a mask is white (or any bright value) "
                "where the defect is, black elsewhere; eval's pixel figures and the pixel head learn from them (--json lists them)",
                style="yellow",
                markup=False,
                highlight=False,
            )
    if facts["taken_differently"]:
        console.print(f"warning: {facts['taken_differently']}", style="yellow", markup=False, highlight=False)
    depth = facts["bit_depth"]
    if depth:
        console.print(f"bit depth: {depth['reason']}", markup=False, highlight=False)
    if depth and depth["warning"]:
        console.print(f"warning: {depth['warning']}", style="yellow", markup=False, highlight=False)
    if depth and depth["saturated"]:
        console.print(
            f"warning: {len(depth['saturated'])} image(s) go beyond the goods' {depth['described']} (first: {depth['saturated'][0]}): "
            "their brightest or darkest parts saturate; add goods like them to the training images (--json lists them)",
            style="yellow",
            markup=False,
            highlight=False,
        )
    if json_out:
        write_json(json_out, facts, overwrite)
        console.print(f"facts written to {json_out}")
