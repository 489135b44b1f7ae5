"""deploy/camera/genicam_camera.py: cameras on the GenTL producer simulator genicam ships
(viky.cti), and the camera's own logic (trigger features, lost and incomplete frames) on a
stand-in producer with the same feature names."""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy as np
import pytest

from anomalycli.deploy.camera.frames import CameraGone
from anomalycli.deploy.camera.genicam_camera import GenICamCamera, list_cameras
from tests.cameras import CTI
from tests.conftest import one_clear_line, run_cli


def test_the_cameras_a_producer_sees_are_listed_and_a_wrong_producer_is_one_line(tmp_path):
    found = list_cameras(CTI)
    assert [c["serial"] for c in found] == ["0", "1", "2"] and all(c["model"] == "Viky" for c in found)
    listed = run_cli("cameras", "--cti", CTI).output
    assert "0: serial 0  model Viky" in listed and "2: serial 2" in listed
    assert "GenTL producer" in one_clear_line(run_cli("cameras", "--cti", tmp_path / "missing.cti", expect=1))
    (tmp_path / "broken.cti").write_bytes(b"not a library")
    assert "cannot be loaded" in one_clear_line(run_cli("cameras", "--cti", tmp_path / "broken.cti", expect=1))
    # As a user runs it: harvesters' own log of the failure (with its traceback) is not said as well.
    done = subprocess.run([sys.executable, "-m", "anomalycli", "cameras", "--cti", str(tmp_path / "broken.cti")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: GenTL producer") and len(done.stderr.strip().splitlines()) == 1, done.stderr


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
