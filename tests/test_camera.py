"""Camera sources: the GenTL producer simulator genicam ships (viky.cti), a stand-in with the same
GenICam feature names where the simulator lacks one (software triggers), OpenCV video, and the
station judging their frames through losses, drops, triggers and restarts."""

from __future__ import annotations

import collections
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalycli.deploy.camera.acquisition import DROPPED, Acquisition
from anomalycli.deploy.camera.frames import CameraGone, Frame
from anomalycli.deploy.camera.genicam_camera import GenICamCamera, list_cameras
from anomalycli.deploy.station import signals
from tests.conftest import one_clear_line, run_cli

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


# --- the GenTL producer simulator -------------------------------------------------------------


def test_the_cameras_a_producer_sees_are_listed_and_a_wrong_producer_is_one_line(tmp_path):
    found = list_cameras(CTI)
    assert [c["serial"] for c in found] == ["0", "1", "2"] and all(c["model"] == "Viky" for c in found)
    listed = run_cli("cameras", "--cti", CTI).output
    assert "0: serial 0  model Viky" in listed and "2: serial 2" in listed
    assert "GenTL producer" in one_clear_line(run_cli("cameras", "--cti", tmp_path / "missing.cti", expect=1))
    (tmp_path / "broken.cti").write_bytes(b"not a library")
    assert "cannot be loaded" in one_clear_line(run_cli("cameras", "--cti", tmp_path / "broken.cti", expect=1))


def test_a_camera_chosen_by_serial_takes_the_features_and_says_each_it_lacks_or_refuses():
    camera = GenICamCamera(CTI, serial="1", features={"PixelFormat": "Mono8", "Width": 200, "ExposureTime": 5000, "AcquisitionFrameRate": 50.0})
    try:
        said = camera.open()
        assert said == ["camera 1: it has no feature ExposureTime; ExposureTime = 5000 not set"]
        frames = [camera.grab(2.0) for _ in range(5)]
        assert all(f is not None and not f.error for f in frames)
        assert [f.frame_id for f in frames] == sorted({f.frame_id for f in frames}) and frames[0].camera == "1"
        assert frames[0].image.mode == "L" and frames[0].image.size == (200, 400) and frames[0].pixel_format == "Mono8"
    finally:
        camera.close()
    refused = GenICamCamera(CTI, serial="2", features={"PixelFormat": "Mono16"})
    try:
        said = refused.open()
        assert len(said) == 1 and "PixelFormat = 'Mono16' refused" in said[0]
        assert refused.grab(2.0).image.mode == "RGB"  # it stays in RGBa8, read as RGB
    finally:
        refused.close()
    with pytest.raises(CameraGone, match="no camera with serial 9 among the producer's"):
        GenICamCamera(CTI, serial="9").open()


# --- a stand-in with the same feature names: software triggers, losses, bursts ---------------


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


def test_frames_faster_than_they_are_taken_wait_in_a_bounded_queue_and_each_drop_is_counted_and_kept():
    camera = StandIn(period=0.0)
    acquisition = Acquisition(camera, lambda line: None, queue_frames=4)
    acquisition.start(wait=5)
    assert wait_for(lambda: acquisition.counts["dropped"] >= 50)
    acquisition.stop()
    assert acquisition.frames.qsize() == 4 and acquisition.counts["kept"] == 4
    assert acquisition.counts["frames"] == 4 + acquisition.counts["dropped"] == 4 + len(acquisition.dropped)
    assert all(f.image is None and f.error == DROPPED.format(4) for f in acquisition.dropped)


def test_one_frame_in_n_is_a_part_when_free_running():
    acquisition = Acquisition(StandIn(period=0.0), lambda line: None, queue_frames=5, every=3)
    acquisition.start(wait=5)
    assert wait_for(lambda: acquisition.frames.full())
    acquisition.stop()
    assert [acquisition.get(0.1).frame_id for _ in range(5)] == [1, 4, 7, 10, 13]


