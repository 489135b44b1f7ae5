"""``anomaly watch --camera SOURCE.toml``: judge a camera's frames (or a video's) as they come, each a
journal row, with no program and no folder in between.

SOURCE.toml holds the station file's own sections: [source.camera] (a GenICam camera: free-running
or hardware-triggered; software triggers come from a PLC, through ``anomaly station``) or
[source.video], and optionally [archive]. Frames are taken, judged and journalled in the order they
came; a frame lost, incomplete or dropped (frames faster than the model) is an error row, never
silence. The journal is the watch's with the frame's ID, timestamp and archived file; a video file
is read on from its last frame there, so a watch killed and started again judges no frame twice.
No PyTorch here, as for the watch of a folder.
"""

from __future__ import annotations

import collections
import sys
import threading
from pathlib import Path
from typing import Callable

from anomalycli.deploy import journal as journals
from anomalycli.deploy.camera.acquisition import Acquisition
from anomalycli.deploy.camera.genicam_camera import GenICamCamera
from anomalycli.deploy.camera.video import VideoCamera
from anomalycli.deploy.line import Line
from anomalycli.deploy.station import sections
from anomalycli.errors import UsageError, UserError
from anomalycli.workflows.camera_frames import FRAME_COLUMNS, archive_of, frame_windows, judge_frame, keep, next_frames, video_read_after

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

COLUMNS = (*journals.COLUMNS, *FRAME_COLUMNS)
KIND = "anomaly watch --camera"


def read_source(path: Path) -> tuple[dict | None, dict | None, dict | None]:
    """(camera, video, archive) of a source file, each checked; ``UserError`` with the first mistake."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"camera source file {path} does not exist; write one with [source.camera] or [source.video] (README: From the camera)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark (Notepad) is no TOML
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path.name} is not valid TOML: {exc}") from None
    mistakes: list[str] = []
    unknown = [k for k in raw if k not in ("source", "archive")]
    if unknown:
        mistakes.append(f"{path.name}: unknown section [{unknown[0]}]; a camera source file has [source.camera] or [source.video], and [archive]")
    source = raw.get("source", {}) if isinstance(raw.get("source", {}), dict) else {}
    camera, video = sections.camera(source, path.parent, path.name, mistakes), sections.video(source, path.name, mistakes)
    archive = sections.archive(raw.get("archive"), path.parent, path.name, mistakes)
    if (camera is None) == (video is None):
        mistakes.append(f"{path.name}: give one source: [source.camera] or [source.video]")
    if camera and camera["trigger"] == "software":
        mistakes.append(
            f'{path.name}: [source.camera] trigger = "software" takes a frame on a PLC\'s trigger: run it in anomaly station; watch takes "free" or "hardware"'
        )
    if mistakes:
        raise UserError(mistakes[0])
    return camera, video, archive


def watch_camera(
    model_path: Path,
    engine: str,
    source_file: Path,
    journal_path: Path,
    threshold: float,
    say: Callable[[str], None],
    stop: threading.Event,
    regions: bool = False,
) -> dict:
    """Judge the source's frames until ``stop`` is set; this run's counts."""
    if journal_path.suffix.lower() != ".csv":
        raise UsageError(f"--journal must end in .csv (got {journal_path.name})")
    camera, video, archive_section = read_source(source_file)
    heatmaps = bool(archive_section and archive_section["heatmaps"])
    line = Line(model_path, engine, threshold, with_maps=heatmaps, with_regions=regions)
    journal = journals.Journal(journal_path, COLUMNS, kind=KIND)
    archive = archive_of(archive_section, say)
    if camera:
        source, settings = GenICamCamera(Path(camera["cti"]), camera["index"], camera["serial"], camera["model"], camera["trigger"], camera["features"]), camera
    else:
        source, settings = VideoCamera(video["url"], video_read_after(video["url"], journal.last)), video
    acquisition = Acquisition(source, say, settings["queue"], settings["every"])
    counts = collections.Counter()
    for text in line.engine_lines:
        say(text)
    try:
        acquisition.start(wait=5.0)
        say(
            f"watching {source.name}; journal {journal_path} ({journal.rows} rows); model {line.identity['file']} (sha256 {line.identity['sha256']}); Ctrl-C or SIGTERM stops"
        )
        while not stop.is_set():
            for frame, _dropped in next_frames(acquisition, 0.1):
                judged, said = judge_frame(line, frame)
                archived = keep(archive, frame.image, judged, line, heatmaps, image_windows=frame_windows(line, frame))
                row = {**judged.row(), "frame_id": frame.frame_id, "frame_timestamp_ns": frame.timestamp_ns or "", "archived": archived}
                journal.append([row])
                journal.forget(lambda key: False)  # a frame never comes again
                counts["judged"] += 1
                counts[judged.verdict] += 1
                score = "" if judged.verdict == "error" else f" {judged.scored.score:.3f}"
                say(f"{judged.verdict}{score} {judged.name}" + (f" ({judged.scored.error})" if judged.scored.error else ""))
                for text in said:
                    say(text)
    finally:
        acquisition.stop()
        journal.close()
    say(f"stopped: {counts['judged']} frames judged in this run ({counts['anomaly']} flagged, {counts['error']} errors)")
    return dict(counts)
