"""On the line: ``anomaly watch`` and ``anomaly serve`` with each set's default model, as a line runs them.

Per data set, on 1024 x 1024 PNG copies of its images (and on the images at their own size):
- latency, one image at a time: from the writer's close of the file to its journal row (the row's
  own time), median and p99 over ``LATENCY_IMAGES``;
- a burst of ``BURST`` images renamed into the watched folder at once: images/s until the last row,
  against one batch ``anomaly predict`` of the same images (whole process);
- HTTP: sequential requests (client's time, median and p99), and 4 clients at once (images/s);
- the journal's fsync: what writing one row costs with it and without it;
- crashes: images arriving while the watch is SIGKILLed at random moments and restarted; lost and
  repeated verdicts counted (both must be 0).
On the first set, memory: the watch's resident memory at the 500th and the last of ``COUNTS['memory']``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks.common import anomaly_command, csv_rows, rss_mib, run_measured, runs_table, samples_of, wait_until
from benchmarks.line_http import http
from benchmarks.speed import fit_process, upscaled_copies

TITLE = "On the line: `anomaly watch` and `anomaly serve`"
# How many images each measurement takes; --quick: a smoke run.
COUNTS = {"latency": 100, "burst": 1000, "http_sequential": 200, "http_concurrent": 400, "crash": 300, "memory": 20_000}
QUICK_COUNTS = {"latency": 10, "burst": 40, "http_sequential": 20, "http_concurrent": 20, "crash": 40, "memory": 400}


def _count(journal: Path) -> int:
    try:
        with open(journal, "rb") as handle:
            return max(0, handle.read().count(b"\n") - 1)
    except OSError:
        return 0


def _watch(model: Path, inbox: Path, journal: Path, *options: str) -> subprocess.Popen:
    process = subprocess.Popen(
        anomaly_command("watch", str(model), str(inbox), "--journal", str(journal), *options), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
        if line.startswith("watching "):
            break
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # keep its pipe drained
    return process


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)


def _write(source_bytes: bytes, target: Path) -> float:
    with open(target, "wb") as handle:
        handle.write(source_bytes)
    return time.time()


def _row_time(row: dict) -> float:
    return datetime.fromisoformat(row["time"]).timestamp()


def latency(model: Path, images: list[Path], tmp: Path, n: int) -> dict:
    inbox, journal = tmp / "latency-in", tmp / "latency.csv"
    inbox.mkdir(parents=True)
    process = _watch(model, inbox, journal)
    seconds = []
    try:
        for i, path in enumerate(images[:n]):
            data = path.read_bytes()
            closed = _write(data, inbox / f"{i:05d}.png")
            wait_until(lambda: _count(journal) > i, 30)
            seconds.append(_row_time(csv_rows(journal)[-1]) - closed)
            time.sleep(0.05)  # parts a little apart, as on a line
    finally:
        _stop(process)
    return {"latency_median": statistics.median(seconds), "latency_p99": float(np.percentile(seconds, 99)), "latency_n": len(seconds)}


def burst(model: Path, images: list[Path], tmp: Path, n: int) -> dict:
    staged, inbox, journal = tmp / "burst-staged", tmp / "burst-in", tmp / "burst.csv"
    staged.mkdir()
    inbox.mkdir()
    names = []
    for i in range(n):
        shutil.copy(images[i % len(images)], staged / f"{i:05d}.png")
        names.append(f"{i:05d}.png")
    predict_seconds, _ = run_measured(anomaly_command("predict", str(model), str(staged), "--output", str(tmp / "burst-predict.csv")))
    process = _watch(model, inbox, journal)
    try:
        start = time.time()
        for name in names:
            os.rename(staged / name, inbox / name)
        wait_until(lambda: _count(journal) >= n, 600, 0.05)
        end = max(_row_time(r) for r in csv_rows(journal))
    finally:
        _stop(process)
    return {"burst_images_per_s": n / (end - start), "predict_images_per_s": n / predict_seconds, "burst_n": n}


def fsync_cost(tmp: Path) -> dict:
    from anomalycli.deploy import journal

    row = {"time": journal.now(), "path": "part.png", "score": "0.1", "raw_score": "-0.4", "verdict": "normal", "error": "", "bytes": "1", "mtime_ns": "1"}
    opened = journal.Journal(tmp / "fsync.csv")
    with_fsync = []
    for _ in range(200):
        start = time.perf_counter()
        opened.append([row])
        with_fsync.append(time.perf_counter() - start)
    opened.close()
    without = []
    with open(tmp / "plain.csv", "a") as handle:
        for _ in range(200):
            start = time.perf_counter()
            handle.write(",".join(row.values()) + "\n")
            handle.flush()
            without.append(time.perf_counter() - start)
    return {"fsync_row": statistics.median(with_fsync), "plain_row": statistics.median(without)}


def crashes(model: Path, images: list[Path], tmp: Path, n: int, seed: int = 0) -> dict:
    inbox, journal = tmp / "crash-in", tmp / "crash.csv"
    inbox.mkdir()
    rng = random.Random(seed)
    process, kills, names = _watch(model, inbox, journal), 0, []
    for i in range(n):
        name = f"{i:05d}.png"
        shutil.copy(images[i % len(images)], inbox / name)
        names.append(name)
        time.sleep(rng.uniform(0.0, 0.04))
        if rng.random() < 1 / 40:  # a kill at a random moment, then a restart
            time.sleep(rng.uniform(0.0, 0.3))
            process.kill()
            process.wait()
            kills += 1
            process = _watch(model, inbox, journal)
    try:
        wait_until(lambda: _count(journal) >= len(names), 300, 0.05)
        time.sleep(1.0)
    finally:
        _stop(process)
    paths = [r["path"] for r in csv_rows(journal)]
    return {"crash_kills": kills, "crash_images": len(names), "crash_lost": len(set(names) - set(paths)), "crash_repeated": len(paths) - len(set(paths))}


def memory(model: Path, images: list[Path], tmp: Path, n: int) -> dict:
    inbox, journal, done = tmp / "memory-in", tmp / "memory.csv", tmp / "memory-done"
    inbox.mkdir()
    process = _watch(model, inbox, journal, "--sort-into", str(done))
    samples = {}
    first = 500 if n >= 2000 else n // 4  # the 500th image: start-up's allocations are done
    data = [p.read_bytes() for p in images]
    try:
        for i in range(n):
            _write(data[i % len(data)], inbox / f"{i:06d}.png")
            if i % 100 == 99:
                wait_until(lambda: _count(journal) >= i - 100, 300, 0.02)  # at most ~200 waiting, as a line keeps up
                shutil.rmtree(done, ignore_errors=True)  # the line's own clean-up
            if i + 1 in (first, n // 4, n // 2, 3 * n // 4):
                wait_until(lambda: _count(journal) >= i + 1, 300, 0.02)
                samples[i + 1] = rss_mib(process.pid)
        wait_until(lambda: _count(journal) >= n, 600, 0.05)
        samples[n] = rss_mib(process.pid)
    finally:
        _stop(process)
    return {"memory_rss": samples, "memory_growth": samples[n] - samples[first], "memory_from": first, "memory_images": n}


def run(data_sets: list[Path], quick: bool, log=print) -> dict:
    counts = QUICK_COUNTS if quick else COUNTS
    runs = []
    for index, data in enumerate(data_sets):
        with tempfile.TemporaryDirectory(prefix="bench-line-") as tmp:
            tmp = Path(tmp)
            fit_process(data, tmp / "run", *(("--image-size", "64") if quick else ()))
            model = tmp / "run" / "model.safetensors"
            native = [s.path for s in samples_of(data, False)]
            (tmp / "pngs").mkdir()
            big = upscaled_copies(native[: 20 if quick else 100], tmp / "pngs")
            out = {"data": data.name, "native_size": _size(native[0])}
            out.update(latency(model, big, tmp, counts["latency"]))
            out.update({f"native_{k}": v for k, v in latency(model, native, tmp / "native", counts["latency"]).items()})
            log(f"  {data.name}: latency median {1000 * out['latency_median']:.1f} ms, p99 {1000 * out['latency_p99']:.1f} ms (1024 px)")
            out.update(burst(model, big, tmp, counts["burst"]))
            log(f"  {data.name}: burst {out['burst_images_per_s']:.1f} images/s, predict {out['predict_images_per_s']:.1f} images/s")
            out.update(http(model, big, counts["http_sequential"], counts["http_concurrent"]))
            log(
                f"  {data.name}: http median {1000 * out['http_median']:.1f} ms, p99 {1000 * out['http_p99']:.1f} ms, 4 clients {out['http_4_clients_images_per_s']:.1f}/s"
            )
            out.update(fsync_cost(tmp))
            out.update(crashes(model, native, tmp, counts["crash"]))
            log(f"  {data.name}: {out['crash_kills']} kills, lost {out['crash_lost']}, repeated {out['crash_repeated']}")
            if index == 0:
                out.update(memory(model, native, tmp, counts["memory"]))
                log(f"  {data.name}: memory {out['memory_rss']}")
            runs.append(out)
    return {"runs": runs}


def _size(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return f"{image.width} x {image.height}"


def headline(result: dict, data: str) -> dict:
    r = next((r for r in result["runs"] if r["data"] == data), None)
    if r is None:
        return {}
    rows = {
        "watch: close to journal row, one image at a time (1024 px PNG), median / p99": f"{1000 * r['latency_median']:.1f} / {1000 * r['latency_p99']:.1f} ms "
        f"({r['latency_median'] * r['predict_images_per_s']:.2f}x predict's time an image)",
        f"watch: a burst of {r['burst_n']} images, against one batch predict": f"{r['burst_images_per_s']:.1f} images/s, {r['burst_images_per_s'] / r['predict_images_per_s']:.2f}x",
        "serve: sequential requests median / p99; 4 clients against batch predict": f"{1000 * r['http_median']:.1f} / {1000 * r['http_p99']:.1f} ms; "
        f"{r['http_4_clients_images_per_s']:.1f} images/s, {r['http_4_clients_images_per_s'] / r['predict_images_per_s']:.2f}x",
        "watch killed at random and restarted: verdicts lost / repeated": f"{r['crash_lost']} / {r['crash_repeated']} of {r['crash_images']} ({r['crash_kills']} kills)",
    }
    if "memory_growth" in r:
        rows[f"watch memory from the {r['memory_from']:,}th to the {r['memory_images']:,}th image"] = f"{r['memory_growth']:+.1f} MiB"
    return rows


def section(result: dict) -> str:
    runs = result["runs"]
    lines = [
        "Each set's default model (`anomaly train DATA`), the watch and the server as separate processes started as a user starts them. "
        "Latency is from the writer's close of the file to the time its journal row carries (written after the row's fsync). "
        "The burst and 4-client rates are against one whole `anomaly predict` process over the same images.",
        "",
    ]
    table, row = runs_table(runs)

    row("watch latency, 1024 px PNG, median / p99 (ms)", lambda r: f"{1000 * r['latency_median']:.1f} / {1000 * r['latency_p99']:.1f} (n={r['latency_n']})")
    row("watch latency median against batch predict's time an image", lambda r: f"{r['latency_median'] * r['predict_images_per_s']:.2f}x")
    row(
        "watch latency, images at their own size, median / p99 (ms)",
        lambda r: (
            f"{1000 * r['native_latency_median']:.1f} / {1000 * r['native_latency_p99']:.1f} ({r['native_size']} px)" if "native_latency_median" in r else "-"
        ),
    )
    row(
        "batch `anomaly predict` of the burst's images, whole process",
        lambda r: f"{r['predict_images_per_s']:.1f} images/s ({1000 / r['predict_images_per_s']:.1f} ms an image)",
    )
    row(
        "watch, a burst dropped at once",
        lambda r: f"{r['burst_images_per_s']:.1f} images/s ({r['burst_images_per_s'] / r['predict_images_per_s']:.2f}x predict)",
    )
    row("serve, sequential requests, median / p99 (ms)", lambda r: f"{1000 * r['http_median']:.1f} / {1000 * r['http_p99']:.1f}")
    row(
        "serve, 4 clients at once",
        lambda r: f"{r['http_4_clients_images_per_s']:.1f} images/s ({r['http_4_clients_images_per_s'] / r['predict_images_per_s']:.2f}x predict)",
    )
    row("journal row with its fsync / without (ms, median of 200)", lambda r: f"{1000 * r['fsync_row']:.2f} / {1000 * r['plain_row']:.3f}")
    row(
        "SIGKILLs at random moments / images / lost / repeated",
        lambda r: f"{r['crash_kills']} / {r['crash_images']} / {r['crash_lost']} / {r['crash_repeated']}",
    )
    row(
        "watch resident memory (MiB) by images judged",
        lambda r: ", ".join(f"{int(k):,}: {v:.0f}" for k, v in r["memory_rss"].items()) if "memory_rss" in r else "-",
    )
    lines += [
        *table,
        "",
        "Why the journal is a CSV fsynced per batch of rows: it is what line programs and spreadsheets read as it is, and its fsync costs "
        + " and ".join(f"{1000 * r['fsync_row']:.2f} ms a row on {r['data']}" for r in runs)
        + ", under 1 % of an image's scoring: no database or write-ahead log would buy a verdict back.",
    ]
    return "\n".join(lines)
