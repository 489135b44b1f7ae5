from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from anomalycli.cli.common import user_errors
from anomalycli.deploy.camera.genicam_camera import list_cameras


@user_errors
def cameras_command(
    cti: Path = typer.Option(..., "--cti", metavar="FILE.cti", help="The GenTL producer of the camera's vendor (a .cti file from its SDK)."),
    as_json: bool = typer.Option(False, "--json", help="As JSON, one object a camera."),
) -> None:
    """List the GenICam cameras a GenTL producer sees: index, serial number, model, vendor.

    Put one in the station file's [source.camera] by serial (or model, or index).
    """
    found = list_cameras(cti)
    if as_json:
        sys.stdout.write(json.dumps(found, indent=1) + "\n")
        return
    if not found:
        sys.stdout.write(f"{cti}: no cameras; check the camera's power and cable, and that no other program holds it\n")
        raise typer.Exit(1)
    for camera in found:
        sys.stdout.write(f"{camera['index']}: serial {camera['serial']}  model {camera['model']}  vendor {camera['vendor']}  id {camera['id']}\n")
