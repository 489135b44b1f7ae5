"""The station judging a camera's frames (workflows/station.py through workflows/camera_frames.py):
the simulator's frames as predict judges them, a lost camera, software triggers, frames it cannot
keep up with, a video file through a kill, and the camera and archive sections' mistakes."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

from anomalycli.deploy.station import signals
from tests.cameras import ARCHIVE_EVERY_IMAGE, CTI, StandIn, killed_and_restarted, rows_of, station_file, wait_for, write_video
from tests.conftest import run_cli


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
        # the file is right, but the producer shows no such camera now (listed, not opened)
        f'[source.camera]\ncti = "{CTI}"\nserial = "7"': "[source.camera] no camera with serial 7 among the producer's (0: Viky serial 0,",
    }
    for source, expected in cases.items():
        path = station_file(tmp_path, patchcore_model, source, "[archive]\nkeep_good_every = -1" if "every = 0" in source else "")
        result = run_cli("station", "--check", path, expect=1)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert "Traceback" not in result.output and any(expected in e for e in errors), (expected, errors)
    counted = collections.Counter(e.split(":")[1].strip() for e in errors)
    assert all(n >= 1 for n in counted.values())
    there = station_file(tmp_path, patchcore_model, f'[source.camera]\ncti = "{CTI}"\nserial = "1"', "")
    assert "no mistakes found" in run_cli("station", "--check", there).output