def test_a_camera_that_disappears_is_said_once_reconnected_with_back_off_and_said_back():
    camera, said, states = StandIn(), [], []
    acquisition = Acquisition(camera, said.append, on_state=states.append)
    acquisition.start(wait=5)
    assert wait_for(lambda: acquisition.counts["frames"] >= 3)
    camera.unreachable = 2
    camera.gone.set()
    assert wait_for(lambda: acquisition.counts["reconnects"] == 1 and acquisition.connected, timeout=10)
    frames_back = acquisition.counts["frames"]
    assert wait_for(lambda: acquisition.counts["frames"] > frames_back + 2)
    acquisition.stop()
    assert states == [True, False, True] and camera.opens == 4
    assert [s.split(":")[1].split("(")[0].strip() for s in said] == ["acquiring", "lost", "not reachable", "acquiring again"]


# --- the station, judging a camera's frames ---------------------------------------------------


def station_file(folder: Path, model: Path, source: str, extra: str = "", mode: str = "arrival") -> Path:
    text = f'[source]\nmode = "{mode}"\n{source}\n[recipes]\n1 = "{model}"\n[station]\ntrigger_timeout = 1.0\n[journal]\npath = "verdicts.csv"\n{extra}\n'
    path = folder / "station.toml"
    path.write_text(text)
    return path


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


ARCHIVE_EVERY_IMAGE = '[archive]\npath = "archive"\nkeep_good_every = 1\nmin_free_mb = 0\n'


def test_the_station_judges_the_simulators_frames_as_predict_judges_the_archived_images(patchcore_model, running_station, tmp_path):
    camera = f'[source.camera]\ncti = "{CTI}"\nserial = "0"\n[source.camera.features]\nPixelFormat = "Mono8"\nAcquisitionFrameRate = 10.0'
    station = running_station(station_file(tmp_path, patchcore_model, camera, ARCHIVE_EVERY_IMAGE))
    assert station.handshake.snapshot()["ready"] and station.handshake.snapshot()["station_error"] == 0
    assert wait_for(lambda: station.counts["judged"] >= 12)
    station.stop_running()
    rows = rows_of(tmp_path / "verdicts.csv")
    assert len(rows) == station.counts["judged"] >= 12
    ids = [int(r["frame_id"]) for r in rows]
    assert ids == sorted(set(ids)) and all(r["path"] == f"0/frame {r['frame_id']}" for r in rows)
    assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["error_code"] == "0" for r in rows)  # at 10 frames a second, none dropped
    archived = tmp_path / "archive"
    assert all(r["archived"] and (archived / r["archived"]).is_file() for r in rows)
    out = tmp_path / "predicted.csv"
    run_cli("predict", patchcore_model, archived, "--output", out)
    predicted = {Path(r["path"]).name: float(r["score"]) for r in rows_of(out)}
    for row in rows:
        assert abs(float(row["score"]) - predicted[Path(row["archived"]).name]) <= 1e-4


def test_a_lost_camera_lowers_ready_with_an_error_code_and_the_station_judges_on_once_it_is_back(patchcore_model, running_station, tmp_path, monkeypatch):
    from anomalycli.workflows import station as stations

    camera = StandIn(period=0.05)
    monkeypatch.setattr(stations.Station, "_camera", lambda self: camera)
    station = running_station(station_file(tmp_path, patchcore_model, f'[source.camera]\ncti = "{CTI}"'))
    assert wait_for(lambda: station.counts["judged"] >= 3)
    camera.unreachable = 3
    camera.gone.set()
    assert wait_for(lambda: not station.handshake.snapshot()["ready"])
    assert station.handshake.snapshot()["station_error"] == signals.CAMERA_DISCONNECTED
    assert wait_for(lambda: station.handshake.snapshot()["ready"], timeout=15)
    judged_back = station.counts["judged"]
    assert wait_for(lambda: station.counts["judged"] >= judged_back + 3)
    assert station.handshake.snapshot()["station_error"] == 0
    station.stop_running()
    assert any("lost (the cable is out); reconnecting" in line for line in station.said)
    assert any("acquiring again" in line for line in station.said)


