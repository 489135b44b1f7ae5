"""``anomaly serve``'s HTTP API, a Starlette app over a warm ``line.Line``.

- ``POST /predict``: an image's bytes as the body (or a multipart form's first file) -> JSON with
  ``score``, ``raw_score``, ``verdict``, ``threshold`` and the model's identity: ``predict``'s
  numbers. A body that is no usable image gets a 4xx and ``{"error": ...}``; the server stays up.
- ``GET /health``: 200 and the model's identity (the app exists only once the model is warm).
- ``GET /metrics``: Prometheus' text format (``prometheus-client``), from a registry of this app's own.

Images decode in Starlette's thread pool, several at once; scoring, the drift window and the
journal take one image at a time (a lock), so answers never mix and the two cores are not
oversubscribed.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from anomalycli.data.encoding import encoding_of
from anomalycli.data.images import ImageError, original_size, read_image_array
from anomalycli.deploy.journal import Journal, JournalError
from anomalycli.deploy.line import Line
from anomalycli.errors import UserError


def listening_socket(host: str, port: int, option: str) -> socket.socket:
    """A socket bound to ``host``:``port`` for uvicorn to serve on, or one line saying why not and
    which ``option`` to change (uvicorn alone prints its own error after the server said it serves)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Named TCP, as asyncio's own sockets are: asyncio turns Nagle's algorithm off only on those, and
    # with it on every answer waited for the client's delayed ack (serve's requests 68 against 24 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another {option}") from None
    return sock


MAX_BODY_MB = 50  # the default largest body; a larger one gets 413 before it is read whole
DRIFT_STATES = {"ok": 0, "note": 1, "drift": 2}


class Metrics:
    """The counters ``/metrics`` shows, in a registry of their own (no process-wide state)."""

    def __init__(self, line: Line):
        self.registry = CollectorRegistry()
        self.judged = Counter("anomaly_images_judged", "Images judged, by verdict.", ["verdict"], registry=self.registry)
        self.rejected = Counter("anomaly_requests_rejected", "Requests answered with a 4xx, by status.", ["status"], registry=self.registry)
        self.latency = Histogram(
            "anomaly_judge_seconds",
            "From a request's body read to its verdict.",
            buckets=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.drift = Gauge("anomaly_drift_state", "The stream's drift check: 0 ok, 1 note, 2 drift.", registry=self.registry)
        Gauge("anomaly_model_threshold", "The decision threshold on the 0..1 score.", registry=self.registry).set(line.threshold)


def make_app(line: Line, journal: Journal | None = None, token: str | None = None, max_body_mb: float = MAX_BODY_MB, say=print) -> Starlette:
    """The app serving ``line``; every request but /health needs ``token`` where one is given
    (``Authorization: Bearer TOKEN`` or ``X-Token``)."""
    metrics = Metrics(line)
    lock = threading.Lock()
    max_bytes = int(max_body_mb * 2**20)

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("x-token") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return secrets.compare_digest(given.encode(), token.encode())

    def refuse(status: int, error: str) -> JSONResponse:
        metrics.rejected.labels(str(status)).inc()
        return JSONResponse({"error": error}, status_code=status)

    def judge(name: str, data: bytes, arrived: float) -> dict:
        pixels = read_image_array(name, line.image_size, data=data, framing=line.framing, windows=line.windows)  # ImageError: the caller's 400
        size = original_size(name, data) if line.wants_sizes else None
        with lock:
            (judged,), said = line.judge([name], pixels.transpose(2, 0, 1)[None], [""], [arrived], [size], [encoding_of(name, data)])
            if journal is not None:
                journal.append([judged.row()])
            metrics.judged.labels(judged.verdict).inc()
            metrics.latency.observe(judged.latency_ms / 1000)
            metrics.drift.set(DRIFT_STATES[line.drift.state])
        for text in said:
            say(text)
        s = judged.scored
        return {
            "name": name,
            "score": s.score,
            "raw_score": s.raw,
            "verdict": judged.verdict,
            "threshold": line.threshold,
            "raw_threshold": line.identity["raw_threshold"],
            "drift": line.drift.state,
            "latency_ms": round(judged.latency_ms, 2),
            "model": line.identity,
            **({"regions": [r.to_dict() for r in judged.regions]} if judged.regions is not None else {}),
            **({"passed_by_size": s.passed_by_size} if line.min_area else {}),
        }

    async def predict(request: Request):
        if not allowed(request):
            return refuse(401, "a token is needed: send the one anomaly serve printed as 'Authorization: Bearer TOKEN'")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return refuse(413, f"the body is {int(declared) / 2**20:.1f} MB, over the {max_body_mb:g} MB limit (--max-body-mb)")
        try:
            name, data = await _image_bytes(request, max_bytes)
        except _TooLarge:
            return refuse(413, f"the body is over the {max_body_mb:g} MB limit (--max-body-mb)")
        except ClientDisconnect:
            return refuse(400, "the client went away before the body was read")
        except ValueError as exc:
            return refuse(400, str(exc))
        if not data:
            return refuse(400, "the body is empty; send the image's bytes (or a multipart form with one file)")
        arrived = time.monotonic()
        try:
            answer = await run_in_threadpool(judge, name, data, arrived)
        except ImageError as exc:
            metrics.judged.labels("error").inc()
            return refuse(400, str(exc))
        except JournalError as exc:
            say(f"error: {exc}")
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(answer)

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": line.identity if allowed(request) else line.identity["file"]})

    async def metrics_page(request: Request):
        if not allowed(request):
            return refuse(401, "a token is needed: send the one anomaly serve printed as 'Authorization: Bearer TOKEN'")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health), Route("/metrics", metrics_page)])


class _TooLarge(Exception):
    pass


async def _image_bytes(request: Request, max_bytes: int) -> tuple[str, bytes]:
    """The request's image: (a name for rows and messages, its bytes). A multipart form's first
    file, else the whole body; the name from the form, an ``X-Image-Name`` header or "request"."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10, max_part_size=max_bytes)
        except Exception as exc:  # python-multipart's and Starlette's own parse errors
            raise ValueError(f"the multipart form cannot be read ({exc})") from None
        upload = next((v for v in form.values() if hasattr(v, "read")), None)
        if upload is None:
            raise ValueError("the multipart form has no file; send the image as a file field")
        data = await upload.read()
        if len(data) > max_bytes:
            raise _TooLarge
        return upload.filename or "request", data
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge
        chunks.append(chunk)
    return request.headers.get("x-image-name", "request")[:200], b"".join(chunks)
