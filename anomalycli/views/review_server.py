"""The review page's web layer: a Starlette app over ``review_labels.py``, served by uvicorn.

Starlette, not a hand-rolled ``http.server``: routing, request parsing, streaming responses and
a test client come from a well-kept library, and at about 1 MB with uvicorn it is the lightest
of the frameworks that give them (Flask would add a WSGI server; FastAPI adds pydantic on top of
Starlette for validation a handful of routes do not need). It is the optional extra
``anomalycli[review]``.

Every request needs the run's secret token (``?token=`` or the ``X-Review-Token`` header).
Images are addressed by their index in the scored list, never by a path from the request, so
nothing outside SOURCE can be asked for; names reach the page as JSON and are shown as text.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import secrets
import socket
from importlib import resources
from pathlib import Path

import numpy as np

from anomalycli.data.bit_depth import windows_of
from anomalycli.data.framing import framing_of
from anomalycli.data.images import ImageError, load_image, read_image_array
from anomalycli.deploy.engines import on_engine
from anomalycli.deploy.scoring import iter_scores, score_decoded
from anomalycli.errors import UserError
from anomalycli.views import review_labels
from anomalycli.views.heatmaps import map_scale, overlay

INSTALL_HINT = "pip install 'anomalycli[review]'"
PAGE_FILES = {
    "": ("review.html", "text/html; charset=utf-8"),
    "review.js": ("review.js", "text/javascript; charset=utf-8"),
    "review.css": ("review.css", "text/css; charset=utf-8"),
}
# Longest side of an image sent to the page: enough for a large view, quick to encode.
DISPLAY_SIZE = 1024


def require_starlette():
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        raise UserError(f"anomaly review serves a page with Starlette and uvicorn, which are not installed; run: {INSTALL_HINT}")


class Review:
    """What the page shows and changes: the scored items, their order, the decisions, the model's maps."""

    def __init__(self, items: list[review_labels.Item], store: review_labels.LabelStore, model, defect_types: list[str], raw_threshold: float):
        self.items, self.store, self.model = items, store, model
        self.order = review_labels.review_order(items)
        self.defect_types, self.raw_threshold = defect_types, raw_threshold
        self.scale = map_scale(model) if model.has_maps else None

    def listing(self) -> dict:
        decisions = self.store.read()
        rows = []
        for i in self.order:
            item = self.items[i]
            label, kind = decisions.get(item.name, ("", ""))
            rows.append(
                {
                    "index": i,
                    "name": item.name,
                    "score": None if math.isnan(item.score) else round(item.score, 4),
                    "verdict": item.verdict,
                    "uncertain": item.group == 1,
                    "label": label,
                    "defect_type": kind,
                }
            )
        return {
            "items": rows,
            "normal_class": self.store.normal_class,
            "defect_class": self.store.defect_class,
            "defect_types": self.defect_types,
            "raw_threshold": self.raw_threshold,
            "has_maps": self.scale is not None,
            "labels_file": str(self.store.path),
        }

    def decide(self, index: int, decision: str | None, defect_type: str = "") -> dict:
        item = self.items[index]
        decisions = self.store.decide(item.name, None if decision is None else decision == "defect", defect_type)
        label, kind = decisions.get(item.name, ("", ""))
        return {"index": index, "label": label, "defect_type": kind}

    def image_png(self, index: int, size: int = DISPLAY_SIZE) -> bytes:
        image = load_image(self.items[index].path, windows_of(self.model.config))
        image.thumbnail((size, size))
        return _png(image)

    def heatmap_png(self, index: int) -> bytes:
        path = self.items[index].path
        # As predict scores it: framed as the model frames images, the map in the image's own frame.
        windows = windows_of(self.model.config)
        pixels = read_image_array(path, self.model.config["image_size"], framing=framing_of(self.model.config), windows=windows)
        (scored,) = score_decoded(self.model, [path], pixels.transpose(2, 0, 1)[None], [""], with_maps=True)
        image = load_image(path, windows)
        image.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
        return _png(overlay(image, np.asarray(scored.map), self.scale, flagged=scored.verdict == "anomaly"))


