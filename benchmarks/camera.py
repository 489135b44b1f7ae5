"""Straight from the camera: the station judging a GenICam camera's frames, and its archive over a long run.

On the first data set's default model (``anomaly train DATA``), ``anomaly station`` as a line starts
it, its frames from genicam's GenTL producer simulator (``viky.cti``, 400 x 400 Mono8):
- throughput: the camera free-running faster than any model judges (100 frames a second): the
  frames judged a second (the rest dropped, each an error row), against ``anomaly predict`` of
  the same number of the camera's frames saved as PNG (whole process);
- latency, the camera at 10 frames a second: a frame's arrival to its verdict (the journal's
  ``latency_ms``), against predict's time an image (start-up taken out) + 10 ms;
- the archive under a long run: a video file (``[source.video]``) of 20,000 parts (the synthetic
  parts of ``data.synthetic``, 64 px, about 6 % defective; a 64 px model fitted on them), every part
  judged with an archive of a small byte budget: the archive within it at the end, every flagged
  part's image kept, every row's archived file there, and the station's memory from start to end.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import anomaly_command, csv_rows, rss_mib, run_measured, wait_until
from benchmarks.speed import fit_process
from benchmarks.station import _start, _stop, predict_per_image

TITLE = "Straight from the camera: frames judged, and the archive over a long run"
COUNTS = {"seconds": 20, "latency": 100, "pngs": 200, "parts": 20_000}
QUICK_COUNTS = {"seconds": 3, "latency": 10, "pngs": 10, "parts": 300}
ARCHIVE_BYTES = 15_000_000
ARCHIVE_GOOD_EVERY = 10


def viky() -> Path:
    import genicam

    return Path(genicam.__file__).with_name("viky.cti")


def _station(folder: Path, model: Path, source: list[str], extra: list[str] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[source]", *source, "[recipes]", f'1 = "{model}"', "[journal]", 'path = "verdicts.csv"', *extra]
    path = folder / "station.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _camera_source(fps: float) -> list[str]:
    return ["[source.camera]", f'cti = "{viky()}"', 'serial = "0"', "[source.camera.features]", 'PixelFormat = "Mono8"', f"AcquisitionFrameRate = {fps}"]


def throughput(model: Path, tmp: Path, seconds: float) -> dict:
    path = _station(tmp / "throughput", model, _camera_source(100.0))
    station = _start(path)
    time.sleep(seconds)
    _stop(station)
    rows = csv_rows(path.parent / "verdicts.csv")
    judged = [r for r in rows if r["error_code"] == "0"]
    span = _seconds(judged[-1]["time"]) - _seconds(judged[0]["time"])
    return {"camera_fps_judged": (len(judged) - 1) / span, "camera_frames_dropped": len(rows) - len(judged), "camera_frames": len(rows)}


def frames_as_png(folder: Path, n: int) -> list[Path]:
    """``n`` of the simulator's frames, saved as PNG as a camera program would."""
    from anomalycli.deploy.camera.genicam_camera import GenICamCamera

    folder.mkdir(parents=True)
    camera = GenICamCamera(viky(), serial="0", features={"PixelFormat": "Mono8", "AcquisitionFrameRate": 100.0})
    camera.open()
    paths = []
    try:
        while len(paths) < n:
            frame = camera.grab(2.0)
            if frame is not None and frame.image is not None:
                paths.append(folder / f"{len(paths):05d}.png")
                frame.image.save(paths[-1])
    finally:
        camera.close()
    return paths


def latency(model: Path, tmp: Path, n: int) -> dict:
    path = _station(tmp / "latency", model, _camera_source(10.0))
    station = _start(path)
    wait_until(lambda: len(csv_rows(path.parent / "verdicts.csv")) >= n, 60 + n)
    _stop(station)
    rows = [r for r in csv_rows(path.parent / "verdicts.csv") if r["error_code"] == "0"]
    times = [float(r["latency_ms"]) for r in rows]
    return {"latency_median_ms": statistics.median(times), "latency_p99_ms": float(np.percentile(times, 99)), "latency_n": len(times)}


