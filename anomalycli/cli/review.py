from __future__ import annotations

import secrets
import webbrowser
from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import ENGINE_HELP, model_and_target, user_errors
from anomalycli.cli.render import console, err_console
from anomalycli.data.images import list_source
from anomalycli.deploy.engines import load_model
from anomalycli.deploy.http_api import listening_socket
from anomalycli.errors import UsageError, UserError
from anomalycli.views import review_labels, review_server


@user_errors
def review_command(
    args: Optional[list[Path]] = typer.Argument(
        None,
        metavar="[MODEL] SOURCE",
        help="Model file or run folder (default: the newest runs/train-N), then the images: a folder or a .txt list of paths, as predict takes.",
    ),
    model_option: Optional[Path] = typer.Option(None, "--model", help="Model file or run folder (default: the newest runs/train-N)."),
    labels: Optional[Path] = typer.Option(
        None, help="Labels CSV every decision is saved to (default: SOURCE-labels.csv beside SOURCE); reopening continues it."
    ),
    into: Optional[Path] = typer.Option(None, help="Copy the reviewed images into this data set's class folders (never overwriting a file) and stop; no page."),
    port: int = typer.Option(0, help="Port to serve on (default: a free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: this machine only)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Only print the address; do not open a browser."),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
) -> None:
    """Look at what the model flagged in the browser, mark each image good or defective, and save it as a labels CSV.

    Then: anomaly calibrate MODEL SOURCE --labels FILE for a new threshold, or --into DATA to add
    the reviewed images to the training data of the next anomaly train.
    """
    model_path, source = model_and_target(args, model_option, "SOURCE")
    if source is None:
        raise UsageError("give the images to review, a FOLDER or a .txt list of paths: anomaly review [MODEL] SOURCE")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (got {port})")
    labels = labels or review_labels.default_labels_path(source)
    if labels.suffix.lower() != ".csv":
        raise UsageError(f"--labels must end in .csv (got {labels.name})")
    if into is not None:
        _copy(labels, source, into, model_path)
        return
    review_server.require_starlette()
    model = load_model(model_path, engine)
    paths, _, base = list_source(source)
    if not paths:
        raise UserError(f"no images found in {source}")
    store = review_labels.LabelStore(labels, model.config["normal_class"], model.config["class_names"][1])
    store.read()  # a labels file of another kind is refused before any scoring
    sock = listening_socket(host, port, "--port")  # before the scoring: a port taken is said at once
    port = sock.getsockname()[1]
    items, note = review_server.scored_items(model, paths, base, engine)
    if note:
        err_console.print(note, highlight=False, markup=False, soft_wrap=True)
    state = review_server.Review(items, store, model, model.config.get("defect_types", []), model.calibration.raw_threshold(0.5))
    token = secrets.token_urlsafe(16)
    address = f"http://{host}:{port}/?token={token}"
    flagged = sum(i.verdict == "anomaly" for i in items)
    console.print(f"{len(items)} images scored, {flagged} flagged; decisions are saved to {labels}")
    if host != "127.0.0.1":
        err_console.print(f"warning: serving on {host}: anyone who can reach port {port} and knows the address below can label these images", highlight=False)
    console.print(f"review at {address}  (Ctrl-C to stop)", highlight=False, soft_wrap=True)
    if not no_browser:
        webbrowser.open(address)
    review_server.serve(review_server.make_app(state, token), sock)
    console.print(f"review stopped; {len(store.read())} decisions in {labels}")


def _copy(labels: Path, source: Path, into: Path, model_path: Path) -> None:
    if not labels.is_file():
        raise UserError(f"no decisions to copy: {labels} does not exist; review SOURCE first (or pass --labels FILE)")
    normal_class = load_model(model_path).config["normal_class"]
    base = source.parent if source.is_file() else source
    report = review_labels.copy_into(labels, base, into, normal_class)
    console.print(
        f"{report.copied} reviewed image(s) copied into {into} ({report.already_there} already there"
        + (f", {report.missing} missing from {base}" if report.missing else "")
        + "); train on it with: anomaly train "
        + str(into)
    )
