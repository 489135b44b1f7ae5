"""``anomaly serve``: the model kept warm behind an HTTP API (``deploy.http_api``), on uvicorn.

Bound to this machine (127.0.0.1) by default. Bound to any other address, every request but
/health needs a token: the one given, or one made here and printed once.
"""

from __future__ import annotations

import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from anomalycli.deploy.http_api import MAX_BODY_MB, listening_socket, make_app
from anomalycli.deploy.journal import Journal
from anomalycli.deploy.line import Line
from anomalycli.errors import UsageError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    journal: Path | None = None
    threshold: float = 0.5
    max_body_mb: float = MAX_BODY_MB
    regions: bool = False  # each answer lists the image's defect regions (maps: about 8 % more time)


def check_options(options: ServeOptions) -> None:
    if not 0 < options.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535 (got {options.port})")
    if options.journal is not None and options.journal.suffix.lower() != ".csv":
        raise UsageError(f"--journal must end in .csv (got {options.journal.name})")
    if options.max_body_mb <= 0:
        raise UsageError(f"--max-body-mb must be above 0 (got {options.max_body_mb:g})")
    if options.token is not None and len(options.token) < 16:
        raise UsageError("--token must be at least 16 characters (or leave it out: serve makes one)")


def serve(model_path: Path, engine: str, options: ServeOptions, say: Callable[[str], None]) -> None:
    """Load and warm the model, then answer until SIGTERM or Ctrl-C."""
    import uvicorn

    check_options(options)
    line = Line(model_path, engine, options.threshold, with_regions=options.regions)
    sock = listening_socket(options.host, options.port, "--port")
    journal = Journal(options.journal) if options.journal is not None else None
    token = options.token
    if token is None and options.host not in LOCAL_HOSTS:
        token = secrets.token_urlsafe(24)
        say(f"token: {token}  (bound to {options.host}: send it as 'Authorization: Bearer TOKEN'; --token sets your own)")
    for text in line.engine_lines:
        say(text)
    identity = line.identity
    say(
        f"serving {identity['file']} ({identity['method']}, sha256 {identity['sha256']}, threshold {identity['threshold']:g}) "
        f"at http://{options.host}:{options.port}: POST /predict, GET /health, GET /metrics; Ctrl-C or SIGTERM stops"
    )
    app = make_app(line, journal, token, options.max_body_mb, say)
    # uvicorn stops gracefully on SIGTERM or Ctrl-C, then raises the signal again with the handler
    # found at its start: this one lets the stop end as a clean exit (status 0).
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda signum, frame: None)
    try:
        uvicorn.Server(uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False)).run(sockets=[sock])
    finally:
        if journal is not None:
            journal.close()
    say("stopped")
