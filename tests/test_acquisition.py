"""deploy/camera/acquisition.py: frames taken on a thread into a bounded queue, drops counted
and kept, one frame in n, a lost camera reconnected; on a stand-in camera."""

from __future__ import annotations

from anomalycli.deploy.camera.acquisition import DROPPED, Acquisition
from tests.cameras import StandIn, wait_for


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
