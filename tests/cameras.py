"""What the camera tests share: the GenTL producer simulator genicam ships (viky.cti), a
stand-in camera with the same GenICam feature names where the simulator lacks one (software
triggers, losses, bursts), station files, journals, a video file and a kill-and-restart run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalycli.deploy.camera.frames import CameraGone, Frame

genicam = pytest.importorskip("genicam")
CTI = Path(genicam.__file__).with_name("viky.cti")
REPO = Path(__file__).resolve().parents[1]


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class StandIn:
    """A camera with GenICam's trigger behaviour: free-running every ``period`` s, or (software) a
    frame per ``fire``; ``gone`` makes it lost (grab raises) and unreachable for ``unreachable`` opens."""

    live = True

    def __init__(self, trigger: str = "free", period: float = 0.02, size: int = 48, deaf: bool = False):
        self.name, self.trigger, self.period, self.size, self.deaf = "standin-7", trigger, period, size, deaf
        self.frame_id, self.fired, self.opens, self.unreachable = 0, 0, 0, 0
        self.gone = threading.Event()
        self.next_at = 0.0

    def open(self) -> list[str]:
        self.opens += 1
        if self.unreachable:
            self.unreachable -= 1
            raise CameraGone("no answer")
        self.gone.clear()
        return []

    def grab(self, timeout: float) -> Frame | None:
        if self.gone.is_set():
            raise CameraGone("the cable is out")
        if self.trigger == "software":
            if not self.fired:
                time.sleep(timeout)
                return None
            self.fired -= 1
        else:
            wait = self.next_at - time.monotonic()
            if wait > timeout:
                time.sleep(timeout)
                return None
            time.sleep(max(0.0, wait))
            self.next_at = time.monotonic() + self.period
        self.frame_id += 1
        pixels = np.random.default_rng(self.frame_id).integers(90, 110, (self.size, self.size), dtype=np.uint8)
        return Frame(Image.fromarray(pixels, "L"), self.frame_id, 1000 * self.frame_id, self.name, time.monotonic(), "", "Mono8")

    def fire(self) -> None:
        if not self.deaf:
            self.fired += 1

    def close(self) -> None:
        pass


def station_file(folder: Path, model: Path, source: str, extra: str = "", mode: str = "arrival") -> Path:
    text = f'[source]\nmode = "{mode}"\n{source}\n[recipes]\n1 = "{model}"\n[station]\ntrigger_timeout = 1.0\n[journal]\npath = "verdicts.csv"\n{extra}\n'
    path = folder / "station.toml"
    path.write_text(text)
    return path


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


ARCHIVE_EVERY_IMAGE = '[archive]\npath = "archive"\nkeep_good_every = 1\nmin_free_mb = 0\n'


def write_video(path: Path, frames: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(frames):
        writer.write(np.full((64, 64, 3), 60 + 10 * (i % 8), np.uint8))
    writer.release()
    return path


def killed_and_restarted(command: list[str], journal: Path, kill_after: int, all_rows: int) -> list[dict]:
    """The journal's rows after ``command`` is killed (SIGKILL) once it has ``kill_after`` rows,
    started again, and stopped (SIGTERM) once it has ``all_rows``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    assert wait_for(lambda: journal.exists() and len(rows_of(journal)) >= kill_after, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert len(rows_of(journal)) < all_rows, "killed too late to test a restart"
    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    assert wait_for(lambda: len(rows_of(journal)) >= all_rows, timeout=60)
    time.sleep(0.5)
    second.send_signal(signal.SIGTERM)
    second.wait(20)
    return rows_of(journal)
