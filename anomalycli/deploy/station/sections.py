"""The station file's sections for where the images come from and what is kept of them:
[source.camera], [source.video] and [archive]. Each checked as ``config.parse`` checks the rest:
every mistake one line naming the key, appended to ``mistakes``."""

from __future__ import annotations

from pathlib import Path

from anomalycli.deploy.camera.genicam_camera import TRIGGERS

CAMERA_KEYS = {"cti", "index", "serial", "model", "trigger", "features", "every", "queue"}
VIDEO_KEYS = {"url", "every", "queue"}
CAMERA_TRIGGERS = TRIGGERS


def _whole_number(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _subsection(source: dict, section: str, known: set[str], name: str, mistakes: list[str]) -> dict | None:
    """[source.SECTION] as written, or None where absent or not a section; unknown keys are mistakes."""
    raw = source.get(section)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        mistakes.append(f"{name}: {section} must be a section, [source.{section}]")
        return None
    for key in raw:
        if key not in known:
            mistakes.append(f"{name}: unknown key {key} in [source.{section}]; it takes {', '.join(sorted(known))}")
    return raw


def camera(source: dict, base: Path, name: str, mistakes: list[str]) -> dict | None:
    """[source.camera], checked; its mistakes appended."""
    raw = _subsection(source, "camera", CAMERA_KEYS, name, mistakes)
    if raw is None:
        return None
    camera = {
        "cti": raw.get("cti"),
        "index": raw.get("index", 0),
        "serial": raw.get("serial"),
        "model": raw.get("model"),
        "trigger": raw.get("trigger", "free"),
        "features": raw.get("features", {}),
        "every": raw.get("every", 1),
        "queue": raw.get("queue", 8),
    }
    if not isinstance(camera["cti"], str) or not camera["cti"]:
        mistakes.append(f'{name}: [source.camera] needs cti = "PATH", the GenTL producer (.cti file) of the camera\'s vendor')
    else:
        camera["cti"] = str((base / camera["cti"]).resolve())
    if camera["trigger"] not in CAMERA_TRIGGERS:
        mistakes.append(f"{name}: [source.camera] trigger must be {', '.join(CAMERA_TRIGGERS)} (got {camera['trigger']!r})")
    if not _whole_number(camera["index"], 0):
        mistakes.append(f"{name}: [source.camera] index must be a whole number, 0 or more (got {camera['index']!r})")
    for key in ("serial", "model"):
        if camera[key] is not None and not isinstance(camera[key], str):
            mistakes.append(f'{name}: [source.camera] {key} must be text in quotes, e.g. {key} = "{camera[key]}"')
    if not isinstance(camera["features"], dict) or not all(isinstance(v, (bool, int, float, str)) for v in camera["features"].values()):
        mistakes.append(f"{name}: [source.camera.features] holds GenICam feature names and plain values, e.g. ExposureTime = 5000")
    for key in ("every", "queue"):
        if not _whole_number(camera[key], 1):
            mistakes.append(f"{name}: [source.camera] {key} must be a whole number, 1 or more (got {camera[key]!r})")
    return camera


def video(source: dict, name: str, mistakes: list[str]) -> dict | None:
    """[source.video], checked; its mistakes appended."""
    raw = _subsection(source, "video", VIDEO_KEYS, name, mistakes)
    if raw is None:
        return None
    video = {"url": raw.get("url"), "every": raw.get("every", 1), "queue": raw.get("queue", 8)}
    if not isinstance(video["url"], str) or not video["url"]:
        mistakes.append(f'{name}: [source.video] needs url = "rtsp://..." (a stream), a video file\'s path, or "0" (a USB camera\'s index)')
    for key in ("every", "queue"):
        if not _whole_number(video[key], 1):
            mistakes.append(f"{name}: [source.video] {key} must be a whole number, 1 or more (got {video[key]!r})")
    return video


def archive(raw, base: Path, name: str, mistakes: list[str]) -> dict | None:
    """[archive], checked; its mistakes appended."""
    if not isinstance(raw, dict):
        return None
    archive = {
        "path": raw.get("path", "archive"),
        "keep_good_every": raw.get("keep_good_every", 100),
        "max_bytes": raw.get("max_bytes"),
        "max_files": raw.get("max_files"),
        "max_age_days": raw.get("max_age_days"),
        "min_free_mb": raw.get("min_free_mb", 500),
        "heatmaps": raw.get("heatmaps", True),
    }
    if not isinstance(archive["path"], str) or not archive["path"]:
        mistakes.append(f'{name}: [archive] path must be a folder in quotes, e.g. path = "archive"')
    else:
        archive["path"] = str((base / archive["path"]).resolve())
    if not _whole_number(archive["keep_good_every"], 0):
        mistakes.append(f"{name}: [archive] keep_good_every must be a whole number: keep one good image in N (0: none)")
    for key, least in (("max_bytes", 1), ("max_files", 1)):
        if archive[key] is not None and not _whole_number(archive[key], least):
            mistakes.append(f"{name}: [archive] {key} must be a whole number, {least} or more (got {archive[key]!r})")
    for key in ("max_age_days", "min_free_mb"):
        value = archive[key]
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            mistakes.append(f"{name}: [archive] {key} must be a number, 0 or more (got {value!r})")
    if not isinstance(archive["heatmaps"], bool):
        mistakes.append(f"{name}: [archive] heatmaps must be true or false")
    return archive
