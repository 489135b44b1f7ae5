"""anomaly station: the station file, the handshake's rules, and the whole station against a PLC
simulator (a Modbus client process of another library) on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from anomalycli.data.synthetic import make_dataset
from anomalycli.deploy.station import signals
from anomalycli.deploy.station.config import parse
from anomalycli.deploy.station.modbus import ModbusServer, table_size, value_of
from anomalycli.workflows.station import COLUMNS
from tests.conftest import one_clear_line, run_cli
from tests.test_bit_depth import as_low_bits
from tests.test_handshake import ready_handshake

SIMULATOR = Path(__file__).with_name("plc_simulator.py")


# --- the Modbus server, read by another library's client -------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_modbus_map_is_what_a_second_client_library_reads_and_writes():
    from pyModbusTCP.client import ModbusClient

    handshake = ready_handshake()
    server = ModbusServer(handshake, port=_free_port())
    server.start()
    try:
        plc = ModbusClient(host="127.0.0.1", port=server.port, unit_id=1, auto_open=True, timeout=2)
        assert plc.write_multiple_registers(0, [0x0001, 0x86A0])  # part_id 100000, high word first
        assert handshake.part_id() == 100_000
        handshake.publish(handshake.new_result(handshake.part_id(), 1, 0.75, True))
        bits = plc.read_discrete_inputs(0, table_size("discrete"))
        registers = plc.read_input_registers(0, table_size("input"))
        state = {name: bits[s.address] for name, s in signals.MODBUS_MAP.items() if s.table == "discrete"}
        state.update({name: value_of(registers[s.address : s.address + s.registers], s.type) for name, s in signals.MODBUS_MAP.items() if s.table == "input"})
        assert state["ready"] and state["result_valid"] and state["ng"] and not state["ok"] and not state["error"]
        assert state["part_id_echo"] == 100_000 and state["score"] == pytest.approx(0.75) and state["recipe_active"] == 1
        assert plc.write_single_coil(signals.MODBUS_MAP["result_ack"].address, True)
        assert not plc.read_discrete_inputs(signals.MODBUS_MAP["result_valid"].address, 1)[0]
    finally:
        server.stop()


def test_stop_after_a_failed_start_sends_no_shutdown_to_the_closing_loop(monkeypatch):
    """A shutdown scheduled on the loop that is closing after a failed start is never awaited, and
    Python then prints a warning after the start's one error line (seen in the suite under load)."""
    import asyncio

    from anomalycli.errors import UserError

    class LingeringEvent(threading.Event):  # the server's loop still running when start() has failed, as under load
        def set(self):
            super().set()
            if threading.current_thread().name == "modbus":
                time.sleep(0.5)

    sent = []
    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", lambda coro, loop: sent.append(coro.close()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ModbusServer(ready_handshake(), port=taken.getsockname()[1])
        server._started = LingeringEvent()
        with pytest.raises(UserError, match="could not listen"):
            server.start()
        server.stop()
    assert sent == []


def test_the_map_prints_as_json_for_a_plc_program_and_is_fixed():
    mapped = json.loads(run_cli("station", "--map", "--json").output)["signals"]
    assert set(mapped) == set(signals.FROM_PLC) | set(signals.TO_PLC)
    # The addresses a PLC program is written against: changing one breaks every line that uses it.
    assert {k: (v["table"], v["address"], v["type"]) for k, v in mapped.items() if k in ("trigger", "result_ack", "part_id", "result_valid", "score")} == {
        "trigger": ("coil", 0, "bool"),
        "result_ack": ("coil", 1, "bool"),
        "part_id": ("holding", 0, "uint32"),
        "result_valid": ("discrete", 2, "bool"),
        "score": ("input", 5, "float32"),
    }


# --- the station file -------------------------------------------------------------------------


