"""The station's ``/health`` and ``/metrics`` (Prometheus), as ``serve`` has them: thin, read-only.

``/health`` is the handshake's snapshot and the recipes' models; ``/metrics`` counts parts by
verdict and shows the state a line's monitoring watches (ready, the active recipe, results
waiting, overrun). Bound to 127.0.0.1 unless the station file says otherwise, and then every
request asks the file's token (``Authorization: Bearer TOKEN``).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from anomalycli.deploy.http_api import listening_socket
from anomalycli.deploy.station.handshake import Handshake
from anomalycli.errors import UserError


class StationMetrics:
    """The station's counters, in a registry of their own (no process-wide state)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.parts = Counter("anomaly_station_parts", "Parts judged, by verdict (OK, NG, error).", ["verdict"], registry=self.registry)
        self.ready = Gauge("anomaly_station_ready", "1 while the station is ready.", registry=self.registry)
        self.recipe = Gauge("anomaly_station_recipe_active", "The active recipe.", registry=self.registry)
        self.waiting = Gauge("anomaly_station_results_waiting", "Results waiting for the PLC.", registry=self.registry)
        self.overrun = Gauge("anomaly_station_overrun", "1 while results were dropped from the PLC's queue (the journal has them).", registry=self.registry)

    def counted(self, verdict: str) -> None:
        self.parts.labels(verdict).inc()


def make_app(handshake: Handshake, metrics: StationMetrics, models: Callable[[], dict], token: str | None = None) -> Starlette:
    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or request.headers.get("x-token", "")
        return given == token

    def refuse() -> JSONResponse:
        return JSONResponse({"error": "a token is needed: send the station file's [http] token as 'Authorization: Bearer TOKEN'"}, status_code=401)

    async def health(request: Request):
        if not allowed(request):
            return refuse()
        state = handshake.snapshot()
        return JSONResponse({"status": "ok" if state["ready"] else "not ready", "signals": state, "waiting": handshake.waiting(), "recipes": models()})

    async def prometheus(request: Request):
        if not allowed(request):
            return refuse()
        state = handshake.snapshot()
        metrics.ready.set(int(state["ready"]))
        metrics.recipe.set(state["recipe_active"])
        metrics.waiting.set(handshake.waiting())
        metrics.overrun.set(int(state["overrun"]))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/health", health), Route("/metrics", prometheus)])


class HttpServer:
    """uvicorn serving ``app`` on its own thread (``start``, ``stop``)."""

    def __init__(self, app: Starlette, host: str, port: int):
        import uvicorn

        self.host, self.port = host, port
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Serve, once listening; one line where the port is taken (the station does not run without it)."""
        sock = listening_socket(self.host, self.port, "[http] port")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="station-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise UserError(f"the station's HTTP server did not start on {self.host}:{self.port}; choose another [http] port")

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