def write_video(path: Path, parts: int, seed: int = 0) -> tuple[Path, Path]:
    """A video of ``parts`` frames cycling through synthetic parts (64 px, about 6 % defective, in a
    shuffled order), and the data set they come from (to fit a model on)."""
    import cv2
    from PIL import Image

    from anomalycli.data.synthetic import make_dataset

    data = make_dataset(path.parent / "parts", n_good=100, n_per_defect=3, size=64, seed=seed)
    images = sorted(p for p in data.rglob("*.png") if "mask" not in p.name)
    frames = [cv2.cvtColor(np.asarray(Image.open(p).convert("RGB")), cv2.COLOR_RGB2BGR) for p in images]
    order = np.random.default_rng(seed).integers(0, len(frames), parts)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    for i in order:
        writer.write(frames[i])
    writer.release()
    return path, data


def long_run(tmp: Path, parts: int) -> dict:
    video, data = write_video(tmp / "long" / "line.avi", parts)
    subprocess.run(anomaly_command("train", str(data), "--image-size", "64", "--run-dir", str(tmp / "long" / "run")), check=True, capture_output=True)
    model = tmp / "long" / "run" / "model.safetensors"
    archive = [
        "[archive]",
        'path = "archive"',
        f"keep_good_every = {ARCHIVE_GOOD_EVERY}",
        f"max_bytes = {ARCHIVE_BYTES}",
        "min_free_mb = 100",
    ]
    path = _station(tmp / "long" / "station", model, [f'[source.video]\nurl = "{video}"\nqueue = 64'], archive)
    started = time.perf_counter()
    station = _start(path)
    journal = path.parent / "verdicts.csv"
    wait_until(lambda: journal.exists() and len(csv_rows(journal)) >= 200, 120)
    memory_early = rss_mib(station.pid)
    wait_until(lambda: len(csv_rows(journal)) >= parts, 60 + parts)
    memory_end = rss_mib(station.pid)
    seconds = time.perf_counter() - started
    _stop(station)
    rows = csv_rows(journal)
    root = path.parent / "archive"
    on_disk = [p for p in root.glob("*/*") if p.is_file()]
    flagged = [r for r in rows if r["verdict"] == "anomaly"]
    archived = [r for r in rows if r["archived"]]
    return {
        "long_parts": len(rows),
        "long_seconds": seconds,
        "long_flagged": len(flagged),
        "long_flagged_kept": sum((root / r["archived"]).is_file() for r in flagged if r["archived"]),
        "long_archived_rows": len(archived),
        "long_archived_present": sum((root / r["archived"]).is_file() for r in archived),
        "long_gone_not_good": sum(not (root / r["archived"]).is_file() and r["verdict"] != "normal" for r in archived),
        "long_unnamed_files": len({p.relative_to(root).as_posix() for p in on_disk if ".heatmap." not in p.name} - {r["archived"] for r in archived}),
        "long_archive_bytes": sum(p.stat().st_size for p in on_disk),
        "long_archive_files": len(on_disk),
        "long_memory_early": memory_early,
        "long_memory_end": memory_end,
        "long_frame_ids_in_order": [int(r["frame_id"]) for r in rows] == list(range(1, len(rows) + 1)),
    }


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def run(data: Path, quick: bool, log=print) -> dict:
    counts = QUICK_COUNTS if quick else COUNTS
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        tmp = Path(tmp)
        fit_process(data, tmp / "run", *(("--image-size", "64") if quick else ()))
        model = tmp / "run" / "model.safetensors"
        out = {"data": data.name}
        out.update(throughput(model, tmp, counts["seconds"]))
        pngs = frames_as_png(tmp / "pngs", counts["pngs"])
        seconds, _ = run_measured(anomaly_command("predict", str(model), str(tmp / "pngs"), "--output", str(tmp / "p.csv")))
        out["png_predict_fps"], out["pngs"] = len(pngs) / seconds, len(pngs)
        out["predict_per_image_ms"] = 1000 * predict_per_image(model, pngs[: counts["latency"]], tmp)
        log(
            f"  camera: {out['camera_fps_judged']:.1f} frames judged a second ({out['camera_frames_dropped']} of {out['camera_frames']} dropped); "
            f"predict of the frames as PNG {out['png_predict_fps']:.1f} images/s, {out['predict_per_image_ms']:.1f} ms an image"
        )
        out.update(latency(model, tmp, counts["latency"]))
        log(f"  camera: arrival to verdict {out['latency_median_ms']:.1f} ms median, {out['latency_p99_ms']:.1f} p99")
        out.update(long_run(tmp, counts["parts"]))
        log("  camera: long run: " + ", ".join(f"{k.removeprefix('long_')} {v}" for k, v in out.items() if k.startswith("long_")))
    return out