def scored_items(model, paths: list[Path], base: Path, engine: str = "auto") -> tuple[list[review_labels.Item], str]:
    """Every image of the page scored by ``model`` where ``engine`` runs it, and that placement's
    note for the user ("" where none)."""
    scoring, note = on_engine(model, engine, len(paths), with_maps=False)
    return [review_labels.Item(relative_name(s.path, base), s.path, s.score, s.verdict) for s in iter_scores(scoring, paths)], note


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def make_app(state: Review, token: str):
    """The Starlette app serving ``state`` to whoever holds ``token``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def allowed(request) -> bool:
        given = request.query_params.get("token") or request.headers.get("x-review-token") or ""
        return secrets.compare_digest(given.encode(), token.encode())

    def guarded(handler):
        async def endpoint(request):
            if not allowed(request):
                return Response("a review token is needed: open the address anomaly review printed", status_code=403)
            return await handler(request)

        return endpoint

    def item_index(request) -> int | None:
        try:
            index = int(request.path_params["index"])
        except ValueError:
            return None
        return index if 0 <= index < len(state.items) else None

    async def page(request):
        name, media = PAGE_FILES.get(request.path_params.get("file", ""), (None, None))
        if name is None:
            return Response("not found", status_code=404)
        text = resources.files("anomalycli.views").joinpath("review_page", name).read_bytes()
        # The page's own links carry the token (URL-safe characters only) so its script and style load.
        return Response(text.replace(b"{{token}}", token.encode()), media_type=media, headers={"Cache-Control": "no-store"})

    async def listing(request):
        return JSONResponse(await run_in_threadpool(state.listing))

    async def image(request, heat: bool = False):
        index = item_index(request)
        if index is None:
            return Response("no such image", status_code=404)
        try:
            if heat:
                if state.scale is None:
                    return Response("this model has no anomaly maps", status_code=404)
                body = await run_in_threadpool(state.heatmap_png, index)
            else:
                size = min(max(int(request.query_params.get("size", DISPLAY_SIZE)), 32), DISPLAY_SIZE)
                body = await run_in_threadpool(state.image_png, index, size)
        except (ImageError, ValueError) as exc:
            return Response(f"cannot show this image: {exc}", status_code=422)
        return Response(body, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def heatmap(request):
        return await image(request, heat=True)

    async def decide(request):
        try:
            body = await request.json()
            index, decision = int(body["index"]), body.get("decision")
            defect_type = str(body.get("defect_type") or "")[:80]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {index, decision: good|defect|null, defect_type}"}, status_code=400)
        if not 0 <= index < len(state.items) or decision not in ("good", "defect", None):
            return JSONResponse({"error": "no such image or decision"}, status_code=400)
        try:
            return JSONResponse(await run_in_threadpool(state.decide, index, decision, defect_type))
        except UserError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)

    routes = [
        Route("/", guarded(page)),
        Route("/static/{file}", guarded(page)),
        Route("/api/items", guarded(listing)),
        Route("/api/image/{index}", guarded(image)),
        Route("/api/heatmap/{index}", guarded(heatmap)),
        Route("/api/decide", guarded(decide), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def serve(app, sock: socket.socket) -> None:
    """Serve on ``sock`` (bound before the images were scored: a port taken is one line, not a lost scoring) until Ctrl-C."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def relative_name(path: Path, base: Path) -> str:
    """``path`` below ``base``, where it lies (a link to an image elsewhere keeps its own name and
    folder: two links named alike stay two); its file name where it is not below."""
    try:
        return Path(os.path.normpath(path.absolute())).relative_to(os.path.normpath(base.absolute())).as_posix()
    except ValueError:
        return path.name