def test_a_software_trigger_takes_the_frame_for_that_part_and_a_frame_that_never_comes_is_an_error(patchcore_model, running_station, tmp_path, monkeypatch):
    from anomalycli.workflows import station as stations

    camera = StandIn(trigger="software")
    monkeypatch.setattr(stations.Station, "_camera", lambda self: camera)
    station = running_station(station_file(tmp_path, patchcore_model, f'[source.camera]\ncti = "{CTI}"\ntrigger = "software"', mode="trigger"))
    handshake = station.handshake
    for part in (501, 502):
        handshake.write("part_id", part)
        handshake.write("trigger", True)
        handshake.write("trigger", False)
        assert wait_for(lambda: handshake.snapshot()["result_valid"])
        assert handshake.snapshot()["part_id_echo"] == part and not handshake.snapshot()["error"]
        handshake.write("result_ack", True)
        handshake.write("result_ack", False)
    camera.deaf = True  # the trigger reaches the camera, no frame comes
    handshake.write("part_id", 503)
    handshake.write("trigger", True)
    handshake.write("trigger", False)
    assert wait_for(lambda: handshake.snapshot()["result_valid"], timeout=10)
    shown = handshake.snapshot()
    assert shown["part_id_echo"] == 503 and shown["ng"] and shown["error_code"] == signals.TRIGGER_TIMEOUT
    station.stop_running()
    rows = rows_of(tmp_path / "verdicts.csv")
    assert [(r["part_id"], r["frame_id"], r["error_code"]) for r in rows] == [("501", "1", "0"), ("502", "2", "0"), ("503", "", str(signals.TRIGGER_TIMEOUT))]


def test_frames_the_station_cannot_keep_up_with_are_journalled_errors_never_silence(patchcore_model, running_station, tmp_path, monkeypatch):
    from anomalycli.workflows import station as stations

    camera = StandIn(period=0.0)
    monkeypatch.setattr(stations.Station, "_camera", lambda self: camera)
    station = running_station(station_file(tmp_path, patchcore_model, f'[source.camera]\ncti = "{CTI}"\nqueue = 2'))
    assert wait_for(lambda: station.counts["errors"] >= 20 and station.counts["judged"] - station.counts["errors"] >= 5)
    acquisition = station.acquisition
    station.stop_running()
    rows = rows_of(tmp_path / "verdicts.csv")
    dropped = [r for r in rows if r["error_code"] == str(signals.FRAME_DROPPED)]
    judged = [r for r in rows if r["error_code"] == "0"]
    assert len(dropped) + len(acquisition.dropped) == acquisition.counts["dropped"]
    assert len(judged) + acquisition.frames.qsize() == acquisition.counts["kept"]
    assert all(r["verdict"] == "error" and "queue of 2 frames was full" in r["error"] for r in dropped)
    # every frame the camera gave is a row or still waits: none passed in silence
    frame_ids = sorted(int(r["frame_id"]) for r in rows) + sorted(f.frame_id for f in acquisition.dropped)
    assert len(frame_ids) == len(set(frame_ids))


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


def test_a_video_file_is_judged_frame_by_frame_none_dropped_and_once_through_a_kill_and_a_restart(patchcore_model, tmp_path):
    video = write_video(tmp_path / "line.avi", 60)
    path = station_file(tmp_path, patchcore_model, f'[source.video]\nurl = "{video}"\nqueue = 2')
    journal = tmp_path / "verdicts.csv"
    rows = killed_and_restarted([sys.executable, "-m", "anomalycli", "station", str(path)], journal, 10, 60)
    assert [int(r["frame_id"]) for r in rows] == list(range(1, 61))
    assert [int(r["seq"]) for r in rows] == list(range(1, 61))
    assert all(r["error_code"] == "0" for r in rows)  # a file waits for the model: no frame dropped