def write_station(folder: Path, recipes: dict[int, Path], port: int | None = None, extra: str = "") -> Path:
    lines = ["[source]", 'inbox = "inbox"', 'part_id_pattern = "part(?P<part_id>\\\\d+)"', "settle_seconds = 0.5", "[recipes]"]
    lines += [f'{number} = "{model}"' for number, model in recipes.items()]
    if port:
        lines += ["[modbus]", f"port = {port}"]
    lines += ["[journal]", 'path = "verdicts.csv"', extra]
    (folder / "inbox").mkdir(exist_ok=True)
    path = folder / "station.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_check_says_every_mistake_in_one_line_each(patchcore_model, tmp_path):
    path = write_station(tmp_path, {1: patchcore_model, 2: tmp_path / "missing.safetensors"}, port=_free_port(), extra="[modbus_typo]\nport = 1")
    result = run_cli("station", "--check", path, expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and len(errors) == 1 and "unknown section [modbus_typo]" in errors[0]
    path = write_station(tmp_path, {1: patchcore_model, 2: tmp_path / "missing.safetensors"}, port=_free_port())
    errors = [line for line in run_cli("station", "--check", path, expect=1).output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "recipe 2" in errors[0] and "does not exist" in errors[0]
    assert "no mistakes" in run_cli("station", "--check", write_station(tmp_path, {1: patchcore_model}, port=_free_port())).output
    station, mistakes = parse(tmp_path / "nope.toml")
    assert station is None and "does not exist" in mistakes[0]
    notepad = write_station(tmp_path, {1: patchcore_model}, port=_free_port())
    notepad.write_bytes("\ufeff".encode() + notepad.read_bytes().replace(b"\n", b"\r\n"))  # saved by Windows Notepad
    assert "no mistakes" in run_cli("station", "--check", notepad).output


@pytest.mark.parametrize("server", ["modbus", "opcua", "http"])
def test_a_port_already_taken_is_one_clear_line_and_nothing_else(server, patchcore_model, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = "" if server == "modbus" else f"[{server}]\nport = {port}"
        path = write_station(tmp_path, {1: patchcore_model}, port=port if server == "modbus" else _free_port(), extra=extra)
        done = subprocess.run([sys.executable, "-m", "anomalycli", "station", str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and f"listen on 127.0.0.1:{port}" in errors[0] and f"[{server}] port" in errors[0], done.stderr
    assert done.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in done.stderr, done.stderr  # nothing else said
    assert "Failed to start server" not in done.stderr and "Warning" not in done.stderr


def test_check_names_a_port_already_taken_as_the_station_would_refuse_it(patchcore_model, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_station(tmp_path, {1: patchcore_model}, extra=f"[http]\nport = {port}")
        errors = [line for line in run_cli("station", "--check", path, expect=1).output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another [http] port"]
    assert "no mistakes" in run_cli("station", "--check", path).output  # let go: free again


def test_a_camera_section_in_the_wrong_place_is_refused_in_one_line_never_ignored(patchcore_model, tmp_path):
    path = write_station(tmp_path, {1: patchcore_model}, extra='[camera]\ncti = "producer.cti"')
    assert "unknown section [camera]" in one_clear_line(run_cli("station", path, expect=None))


def test_a_journal_of_a_station_before_cameras_gets_the_new_columns_and_a_watch_journal_is_still_refused(patchcore_model, tmp_path):
    from anomalycli.deploy.journal import COLUMNS as WATCH_COLUMNS
    from anomalycli.workflows.station import BEFORE_CAMERAS

    path = write_station(tmp_path, {1: patchcore_model})
    old_row = ["2026-12-01T10:00:00.000+00:00", "part1.png", "0.1", "0.2", "normal", "", "10", "20", "30.0", "", "", "1", "41", "1", "abc", "0"]
    (tmp_path / "verdicts.csv").write_text(",".join(BEFORE_CAMERAS) + "\n" + ",".join(old_row) + "\n")
    assert "no mistakes" in run_cli("station", "--check", path).output
    rows = journal_rows(tmp_path / "verdicts.csv")
    assert list(rows[0]) == list(COLUMNS) and rows[0]["seq"] == "41" and rows[0]["archived"] == "" and len(rows) == 1
    (tmp_path / "verdicts.csv").write_text(",".join(WATCH_COLUMNS) + "\n")
    assert "is not a journal of anomaly station" in one_clear_line(run_cli("station", "--check", path, expect=1))


# --- the whole station, against the PLC simulator ---------------------------------------------


def predicted(model: Path, folder: Path, tmp_path: Path) -> dict[str, dict]:
    out = tmp_path / f"predicted-{model.parent.name}-{model.stem}.csv"
    run_cli("predict", model, folder, "--output", out)
    with open(out, newline="") as handle:
        return {Path(r["path"]).name: r for r in csv.DictReader(handle)}


def plc(port: int, *options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SIMULATOR), str(port), *map(str, options)], stdout=subprocess.PIPE, text=True)


def plc_lines(process: subprocess.Popen, timeout: float = 120) -> tuple[list[dict], dict]:
    out, _ = process.communicate(timeout=timeout)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r for r in rows if "done" not in r], next(r for r in rows if "done" in r)


def drop(images: list[Path], inbox: Path, names: list[str], pause: float = 0.0) -> None:
    for image, name in zip(images, names):
        shutil.copy(image, inbox / (name + ".tmp"))
        (inbox / (name + ".tmp")).rename(inbox / name)
        time.sleep(pause)


def journal_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_part_reaches_the_plc_once_in_order_with_its_own_id_and_predicts_verdict(parts, patchcore_model, running_station, tmp_path):
    images = sorted(parts.glob("*/*.png"))
    names = [f"part{1000 + i}.png" for i in range(len(images))]
    truth = predicted(patchcore_model, parts, tmp_path)
    port = _free_port()
    station = running_station(write_station(tmp_path, {1: patchcore_model}, port))
    simulator = plc(port, "--results", len(images), "--seconds", 120)
    drop(images, tmp_path / "inbox", names, pause=0.05)  # slower than the simulated PLC takes results: no overrun
    results, done = plc_lines(simulator)
    assert done["done"] == len(images) and not done["overrun"]
    assert [r["seq"] for r in results] == list(range(1, len(images) + 1)), "each result once, in order"
    assert [r["part_id"] for r in results] == [int(n[4:8]) for n in names], "each result with its own part"
    for result, image in zip(results, images):
        expected = truth[image.name]
        assert result["ng"] == (expected["verdict"] == "anomaly") and result["ok"] == (not result["ng"]) and not result["error"]
        assert result["score"] == pytest.approx(float(expected["score"]), abs=1e-3)
    rows = journal_rows(tmp_path / "verdicts.csv")
    assert list(rows[0]) == list(COLUMNS) and [int(r["seq"]) for r in rows] == [r["seq"] for r in results]
    assert station.handshake.snapshot()["heartbeat"] in (True, False)


def test_a_plc_that_never_acknowledges_gets_overrun_and_the_journal_keeps_every_part(parts, patchcore_model, running_station, tmp_path):
    images = sorted(parts.glob("*/*.png"))[:14]
    port = _free_port()
    running_station(write_station(tmp_path, {1: patchcore_model}, port, extra="[station]\nqueue = 4"))
    simulator = plc(port, "--no-ack", "--seconds", 15)
    drop(images, tmp_path / "inbox", [f"part{i}.png" for i in range(len(images))])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(journal_rows(tmp_path / "verdicts.csv")) < len(images):
        time.sleep(0.1)
    results, done = plc_lines(simulator)
    assert len(journal_rows(tmp_path / "verdicts.csv")) == len(images)
    assert done["overrun"] and [r["seq"] for r in results] == [1], "without an ack, the first result stays shown and nothing replaces it"


def test_a_model_fitted_on_12_bit_files_judges_them_at_the_station_as_predict_does(running_station, tmp_path):
    """The station reads a file on the bits its model records (data/bit_depth.py), as predict does."""
    data = make_dataset(tmp_path / "data" / "mono12", n_good=12, n_per_defect=2, size=48, masks=False)
    images = as_low_bits(data)[-6:]  # two goods and the four defects, as 16-bit files
    run_cli("train", data, "--method", "patchcore", "--image-size", "48", "--coreset-ratio", "0.2", "--run-dir", tmp_path / "run")
    model = tmp_path / "run" / "model.safetensors"
    truth = predicted(model, data, tmp_path)
    port = _free_port()
    running_station(write_station(tmp_path, {1: model}, port))
    simulator = plc(port, "--results", len(images), "--seconds", 60)
    drop(images, tmp_path / "inbox", [f"part{i}.png" for i in range(len(images))], pause=0.05)
    results, _ = plc_lines(simulator)
    assert [r["score"] for r in results] == pytest.approx([float(truth[p.name]["score"]) for p in images], abs=1e-3)


def test_an_unreadable_image_is_an_ng_with_its_error_code(patchcore_model, running_station, tmp_path):
    port = _free_port()
    running_station(write_station(tmp_path, {1: patchcore_model}, port))
    simulator = plc(port, "--results", 1, "--seconds", 60)
    (tmp_path / "inbox" / "part77.png").write_bytes(b"not an image at all")
    results, _ = plc_lines(simulator)
    assert results[0]["ng"] and results[0]["error"] and results[0]["error_code"] == signals.UNREADABLE and results[0]["part_id"] == 77


def test_a_recipe_switch_judges_each_part_by_the_recipe_active_when_it_arrived(parts, patchcore_model, hybrid_model, running_station, tmp_path):
    images = sorted(parts.glob("*/*.png"))[:6]
    port = _free_port()
    station = running_station(write_station(tmp_path, {1: patchcore_model, 2: hybrid_model}, port))
    simulator = plc(port, "--results", 6, "--seconds", 120, "--recipe", 2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and station.handshake.recipe_active != 2:
        time.sleep(0.02)
    drop(images, tmp_path / "inbox", [f"part{i}.png" for i in range(6)], pause=0.02)
    truth = predicted(hybrid_model, parts, tmp_path)
    results, _ = plc_lines(simulator, timeout=120)
    assert [r["recipe"] for r in results] == [2] * 6
    for result, image in zip(results, images):
        assert result["score"] == pytest.approx(float(truth[image.name]["score"]), abs=1e-3)
    rows = journal_rows(tmp_path / "verdicts.csv")
    sha = station.lines[2].identity["sha256"]
    assert {r["recipe"] for r in rows} == {"2"} and {r["model_sha256"] for r in rows} == {sha}


def test_killed_and_restarted_every_part_has_one_row_and_the_plc_never_sees_a_result_twice(parts, patchcore_model, tmp_path):
    import os
    import signal

    images = sorted(parts.glob("*/*.png"))[:24]
    port = _free_port()
    path = write_station(tmp_path, {1: patchcore_model}, port)

    said: list[str] = []

    def start_station() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "anomalycli", "station", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            said.append(line)
            if line.startswith("station ready"):
                break
        threading.Thread(target=lambda: said.extend(process.stdout), daemon=True).start()  # keep its pipe drained, and what it says
        return process

    station = start_station()
    # A result journaled but not yet read when the station was killed is not shown again: the PLC may see fewer.
    simulator = plc(port, "--results", len(images), "--seconds", 60)
    inbox = tmp_path / "inbox"
    for i, image in enumerate(images):
        drop([image], inbox, [f"part{i}.png"])
        time.sleep(0.08)
        if i in (7, 15):  # killed mid-stream, at once, and started again
            os.kill(station.pid, signal.SIGKILL)
            station.wait()
            station = start_station()
    results, done = plc_lines(simulator, timeout=240)
    station.send_signal(signal.SIGTERM)
    try:
        station.wait(60)
    except subprocess.TimeoutExpired:
        station.kill()
        raise AssertionError("the station did not stop within 60 s of SIGTERM; it said:\n" + "".join(said[-80:])) from None
    rows = journal_rows(tmp_path / "verdicts.csv")
    assert sorted(r["path"] for r in rows) == sorted(f"part{i}.png" for i in range(len(images))), "every part exactly one row"
    seqs = [r["seq"] for r in results]
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs), "the PLC never saw a result twice, nor one out of order"
    journaled = {int(r["seq"]): int(r["part_id"]) for r in rows}
    assert all(journaled[r["seq"]] == r["part_id"] for r in results), "every result the PLC read is the journal's, with its own part"
    assert len(journaled) == len(rows), "sequence numbers go on from the journal across restarts"


def test_a_replaced_model_file_takes_over_between_two_parts_and_a_broken_one_leaves_the_old_serving(
    parts, patchcore_model, hybrid_model, running_station, tmp_path
):
    import os

    from anomalycli.files import file_sha256

    recipe = tmp_path / "recipe.safetensors"
    shutil.copy(patchcore_model, recipe)
    images = sorted(parts.glob("*/*.png"))[:6]
    inbox, journal = tmp_path / "inbox", tmp_path / "verdicts.csv"
    station = running_station(write_station(tmp_path, {1: recipe}))
    drop(images[:2], inbox, ["part1.png", "part2.png"])
    assert wait_for_rows(journal, 2)
    staged = tmp_path / "staged.tmp"
    shutil.copy(hybrid_model, staged)
    os.replace(staged, recipe)  # as calibrate and adapt write: a whole new file under the name
    hybrid_sha = file_sha256(hybrid_model)[:16]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and station.lines[1].identity["sha256"] != hybrid_sha:
        time.sleep(0.05)
    assert any("model file replaced" in line for line in station.said), station.said
    drop(images[2:4], inbox, ["part3.png", "part4.png"])
    assert wait_for_rows(journal, 4)
    staged.write_bytes(b"not a model")
    os.replace(staged, recipe)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("does not load" in line for line in station.said):
        time.sleep(0.05)
    drop(images[4:6], inbox, ["part5.png", "part6.png"])
    assert wait_for_rows(journal, 6)
    rows = journal_rows(journal)
    assert [r["model_sha256"] for r in rows] == [file_sha256(patchcore_model)[:16]] * 2 + [hybrid_sha] * 4
    by_patchcore = predicted(patchcore_model, parts, tmp_path)
    truth = {f"part{i + 1}.png": by_patchcore[images[i].name] for i in range(2)}
    by_hybrid = predicted(hybrid_model, parts, tmp_path)
    truth.update({f"part{i + 1}.png": by_hybrid[images[i].name] for i in range(2, 6)})
    for row in rows:
        assert float(row["score"]) == pytest.approx(float(truth[row["path"]]["score"]), abs=1e-3), row["path"]


def wait_for_rows(journal: Path, n: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists() and len(journal_rows(journal)) >= n:
            return True
        time.sleep(0.05)
    return False


def test_health_and_metrics_show_the_handshake_and_ask_a_token_off_this_machine(patchcore_model, tmp_path):
    from starlette.testclient import TestClient

    from anomalycli.deploy.station.http import StationMetrics, make_app

    handshake = ready_handshake()
    metrics = StationMetrics()
    metrics.counted("NG")
    handshake.publish(handshake.new_result(5, 1, 0.9, True))
    client = TestClient(make_app(handshake, metrics, lambda: {"1": {"sha256": "abc"}}))
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["signals"]["result_valid"] and health["recipes"]["1"]["sha256"] == "abc"
    text = client.get("/metrics").text
    assert 'anomaly_station_parts_total{verdict="NG"} 1.0' in text and "anomaly_station_ready 1.0" in text
    guarded = TestClient(make_app(handshake, metrics, dict, token="t" * 16))
    assert guarded.get("/health").status_code == 401 and guarded.get("/health", headers={"Authorization": "Bearer " + "t" * 16}).status_code == 200
    path = write_station(tmp_path, {1: patchcore_model}, extra='[http]\nhost = "0.0.0.0"\nport = 8081')
    assert "give token" in one_clear_line(run_cli("station", path, expect=None))


def test_a_double_trigger_and_a_trigger_without_an_image_each_reach_the_plc_as_an_ng_with_its_code(patchcore_model, running_station, tmp_path):
    from pyModbusTCP.client import ModbusClient

    port = _free_port()
    path = write_station(tmp_path, {1: patchcore_model}, port, extra="[station]\ntrigger_timeout = 1.0")
    path.write_text(path.read_text().replace("[source]\n", '[source]\nmode = "trigger"\n'))
    running_station(path)
    simulator = plc(port, "--results", 2, "--seconds", 30)
    trigger = ModbusClient(host="127.0.0.1", port=port, unit_id=1, auto_open=True, timeout=2)  # the PLC's trigger output, its own connection
    for part in (31, 32):
        trigger.write_multiple_registers(0, [0, part])
        trigger.write_single_coil(0, True)
        trigger.write_single_coil(0, False)
    results, _ = plc_lines(simulator)
    assert [(r["part_id"], r["error_code"], r["ng"], r["error"]) for r in results] == [
        (32, signals.DOUBLE_TRIGGER, True, True),
        (31, signals.TRIGGER_TIMEOUT, True, True),
    ]


def test_an_inbox_stations_archive_keeps_the_flagged_and_unreadable_files_with_heat_maps_and_the_journal_names_them(
    parts, patchcore_model, running_station, tmp_path
):
    path = write_station(tmp_path, {1: patchcore_model}, extra='[archive]\npath = "kept"\nkeep_good_every = 0\nmin_free_mb = 0')
    station = running_station(path)
    bad = sorted(parts.glob("not-good/*.png"))[:3]
    good = sorted(parts.glob("good/*.png"))[:3]
    drop(good + bad, tmp_path / "inbox", [f"part{i}.png" for i in range(6)])
    (tmp_path / "inbox" / "part9.png").write_bytes(b"not an image")
    deadline = time.monotonic() + 30
    while len(journal_rows(tmp_path / "verdicts.csv")) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    station.stop_running()
    rows = journal_rows(tmp_path / "verdicts.csv")
    for row in rows:
        kept = tmp_path / "kept" / row["archived"]
        if row["verdict"] == "normal":
            assert row["archived"] == ""  # keep_good_every = 0: no good image kept
        else:
            assert row["archived"] and kept.is_file(), row
            assert kept.with_name(kept.stem + ".heatmap.png").is_file() == (row["verdict"] == "anomaly")
    assert any(r["verdict"] == "error" and r["archived"].endswith("_ERR_nan.png") for r in rows)


def test_a_trigger_keeps_its_part_while_its_image_is_still_being_written(patchcore_model, parts, running_station, tmp_path):
    path = write_station(tmp_path, {1: patchcore_model}, extra="[station]\ntrigger_timeout = 10.0")
    path.write_text(path.read_text().replace("[source]\n", '[source]\nmode = "trigger"\n').replace("settle_seconds = 0.5", "settle_seconds = 2.0"))
    station = running_station(path)
    station.handshake.write("part_id", 61)
    station.handshake.write("trigger", True)
    image = sorted(parts.glob("good/*.png"))[0].read_bytes()
    (tmp_path / "inbox" / "part0.png").write_bytes(image[: len(image) // 3])  # the camera program is still writing it
    time.sleep(0.8)
    (tmp_path / "inbox" / "part0.png").write_bytes(image)
    deadline = time.monotonic() + 20
    while not station.handshake.snapshot()["result_valid"] and time.monotonic() < deadline:
        time.sleep(0.05)
    shown = station.handshake.snapshot()
    assert shown["result_valid"] and shown["part_id_echo"] == 61 and shown["error_code"] == 0


def test_the_plc_dropping_its_connection_and_coming_back_misses_no_result_and_sees_none_twice(parts, patchcore_model, running_station, tmp_path):
    images = sorted(parts.glob("*/*.png"))[:10]
    port = _free_port()
    running_station(write_station(tmp_path, {1: patchcore_model}, port))
    first = plc(port, "--results", 4, "--seconds", 60)  # it takes four results, then its connection is gone
    drop(images, tmp_path / "inbox", [f"part{i}.png" for i in range(10)], pause=0.05)
    seen, _ = plc_lines(first)
    assert wait_for_rows(tmp_path / "verdicts.csv", 10)
    later, _ = plc_lines(plc(port, "--results", 6, "--seconds", 60))
    seqs = [r["seq"] for r in seen + later]
    assert seqs == list(range(1, 11)), "every result once, in order, across the PLC's reconnection"


def test_a_recipe_switched_in_the_middle_of_a_stream_never_judges_a_part_by_the_wrong_model(parts, patchcore_model, hybrid_model, running_station, tmp_path):
    from pyModbusTCP.client import ModbusClient

    images = sorted(parts.glob("*/*.png"))[:16]
    port = _free_port()
    station = running_station(write_station(tmp_path, {1: patchcore_model, 2: hybrid_model}, port))
    simulator = plc(port, "--results", len(images), "--seconds", 120)
    recipe_writer = ModbusClient(host="127.0.0.1", port=port, unit_id=1, auto_open=True, timeout=2)
    for i, image in enumerate(images):
        if i in (5, 11):
            recipe_writer.write_single_register(2, 2 if i == 5 else 1)
        drop([image], tmp_path / "inbox", [f"part{i}.png"], pause=0.03)
    results, _ = plc_lines(simulator)
    rows = journal_rows(tmp_path / "verdicts.csv")
    sha = {str(n): line.identity["sha256"] for n, line in station.lines.items()}
    assert len(rows) == len(images) and all(r["model_sha256"] == sha[r["recipe"]] for r in rows), "each part by its recipe's model"
    assert {r["recipe"] for r in rows} == {"1", "2"} and [r["recipe"] for r in results] == [int(r["recipe"]) for r in rows]
    by_model = {"1": predicted(patchcore_model, parts, tmp_path), "2": predicted(hybrid_model, parts, tmp_path)}
    for row, image in zip(rows, images):
        assert float(row["score"]) == pytest.approx(float(by_model[row["recipe"]][image.name]["score"]), abs=1e-3)
