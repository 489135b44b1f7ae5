"""``anomaly watch`` as a line runs it: the real command in a subprocess, images arriving the ways
cameras and line programs write them, kills at any moment, a journal that cannot be written."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from anomalycli.deploy.journal import COLUMNS
from tests.conftest import run_cli


def start(model, inbox, journal, *options, **popen):
    return subprocess.Popen(
        [sys.executable, "-m", "anomalycli", "watch", str(model), str(inbox), "--journal", str(journal), "--settle", "1", *map(str, options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def rows(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    with open(journal, newline="") as handle:
        return list(csv.DictReader(handle))


def wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def wait_started(process, journal, timeout=60.0):
    """Until the watch says it watches (its first lines), or it ends."""
    lines = []
    while True:
        line = process.stdout.readline()
        if not line:
            return "".join(lines)
        lines.append(line)
        if line.startswith("watching "):
            return "".join(lines)


def stop(process, timeout=30):
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"the watch did not stop within {timeout} s of SIGTERM; its output:\n{out}") from None
    return process.returncode, out


def predicted(model, folder: Path, tmp_path: Path) -> dict[str, dict]:
    """predict's rows for the images in ``folder``, by file name."""
    out = tmp_path / f"predict-{folder.name}.csv"
    run_cli("predict", model, folder, "--output", out, "--overwrite")
    return {Path(r["path"]).name: r for r in rows(out)}


def chunked(source: Path, target: Path, pieces: int = 4, pause: float = 0.3) -> None:
    """Write ``target`` as a slow writer does: a few chunks with pauses, the file open throughout."""
    data = source.read_bytes()
    step = len(data) // pieces + 1
    with open(target, "wb") as handle:
        for i in range(0, len(data), step):
            handle.write(data[i : i + step])
            handle.flush()
            time.sleep(pause)


@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_every_arrival_is_judged_once_as_predict_judges_it(parts, patchcore_model, tmp_path, polling):
    inbox, sorted_into, journal = tmp_path / "inbox", tmp_path / "sorted", tmp_path / "journal.csv"
    (inbox / "line2").mkdir(parents=True)
    goods, defects = sorted((parts / "good").glob("*.png")), sorted((parts / "not-good").glob("*.png"))
    process = start(patchcore_model, inbox, journal, "--sort-into", sorted_into, *(["--polling"] if polling else []))
    try:
        started = wait_started(process, journal)
        assert "runs on: ONNX Runtime" in started and f"watching {inbox}" in started
        shutil.copy(goods[0], inbox / goods[0].name)  # written and closed at once
        chunked(defects[0], inbox / "line2" / defects[0].name)  # in a subfolder, slowly
        staged = tmp_path / "staged.png"
        shutil.copy(goods[1], staged)
        os.replace(staged, inbox / goods[1].name)  # renamed into the folder, whole
        (inbox / "empty.png").write_bytes(b"")
        (inbox / "text.png").write_text("not an image at all")
        (inbox / "cut.png").write_bytes(defects[1].read_bytes()[:300])  # damaged for good
        (inbox / "notes.txt").write_text("not an image file: never judged")
        gone = inbox / "gone.png"
        gone.write_bytes(goods[2].read_bytes()[:200])  # half written, then removed before it settles
        time.sleep(0.2)
        gone.unlink()
        assert wait_for(lambda: len(rows(journal)) >= 6, 60), rows(journal)
        time.sleep(1.5)  # anything more (a second row, the removed file) would have come by now
    finally:
        code, out = stop(process)
    assert code == 0 and "Traceback" not in out and "stopped: 6 images judged" in out, out
    written = rows(journal)
    by_name = {r["path"]: r for r in written}
    assert len(written) == 6 and set(by_name) == {goods[0].name, f"line2/{defects[0].name}", goods[1].name, "empty.png", "text.png", "cut.png"}
    assert {by_name[n]["verdict"] for n in ("empty.png", "text.png", "cut.png")} == {"error"}
    assert "empty file" in by_name["empty.png"]["error"] and "not an image" in by_name["text.png"]["error"]
    truth = predicted(patchcore_model, parts / "good", tmp_path) | predicted(patchcore_model, parts / "not-good", tmp_path)
    for name in (goods[0].name, f"line2/{defects[0].name}", goods[1].name):
        row, expected = by_name[name], truth[Path(name).name]
        assert row["verdict"] == expected["verdict"] and float(row["score"]) == pytest.approx(float(expected["score"]), abs=1e-4)
    # Sorted after their rows were written; the text file stays where it was.
    assert (sorted_into / "good" / goods[0].name).exists() and (sorted_into / "error" / "cut.png").exists()
    assert (sorted_into / ("anomaly" if by_name[f"line2/{defects[0].name}"]["verdict"] == "anomaly" else "good") / "line2" / defects[0].name).exists()
    assert sorted(p.name for p in inbox.rglob("*") if p.is_file()) == ["notes.txt"]