def test_camera_and_archive_mistakes_are_one_line_each(patchcore_model, tmp_path):
    cases = {
        "[source.camera]\ntrigger = 'free'": "[source.camera] needs cti",
        f'[source.camera]\ncti = "{CTI}"\ntrigger = "sometimes"': "trigger must be free, software, hardware",
        f'[source.camera]\ncti = "{CTI}"\ntrigger = "software"': 'set mode = "trigger" in [source]',
        f'inbox = "in"\n[source.camera]\ncti = "{CTI}"': "(it has inbox and camera)",
        '[source.video]\nurl = "line.avi"\nevery = 0': "[source.video] every must be a whole number, 1 or more",
        f'[source.camera]\ncti = "{CTI}"\nshutter = 3': "unknown key shutter in [source.camera]",
    }
    for source, expected in cases.items():
        path = station_file(tmp_path, patchcore_model, source, "[archive]\nkeep_good_every = -1" if "every = 0" in source else "")
        result = run_cli("station", "--check", path, expect=1)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert "Traceback" not in result.output and any(expected in e for e in errors), (expected, errors)
    counted = collections.Counter(e.split(":")[1].strip() for e in errors)
    assert all(n >= 1 for n in counted.values())


# --- the GenICam camera's own logic, on a stand-in producer with the same feature names ----------


class Node:
    def __init__(self, value, accepts=lambda v: v):
        self._value, self.accepts, self.executed = value, accepts, 0

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, wanted):
        self._value = self.accepts(wanted)

    def execute(self):
        self.executed += 1


class NodeMap:
    def __init__(self, nodes: dict):
        self.nodes = nodes

    def has_node(self, name):
        return name in self.nodes

    def get_node(self, name):
        return self.nodes[name]


class Buffer:
    def __init__(self, frame_id: int, data=None, width=8, height=4, pixel_format="Mono8"):
        self.frame_id, self.timestamp_ns = frame_id, 10 * frame_id
        part = type(
            "Part",
            (),
            {"data": np.arange(width * height, dtype=np.uint8) if data is None else data, "width": width, "height": height, "data_format": pixel_format},
        )
        self.payload = type("Payload", (), {"components": [part]})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class Acquirer:
    def __init__(self, nodes: dict, buffers: list):
        self.remote_device = type("Device", (), {"node_map": NodeMap(nodes)})
        self.buffers = collections.deque(buffers)

    def try_fetch(self, timeout):
        return self.buffers.popleft() if self.buffers else None


def standin_genicam(nodes: dict, buffers: list, **options) -> GenICamCamera:
    camera = GenICamCamera(CTI, **options)
    camera._acquirer = Acquirer(nodes, buffers)
    return camera


def test_each_trigger_sets_genicams_trigger_features_and_each_mismatch_is_one_line():
    def whole_microseconds(v):
        return float(round(v))

    nodes = {
        "TriggerSelector": Node("AcquisitionStart"),
        "TriggerMode": Node("Off"),
        "TriggerSource": Node("Line1"),
        "ExposureTime": Node(1000.0, whole_microseconds),
        "Gain": Node(0.0, lambda v: (_ for _ in ()).throw(ValueError("Gain is read-only"))),
    }
    camera = standin_genicam(nodes, [], trigger="hardware", features={"TriggerSource": "Line2", "ExposureTime": 5000.4, "Gain": 3.0, "BlackLevel": 1})
    said = camera.apply({**{"TriggerSelector": "FrameStart", "TriggerMode": "On", "TriggerSource": "Line0"}, **camera.features})
    assert nodes["TriggerMode"].value == "On" and nodes["TriggerSelector"].value == "FrameStart" and nodes["TriggerSource"].value == "Line2"
    assert said == [
        "camera camera 0: ExposureTime set to 5000.4, the camera took 5000.0",
        "camera camera 0: Gain = 3.0 refused (ValueError: Gain is read-only)",
        "camera camera 0: it has no feature BlackLevel; BlackLevel = 1 not set",
    ]
    camera = standin_genicam({"TriggerSoftware": Node(None)}, [], trigger="software")
    camera.fire()
    assert camera._acquirer.remote_device.node_map.get_node("TriggerSoftware").executed == 1


