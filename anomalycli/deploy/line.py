"""The core that ``watch`` and ``serve`` share: a model loaded once and kept warm, judging images
as they come, exactly as ``predict`` does (the same loading, engine, threshold and scoring), with
the drift check running on the stream.

No PyTorch here: with an int8 or exported model, a resident process starts in about a second.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomalycli import files, project
from anomalycli.data.bit_depth import windows_of
from anomalycli.data.framing import SQUASH, framing_of
from anomalycli.deploy import journal, loading, onnx_model
from anomalycli.deploy.regions import judge_regions, min_area_of, pixel_threshold_of
from anomalycli.deploy.scoring import Scored, score_decoded
from anomalycli.errors import UsageError
from anomalycli.judgement import drift
from anomalycli.judgement.localisation import Region, regions


@dataclass
class Judged:
    """One image's verdict on the line, with what its journal row and answer need."""

    name: str  # the path below the watched folder, or the name a client gave
    scored: Scored
    latency_ms: float  # from the image's arrival to its verdict
    bytes: str = ""  # the file's size and modification time: its identity in the journal
    mtime_ns: str = ""
    regions: list[Region] | None = None  # the defect regions, where asked for

    @property
    def verdict(self) -> str:
        """normal | anomaly | error (predict's "unreadable")."""
        return "error" if self.scored.verdict == "unreadable" else self.scored.verdict

    def row(self) -> dict:
        s = self.scored
        return {
            "time": journal.now(),
            "path": self.name,
            "score": _number(s.score),
            "raw_score": _number(s.raw),
            "verdict": self.verdict,
            "error": s.error,
            "bytes": self.bytes,
            "mtime_ns": self.mtime_ns,
            "latency_ms": f"{self.latency_ms:.1f}",
            "regions": "" if self.regions is None else len(self.regions),
            "largest_area_px": f"{self.regions[0].area_px:.1f}" if self.regions else "",
        }


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


class Line:
    """The model of ``model_path`` on ``engine``, warm; ``judge`` scores decoded images."""

    def __init__(
        self,
        model_path: Path,
        engine: str = "auto",
        threshold: float = 0.5,
        with_maps: bool = False,
        with_regions: bool = False,
        calls_in_flight: int = 1,
    ):
        """``calls_in_flight``: images a scoring graph scores at once when ``judge`` is given several (a
        burst's batch), each on its share of the cores; one image alone keeps every core."""
        self.model_path = project.model_file(model_path)
        model = loading.load(model_path, engine)
        self.pixel_threshold, self.min_area = pixel_threshold_of(model), min_area_of(model)
        if with_regions and self.pixel_threshold is None:
            raise UsageError("this model has no pixel threshold (a classifier, or trained before regions existed); train it again for --regions")
        self.with_regions = with_regions
        # The size rule decides verdicts from the regions: the maps are made for it, asked or not.
        self.with_maps = (with_maps or with_regions or bool(self.min_area)) and model.has_maps
        self.model, self.engine_lines = loading.on_engine(model, engine, 1_000_000, self.with_maps)
        self.model = onnx_model.in_bursts(self.model, calls_in_flight)
        self.threshold = threshold
        self.image_size = int(self.model.config["image_size"])
        self.framing, self.windows = framing_of(self.model.config), windows_of(self.model.config)
        self.drift = drift.Rolling(self.model, str(model_path))
        self.identity = {
            "file": self.model_path.name,
            "sha256": files.file_sha256(self.model_path)[:16],
            "method": self.model.method,
            "threshold": threshold,
            "raw_threshold": float(self.model.calibration.raw_threshold(threshold)),
            "engine": self.engine_lines[0].removeprefix("runs on: "),
            **({"min_area_px": self.min_area} if self.min_area else {}),
        }
        self.warm()

    @property
    def makes_regions(self) -> bool:
        """Whether ``judge`` makes regions (asked for, or for the size rule)."""
        return self.with_regions or bool(self.min_area)

    @property
    def wants_sizes(self) -> bool:
        """Whether ``judge`` wants each image's own size: for its regions, or to bring a letterboxed map to the image's frame."""
        return self.makes_regions or (self.with_maps and self.framing != SQUASH)

    def warm(self) -> None:
        """Score one blank image: the first call of a session allocates its buffers (tens of ms)."""
        blank = np.zeros((1, 3, self.image_size, self.image_size), np.uint8)
        score_decoded(self.model, [Path("warm-up")], blank, [""], self.threshold, self.with_maps)
        if self.makes_regions:  # labelling imports SciPy's ndimage (0.3 s): now, not at the first defect
            regions(np.ones((2, 2)), 0.0)

    def judge(
        self,
        names: list[str],
        images: np.ndarray,
        errors: list[str],
        arrived: list[float],
        sizes: list[tuple[int, int] | None] | None = None,
        saved_as: list[str | None] | None = None,
    ) -> tuple[list[Judged], list[str]]:
        """Verdicts for decoded images (uint8 B x 3 x S x S; ``errors``: '' where decoded; ``arrived``:
        each one's time.monotonic() of arrival; ``sizes``: each one's own (width, height), where
        ``wants_sizes``; ``saved_as``: how each file was saved, ``encoding.encoding_of``, where it
        was a file), and the drift check's lines where its state changed."""
        scored = score_decoded(self.model, [Path(n) for n in names], images, errors, self.threshold, self.with_maps, sizes)
        found = [None] * len(scored)
        if self.makes_regions:  # the size rule's verdicts need them; the rows only where asked
            made = [judge_regions(s, self.pixel_threshold, self.min_area, size) for s, size in zip(scored, sizes or [None] * len(scored))]
            found = made if self.with_regions else found
        done = time.monotonic()
        judged = [Judged(n, s, 1000 * (done - t), regions=r) for n, s, t, r in zip(names, scored, arrived, found)]
        saved_as = saved_as or [None] * len(judged)
        said = [line for j, how in zip(judged, saved_as) if j.verdict != "error" and (line := self.drift.add(j.scored.raw, j.scored.stats, how))]
        return judged, said

    def drift_state(self) -> dict:
        report = self.drift.report
        return {"state": self.drift.state, "message": report.message, "images": len(self.drift.raw), "time": journal.now()}
