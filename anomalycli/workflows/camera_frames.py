"""What ``anomaly station`` and ``anomaly watch --camera`` both do with a camera's frames: take them
in the order they came (dropped ones as error markers among them), judge one, keep its image in the
archive. No PyTorch here, as in both."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from anomalycli.data import pixel_formats
from anomalycli.data.bit_depth import OWN_SCALES, Windows
from anomalycli.data.images import load_image, resized_array, to_rgb
from anomalycli.deploy.archive import Archive, ArchivePolicy
from anomalycli.deploy.camera.acquisition import Acquisition
from anomalycli.deploy.camera.frames import Frame
from anomalycli.deploy.line import Judged, Line
from anomalycli.deploy.scoring import scored_row
from anomalycli.views.heatmaps import map_scale, overlay

# Journal columns a frame adds to a row: the camera's frame ID and timestamp, and the archived file.
FRAME_COLUMNS = ("frame_id", "frame_timestamp_ns", "archived")


def archive_of(section: dict | None, say) -> Archive | None:
    """The archive an [archive] section (``sections.archive``) describes, opened; None without one."""
    if not section:
        return None
    keys = ("keep_good_every", "max_bytes", "max_files", "max_age_days", "min_free_mb")
    return Archive(ArchivePolicy(Path(section["path"]), **{k: section[k] for k in keys}), say)


def video_read_after(url: str, last_row: dict | None) -> int:
    """The last frame of the video file ``url`` a journal holds (its last row's, where that row is
    of this file), so that a restart reads on after it; 0 where none is."""
    last = last_row or {}
    of_this_file = str(last.get("path", "")).startswith(url + "/")
    return int(last["frame_id"]) if of_this_file and str(last.get("frame_id", "")).isdigit() else 0


def next_frames(acquisition: Acquisition, timeout: float) -> list[tuple[Frame, bool]]:
    """The frames to judge now, in the order they came: (frame, dropped) each; the markers of frames
    dropped before the next frame first, then that frame (waiting ``timeout`` for it)."""
    frame, dropped = acquisition.get(timeout), acquisition.dropped
    out = []
    # By arrival, then by ID: a frame the camera lost comes with the next one's arrival time, and
    # that next one may be dropped (a full queue) while the lost one's marker is judged.
    while dropped and (frame is None or (dropped[0].arrived, dropped[0].frame_id) <= (frame.arrived, frame.frame_id)):
        out.append((dropped.popleft(), True))
    if frame is not None:
        out.append((frame, False))
    return out


def frame_name(frame: Frame) -> str:
    """A frame's name in the journal: its camera and frame ID."""
    return f"{frame.camera}/frame {frame.frame_id}"


def judge_frame(line: Line, frame: Frame) -> tuple[Judged, list[str]]:
    """The frame judged by ``line`` (a frame without an image: its error), and the lines to say."""
    name = frame_name(frame)
    if frame.image is None:
        return Judged(name, scored_row(Path(name), float("nan"), float("nan"), frame.error, 0.5), 1000 * (time.monotonic() - frame.arrived)), []
    pixels = resized_array(frame.image, line.image_size, line.framing, frame_windows(line, frame)).transpose(2, 0, 1)
    (judged,), said = line.judge([name], pixels[None], [""], [frame.arrived], [frame.image.size] if line.wants_sizes else None)
    return judged, said


def frame_windows(line: Line, frame: Frame) -> Windows:
    """The windows ``line``'s model reads ``frame``'s 16-bit image on (``pixel_formats.frame_windows``)."""
    return pixel_formats.frame_windows(frame.pixel_format, line.windows)


def keep(
    archive: Archive | None,
    image: Image.Image | Path | None,
    judged: Judged,
    line: Line,
    heatmaps: bool,
    part_id="",
    recipe="",
    image_windows: Windows = OWN_SCALES,
) -> str:
    """The part's image kept where the archive's policy says, with its heat map beside a flagged one
    where ``heatmaps`` (a frame's image read on ``image_windows``: ``frame_windows``); its name in the
    archive, or "". The map is let go either way."""
    if archive is None or image is None:
        judged.scored.map = None
        return ""
    heatmap = None
    if heatmaps and judged.verdict == "anomaly" and judged.scored.map is not None:
        # a frame is scaled by its own pixel format's bits; a file by the model's (data/bit_depth.py)
        pixels = load_image(image, line.windows) if isinstance(image, Path) else to_rgb(image, image_windows)
        heatmap = overlay(pixels, judged.scored.map, map_scale(line.model), flagged=True)
    judged.scored.map = None
    return archive.keep(image, judged.verdict, judged.scored.score, part_id, recipe, heatmap)
