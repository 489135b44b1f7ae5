from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from anomalycli import project
from anomalycli.cli.common import ENGINE_HELP, check_threshold, model_and_target, say_line, user_errors
from anomalycli.workflows import serve as line_serve


@user_errors
def serve_command(
    model: Optional[Path] = typer.Argument(None, metavar="[MODEL]", help="Model file or run folder (default: the newest runs/train-N)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: this machine only; any other needs a token)."),
    token: Optional[str] = typer.Option(
        None,
        help="The token clients send (Authorization: Bearer TOKEN) when bound elsewhere than 127.0.0.1 (default: $ANOMALY_TOKEN, else one made and printed).",
    ),
    journal: Optional[Path] = typer.Option(None, help="CSV every verdict is appended to, on disk before the answer is sent."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold on the 0..1 score (default: the model's, 0.5)."),
    max_body_mb: float = typer.Option(50, "--max-body-mb", help="The largest image body accepted (larger: 413)."),
    regions: bool = typer.Option(False, "--regions", help="Each answer lists the image's defect regions, in its own pixels (about 8 % more time)."),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
) -> None:
    """Judge images sent over HTTP (POST /predict), with /health and Prometheus /metrics, the model kept loaded.

    Send an image's bytes as the body (curl --data-binary @part.png http://127.0.0.1:8000/predict)
    or as a multipart file (curl -F file=@part.png ...); the answer is JSON.
    """
    model_path = project.model_file(model) if model is not None else model_and_target([], None, "")[0]
    options = line_serve.ServeOptions(host, port, token or os.environ.get("ANOMALY_TOKEN") or None, journal, check_threshold(threshold), max_body_mb, regions)
    line_serve.serve(model_path, engine, options, say_line)