def test_killed_at_random_moments_and_restarted_every_image_has_exactly_one_row(parts, patchcore_model, tmp_path):
    inbox, journal = tmp_path / "inbox", tmp_path / "journal.csv"
    inbox.mkdir()
    images = sorted(parts.glob("*/*.png"))
    rng = random.Random(0)
    names, workers = [], []
    kills = 0
    process = start(patchcore_model, inbox, journal)
    wait_started(process, journal)
    for i in range(3 * len(images) // 2):  # 54 arrivals: each image once, some twice under new names
        source = images[i % len(images)]
        name = f"part{i:03d}.png"
        shutil.copy(source, inbox / name)
        names.append((name, source))
        time.sleep(rng.uniform(0.0, 0.05))
        if i % 12 == 11:  # a kill, at a random moment after a few arrivals, then a restart
            time.sleep(rng.uniform(0.0, 0.4))
            workers += subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
            process.kill()
            process.wait()
            kills += 1
            process = start(patchcore_model, inbox, journal)
            wait_started(process, journal)
    try:
        assert wait_for(lambda: len(rows(journal)) >= len(names), 120)
        time.sleep(1.0)
    finally:
        code, out = stop(process)
    assert kills == 4 and code == 0, out
    assert workers and wait_for(lambda: not any(_running(pid) for pid in workers), 10)  # the killed watches' decoding workers died with them
    text = journal.read_text()
    assert text.endswith("\n") and text.splitlines()[0] == ",".join(COLUMNS)
    written = rows(journal)
    assert sorted(r["path"] for r in written) == sorted(n for n, _ in names)  # exactly one row each
    assert all(r["verdict"] in ("normal", "anomaly") for r in written)
    truth = predicted(patchcore_model, parts / "good", tmp_path) | predicted(patchcore_model, parts / "not-good", tmp_path)
    sources = dict(names)
    for row in written:
        assert row["verdict"] == truth[sources[row["path"]].name]["verdict"], row


def test_a_restart_judges_what_arrived_meanwhile_and_mends_a_cut_row(parts, patchcore_model, tmp_path):
    inbox, journal = tmp_path / "inbox", tmp_path / "journal.csv"
    inbox.mkdir()
    goods = sorted((parts / "good").glob("*.png"))
    for source in goods[:3]:
        shutil.copy(source, inbox / source.name)
    process = start(patchcore_model, inbox, journal)
    wait_started(process, journal)
    assert wait_for(lambda: len(rows(journal)) == 3)
    stop(process)
    with open(journal, "a") as handle:  # what a power cut can leave: half a row
        handle.write("2026-12-02T00:00:00.000+00:00,good9")
    for source in goods[3:5]:
        shutil.copy(source, inbox / source.name)
    process = start(patchcore_model, inbox, journal)
    started = wait_started(process, journal)
    assert wait_for(lambda: len(rows(journal)) == 5)
    code, out = stop(process)
    assert "(3 rows, 1 cut row(s) mended)" in started and code == 0
    assert sorted(r["path"] for r in rows(journal)) == sorted(s.name for s in goods[:5])


def _running(pid: str) -> bool:
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1][:4]
    except (OSError, IndexError):
        return False


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_journal_that_cannot_be_written_stops_the_watch_with_one_line_and_keeps_its_rows(parts, patchcore_model, tmp_path):
    inbox, journal = tmp_path / "inbox", tmp_path / "journal.csv"
    inbox.mkdir()
    goods = sorted((parts / "good").glob("*.png"))
    shutil.copy(goods[0], inbox / goods[0].name)
    process = start(patchcore_model, inbox, journal)
    wait_started(process, journal)
    assert wait_for(lambda: len(rows(journal)) == 1)
    stop(process)
    before = journal.read_bytes()
    # The disk is full from here on: the journal cannot grow by another row.
    process = start(patchcore_model, inbox, journal, preexec_fn=_limit_file_size(len(before) + 20))
    wait_started(process, journal)
    shutil.copy(goods[1], inbox / goods[1].name)
    out, _ = process.communicate(timeout=60)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert process.returncode == 1 and "Traceback" not in out and len(errors) == 1, out
    assert "cannot write the journal" in errors[0] and "every row before this one is kept" in errors[0]
    assert journal.read_bytes() == before  # nothing torn, nothing lost
    # Space again: the image is judged then.
    process = start(patchcore_model, inbox, journal)
    wait_started(process, journal)
    assert wait_for(lambda: len(rows(journal)) == 2)
    stop(process)


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["{inbox}", "--journal", "{tmp}/file.txt/j.csv"], "cannot open the journal"),
        (["{inbox}", "--journal", "{tmp}/j.txt"], "--journal must end in .csv"),
        (["{inbox}", "--journal", "{inbox}/j.csv"], "inside the watched folder"),
        (["{tmp}/nowhere", "--journal", "{tmp}/j.csv"], "does not exist"),
        (["{inbox}"], "give the journal"),
        (["{inbox}", "--journal", "{tmp}/j.csv", "--sort-into", "{inbox}"], "must be a folder other than the watched one"),
        (["{inbox}", "--journal", "{tmp}/j.csv", "--sort-into", "{tmp}/file.txt"], "file.txt is a file, not a folder"),
        (["{inbox}", "--journal", "{tmp}/j.csv", "--keep-flagged", "{tmp}/file.txt/kept"], "file.txt is a file, not a folder"),
    ],
)
def test_watch_mistakes_are_one_clear_line(patchcore_model, tmp_path, arguments, expected):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "file.txt").write_text("a file, not a folder")
    args = [a.format(inbox=inbox, tmp=tmp_path) for a in arguments]
    done = subprocess.run([sys.executable, "-m", "anomalycli", "watch", str(patchcore_model), *args], capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout and len(errors) == 1, done.stderr
    assert expected in " ".join(done.stderr.split())


def test_the_disk_guard_pauses_judging_with_one_line(parts, patchcore_model, tmp_path):
    inbox, journal = tmp_path / "inbox", tmp_path / "journal.csv"
    inbox.mkdir()
    shutil.copy(next((parts / "good").glob("*.png")), inbox / "a.png")
    process = start(patchcore_model, inbox, journal, "--min-free", "1000000000")
    wait_started(process, journal)
    guard = process.stdout.readline()  # the watch's next line, whenever a loaded machine lets it come
    time.sleep(2)
    code, out = stop(process)
    out = guard + out
    assert code == 0 and out.count("disk guard:") == 1 and guard.startswith("disk guard:") and "no image is judged until there is more" in out
    assert len(rows(journal)) == 0 and (inbox / "a.png").exists()


def test_flagged_images_are_kept_with_their_heat_maps_and_their_regions_counted(parts, patchcore_model, tmp_path):
    inbox, keep, journal = tmp_path / "inbox", tmp_path / "keep", tmp_path / "journal.csv"
    inbox.mkdir()
    process = start(patchcore_model, inbox, journal, "--keep-flagged", keep, "--regions")
    wait_started(process, journal)
    defects = sorted((parts / "not-good").glob("*.png"))[:4]
    for source in defects:
        shutil.copy(source, inbox / source.name)
    Image.open(defects[0]).convert("RGB").save(inbox / defects[0].with_suffix(".jpg").name, quality=95)  # one name, two images
    assert wait_for(lambda: len(rows(journal)) == 5)
    stop(process)
    flagged = sorted(r["path"] for r in rows(journal) if r["verdict"] == "anomaly")
    assert defects[0].with_suffix(".jpg").name in flagged and sorted(p.name for p in (keep / "images").iterdir()) == flagged
    assert all(int(r["regions"]) >= 1 and float(r["largest_area_px"]) > 0 for r in rows(journal) if r["verdict"] == "anomaly")
    expected = [n if n.endswith(".png") else f"{n}.png" for n in flagged]  # a.jpg's a.jpg.png beside a.png's a.png
    assert sorted(p.name for p in (keep / "heatmaps").iterdir()) == sorted([".anomalycli-heatmaps", *expected])


def test_the_journal_is_plain_csv_a_spreadsheet_reads(tmp_path):
    from anomalycli.deploy.journal import Journal, JournalError

    opened = Journal(tmp_path / "j.csv")
    opened.append([{"time": "t", "path": 'a, "b".png', "score": "0.5", "raw_score": "1", "verdict": "anomaly", "error": "", "bytes": "1", "mtime_ns": "2"}])
    opened.close()
    again = Journal(tmp_path / "j.csv")
    assert again.rows == 1 and again.verdict(('a, "b".png', "1", "2")) == "anomaly" and again.repaired == 0
    again.close()
    assert list(csv.DictReader(io.StringIO((tmp_path / "j.csv").read_text())))[0]["path"] == 'a, "b".png'
    (tmp_path / "other.csv").write_text("name,score\nx,1\n")
    with pytest.raises(JournalError, match="is not a journal of anomaly watch"):
        Journal(tmp_path / "other.csv")


def test_watch_of_an_int8_model_never_imports_pytorch(patchcore_model, tmp_path):
    (tmp_path / "inbox").mkdir()
    script = (
        "import os, signal, sys, threading\nfrom anomalycli.cli import main\n"
        "threading.Timer(3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()\n"
        f"sys.argv = ['anomaly', 'watch', {str(patchcore_model)!r}, {str(tmp_path / 'inbox')!r}, '--journal', {str(tmp_path / 'j.csv')!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('imported:', sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "stopped: 0 images judged" in done.stdout and "imported: []" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("change", ["darker", "jpeg"])
def test_the_drift_check_runs_on_the_stream_and_its_state_lies_beside_the_journal(change, parts, patchcore_model, tmp_path):
    from PIL import Image, ImageEnhance

    inbox, journal = tmp_path / "inbox", tmp_path / "journal.csv"
    inbox.mkdir()
    process = start(patchcore_model, inbox, journal)
    wait_started(process, journal)
    goods = sorted((parts / "good").glob("*.png"))
    for i in range(60):
        if change == "darker":  # the lamp has aged: every part darker
            ImageEnhance.Brightness(Image.open(goods[i % len(goods)])).enhance(0.5).save(inbox / f"dark{i:02d}.png")
        else:  # the line PC saves JPEG, and at a low quality
            Image.open(goods[i % len(goods)]).save(inbox / f"saved{i:02d}.jpg", quality=20)
    assert wait_for(lambda: len(rows(journal)) == 60)
    code, out = stop(process)
    said = [line for line in out.splitlines() if line.startswith("drift:")]
    assert code == 0 and len(said) == 1 and said[0].startswith("drift: the last 50 images do not look like the training data"), out
    assert ("Likely cause: these images are JPEG at quality 20 (50 of the 50 looked at), the training images lossless" in said[0]) == (change == "jpeg")
    state = json.loads((tmp_path / "journal.drift.json").read_text())
    assert state["state"] == "drift" and state["message"] == said[0]


def test_a_watch_slow_to_stop_writes_where_it_waits(tmp_path):
    script = (
        "import os, signal, threading, time\nfrom anomalycli.workflows import watch\n"
        "watch.SLOW_STOP_SECONDS = 0.5\nstop = threading.Event()\nwith watch.stop_on_signals(stop):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(2)\nprint('stopped', stop.is_set())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "stopped True" in done.stdout
    # Whether the stop was seen, and the main thread's stack where it waited: the script's sleep (line 7).
    assert "(stop flag set)" in done.stderr and "most recent call first" in done.stderr and 'File "<string>", line 7' in done.stderr, done.stderr


def test_a_watch_that_stopped_in_time_leaves_no_report_and_its_handlers_go(tmp_path):
    # A program calling the watch in-process lives on after it: no late report, SIGTERM its own again.
    script = (
        "import os, signal, threading, time\nfrom anomalycli.workflows import watch\n"
        "watch.SLOW_STOP_SECONDS = 0.5\nstop = threading.Event()\nwith watch.stop_on_signals(stop):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(1.5)\nprint('stopped', stop.is_set(), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "stopped True True" in done.stdout and "still stopping" not in done.stderr, done.stderr
