"""workflows/watch_camera.py: anomaly watch --camera, on the simulator and on a video file."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from tests.cameras import ARCHIVE_EVERY_IMAGE, CTI, killed_and_restarted, rows_of, wait_for, write_video
from tests.conftest import one_clear_line, run_cli


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
