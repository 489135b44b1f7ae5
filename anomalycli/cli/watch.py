from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import ENGINE_HELP, check_threshold, model_and_target, say_line, user_errors
from anomalycli.errors import UsageError
from anomalycli.workflows import watch as line_watch
from anomalycli.workflows import watch_camera


@user_errors
def watch_command(
    args: Optional[list[Path]] = typer.Argument(
        None,
        metavar="[MODEL] INBOX",
        help="Model file or run folder (default: the newest runs/train-N), then the folder images arrive in (watched recursively).",
    ),
    journal: Optional[Path] = typer.Option(
        None, help="CSV every verdict is appended to, on disk before the image counts as judged; restarting with it judges each image once."
    ),
    model_option: Optional[Path] = typer.Option(None, "--model", help="Model file or run folder to use (default: the newest runs/train-N)."),
    sort_into: Optional[Path] = typer.Option(
        None, "--sort-into", help="Move each judged image to good/, anomaly/ or error/ in this folder (after its row is written)."
    ),
    keep_flagged: Optional[Path] = typer.Option(
        None, "--keep-flagged", help="Copy each flagged image to images/ and its heat map to heatmaps/ in this folder, for: anomaly review MODEL FOLDER/images"
    ),
    min_free: float = typer.Option(
        500, "--min-free", metavar="MB", help="Pause judging, with one line, while a disk the watch writes to has less free space than this."
    ),
    settle: float = typer.Option(
        3.0, metavar="SECONDS", help="An image that does not decode is written down as an error once it is this old (it may still be being written)."
    ),
    polling: bool = typer.Option(False, "--polling", help="Scan the folder twice a second instead of using the system's file events (network shares)."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold on the 0..1 score (default: the model's, 0.5)."),
    batch_size: int = typer.Option(8, help="The most images scored together when many arrive at once."),
    regions: bool = typer.Option(
        False, "--regions", help="Each row also counts the image's defect regions and gives the largest one's area (about 8 % more time)."
    ),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
    camera: Optional[Path] = typer.Option(
        None,
        "--camera",
        metavar="SOURCE.toml",
        help="Judge a camera's frames instead of a folder: a file with [source.camera] (GenICam) or [source.video], and [archive] (README: From the camera).",
    ),
) -> None:
    """Judge every image that arrives in a folder, once, as it arrives; each verdict a row in a journal.

    Stops cleanly on Ctrl-C or SIGTERM, after the image in hand; started again with the same
    journal, it judges what arrived meanwhile and nothing twice.
    """
    if camera is not None:
        _watch_camera(args, model_option, camera, journal, threshold, regions, engine)
        return
    model_path, inbox = model_and_target(args, model_option, "INBOX")
    if inbox is None:
        raise UsageError("give the folder to watch: anomaly watch [MODEL] INBOX --journal FILE.csv")
    if journal is None:
        raise UsageError("give the journal every verdict is written to: --journal FILE.csv (beside INBOX, not in it)")
    options = line_watch.WatchOptions(inbox, journal, sort_into, keep_flagged, min_free, settle, polling, check_threshold(threshold), batch_size, regions)
    line_watch.check_options(options)
    stop = threading.Event()
    with line_watch.stop_on_signals(stop):
        line_watch.watch(model_path, engine, options, say_line, stop)


def _watch_camera(args, model_option, camera: Path, journal, threshold, regions: bool, engine: str) -> None:
    model_path, target = model_and_target(args, model_option, "INBOX")
    if target is not None:
        raise UsageError("--camera judges the camera's frames: give the model only, not a folder as well")
    if journal is None:
        raise UsageError("give the journal every verdict is written to: --journal FILE.csv")
    stop = threading.Event()
    with line_watch.stop_on_signals(stop):
        watch_camera.watch_camera(model_path, engine, camera, journal, check_threshold(threshold), say_line, stop, regions)