def headline(result: dict, data: str) -> dict:
    if result.get("data") != data:
        return {}
    r = result
    return {
        "camera (GenTL simulator, 400 x 400 Mono8): frames judged a second / predict of them as PNG, images/s": f"{r['camera_fps_judged']:.1f} / {r['png_predict_fps']:.1f}",
        "camera: a frame's arrival to its verdict, median; the bar (predict's time an image + 10 ms)": f"{r['latency_median_ms']:.1f} ms; "
        f"{r['predict_per_image_ms'] + 10:.1f} ms: {'met' if r['latency_median_ms'] <= r['predict_per_image_ms'] + 10 else 'not met'}",
        f"archive over {r['long_parts']:,} parts ({ARCHIVE_BYTES / 1e6:.0f} MB budget): bytes at the end / flagged kept / rows' files present": f"{r['long_archive_bytes'] / 1e6:.1f} MB / "
        f"{r['long_flagged_kept']} of {r['long_flagged']} / {r['long_archived_present']} of {r['long_archived_rows']}",
    }


def section(result: dict) -> str:
    r = result
    return "\n".join(
        [
            f"Model: {r['data']}'s default (`anomaly train`). Camera: genicam's GenTL producer simulator (`viky.cti`), 400 x 400 px, Mono8.",
            "",
            "| | |",
            "| --- | --- |",
            f"| frames judged a second, the camera at 100 frames a second (the rest dropped and journalled) | {r['camera_fps_judged']:.1f} ({r['camera_frames_dropped']} of {r['camera_frames']} frames dropped) |",
            f"| `anomaly predict` of {r['pngs']} of the camera's frames saved as PNG, whole process | {r['png_predict_fps']:.1f} images/s |",
            f"| predict's time an image (its start-up taken out) | {r['predict_per_image_ms']:.1f} ms |",
            f"| a frame's arrival to its verdict, the camera at 10 frames a second, median / p99 (n={r['latency_n']}) | {r['latency_median_ms']:.1f} / {r['latency_p99_ms']:.1f} ms |",
            f"| the archive over a long run: parts judged from a video file, in s | {r['long_parts']:,} in {r['long_seconds']:.0f} s; frame IDs 1..N in order: {r['long_frame_ids_in_order']} |",
            f"| the archive's policy | every flagged and error image, one good in {ARCHIVE_GOOD_EVERY}, at most {ARCHIVE_BYTES / 1e6:.0f} MB, heat maps beside the flagged |",
            f"| the archive at the end: bytes / files | {r['long_archive_bytes'] / 1e6:.1f} MB / {r['long_archive_files']} |",
            f"| flagged parts whose image is kept / rows whose archived file is there (the rest: good images let go for the budget) / "
            f"files let go that were not good / files no row names | {r['long_flagged_kept']} of {r['long_flagged']} / "
            f"{r['long_archived_present']} of {r['long_archived_rows']} / {r['long_gone_not_good']} / {r['long_unnamed_files']} |",
            f"| the station's resident memory at the 200th part / at the end | {r['long_memory_early']:.0f} / {r['long_memory_end']:.0f} MiB |",
        ]
    )