def test_frames_missing_between_frame_ids_and_incomplete_buffers_are_each_an_error_frame_in_order():
    camera = standin_genicam({}, [Buffer(1), Buffer(2), Buffer(5), Buffer(6, data=np.zeros(3, np.uint8))])
    frames = [camera.grab(0.01) for _ in range(6)]
    assert [(f.frame_id, f.image is not None) for f in frames] == [(1, True), (2, True), (3, False), (4, False), (5, True), (6, False)]
    assert frames[2].error == "lost: the camera's frame never arrived" and frames[5].error.startswith("incomplete frame: 3 values for 8 x 4 Mono8")
    assert camera.grab(0.01) is None
    camera._incomplete = 1  # what harvesters' INCOMPLETE_BUFFER callback counts
    assert camera.grab(0.01).error == "incomplete frame: the producer discarded the camera's buffer"


# --- anomaly watch --camera -------------------------------------------------------------------


def test_watch_judges_the_simulators_frames_into_its_journal_and_archive_as_predict_judges_them(patchcore_model, tmp_path):
    from anomalycli.workflows.watch_camera import watch_camera

    source = tmp_path / "camera.toml"
    source.write_text(
        f'[source.camera]\ncti = "{CTI}"\nserial = "1"\n[source.camera.features]\nPixelFormat = "Mono8"\nAcquisitionFrameRate = 10.0\n' + ARCHIVE_EVERY_IMAGE
    )
    said, stop = [], threading.Event()
    thread = threading.Thread(target=watch_camera, args=(patchcore_model, "auto", source, tmp_path / "journal.csv", 0.5, said.append, stop))
    thread.start()
    assert wait_for(lambda: (tmp_path / "journal.csv").exists() and len(rows_of(tmp_path / "journal.csv")) >= 8)
    stop.set()
    thread.join(30)
    rows = rows_of(tmp_path / "journal.csv")
    assert [int(r["frame_id"]) for r in rows] == list(range(1, len(rows) + 1)) and all(r["path"] == f"1/frame {r['frame_id']}" for r in rows)
    out = tmp_path / "predicted.csv"
    run_cli("predict", patchcore_model, tmp_path / "archive", "--output", out)
    predicted = {Path(r["path"]).name: float(r["score"]) for r in rows_of(out)}
    assert all(abs(float(r["score"]) - predicted[Path(r["archived"]).name]) <= 1e-4 for r in rows)
    assert any("stopped:" in line for line in said)


def test_watch_reads_a_video_file_once_through_a_kill_and_a_restart(patchcore_model, tmp_path):
    video = write_video(tmp_path / "line.avi", 40)
    source = tmp_path / "video.toml"
    source.write_text(f'[source.video]\nurl = "{video}"\nqueue = 2\n')
    journal = tmp_path / "journal.csv"
    command = [sys.executable, "-m", "anomalycli", "watch", str(patchcore_model), "--camera", str(source), "--journal", str(journal)]
    rows = killed_and_restarted(command, journal, 5, 40)
    assert [int(r["frame_id"]) for r in rows] == list(range(1, 41)) and all(r["verdict"] != "error" for r in rows)


def test_watch_camera_mistakes_are_one_line_each(patchcore_model, tmp_path):
    software = tmp_path / "software.toml"
    software.write_text(f'[source.camera]\ncti = "{CTI}"\ntrigger = "software"\n')
    cases = [
        ((patchcore_model, "--camera", software, "--journal", tmp_path / "j.csv"), 'trigger = "software" takes a frame on a PLC'),
        ((patchcore_model, "--camera", tmp_path / "missing.toml", "--journal", tmp_path / "j.csv"), "camera source file"),
        ((patchcore_model, tmp_path, "--camera", software, "--journal", tmp_path / "j.csv"), "give the model only, not a folder"),
        ((patchcore_model, "--camera", software), "give the journal"),
    ]
    for args, expected in cases:
        assert expected in one_clear_line(run_cli("watch", *args, expect=None))
