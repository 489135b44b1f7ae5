"""The station under a line's faults, many parts through the PLC simulator: parts lost, results
the PLC read twice (stale), results with another part's ID, and verdicts against ``predict``'s.

One run of ``n`` parts, one at a time as a line sends them, with two recipes (the model, and the
model recalibrated to another threshold: the same scores, other verdicts, another sha256), and an
MES subscribed over MQTT (QoS 1, a persistent session) while, at points spread over the run:
- the PLC switches recipe every 100 parts;
- the station is SIGKILLed and restarted twice;
- the PLC drops its connection twice and comes back (a new simulator process);
- the PLC stops acknowledging for a stretch longer than the station's queue (results wait, then
  ``overrun``; the journal keeps every one), then a PLC that acknowledges again takes over;
- the broker is stopped for a few parts and started again;
- recipe 2's model file is replaced by a broken one while it judges (the old model must keep
  judging), then by the good file again.
Each part's expected verdict and score are ``anomaly predict``'s with its recipe's model on the
same image.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.common import anomaly_command, csv_rows, wait_until


def run_faults(model: Path, images: list[Path], tmp: Path, n: int, station_file, start, stop, simulator, port: int, broker_port: int) -> dict:
    """``station_file``, ``start``, ``stop`` and ``simulator`` are the station topic's helpers (``station.py``)."""
    from pyModbusTCP.client import ModbusClient

    other = tmp / "recalibrated.safetensors"
    subprocess.run(anomaly_command("calibrate", str(model), "--max-fpr", "0.2", "--out", str(other)), check=True, capture_output=True)
    good_other = other.read_bytes()
    truth = {1: _predicted(model, images, tmp / "p1.csv"), 2: _predicted(other, images, tmp / "p2.csv")}
    broker = _Broker(tmp / "broker", broker_port)
    path = station_file(tmp / "faults", [model, other], port, broker.station_lines())
    inbox, journal = path.parent / "inbox", path.parent / "verdicts.csv"
    mes = _Subscriber(broker_port)
    station = start(path)
    said: list[str] = []
    seen: list[dict] = []
    plc = simulator(port, "--seconds", 3600)
    recipe_writer = ModbusClient(host="127.0.0.1", port=port, unit_id=1, auto_open=True, timeout=2)
    kills, drops = {n // 3, 2 * n // 3}, {n // 4, 3 * n // 4}
    no_ack = (2 * n // 5, 2 * n // 5 + max(2, min(30, n // 10)))  # from, to: longer than the queue of 8
    broker_down = (n // 2, n // 2 + max(1, n // 200))
    broken = (7 * n // 10, 8 * n // 10)  # recipe 2 judges parts 700-799 of 1,000
    shown_without_ack: list[dict] = []
    try:
        for i in range(n):
            if i % 100 == 0:
                recipe_writer.write_single_register(2, 1 + (i // 100) % 2)
                wait_until(lambda: recipe_writer.read_input_registers(7, 1) == [1 + (i // 100) % 2], 10, 0.01)
            image = images[i % len(images)]
            with open(inbox / f"{i + 1:06d}.png", "wb") as handle:
                handle.write(image.read_bytes())
            wait_until(lambda: len(csv_rows(journal)) > i, 60, 0.01)
            if i in kills:
                said += stop(station, kill=True)
                station = start(path)
            if i in drops or i in no_ack:  # the PLC's connection gone, and a new one (not acknowledging, or again)
                plc.terminate()
                (shown_without_ack if i == no_ack[1] else seen).extend(_results(plc))
                plc = simulator(port, "--seconds", 3600, *(("--no-ack",) if i == no_ack[0] else ()))
            if i == broker_down[0]:
                broker.stop()
            if i == broker_down[1]:
                broker.start()
            if i in broken:  # written as calibrate writes: a new file renamed over the old
                (tmp / "replacement").write_bytes(b"not a model" if i == broken[0] else good_other)
                os.replace(tmp / "replacement", other)
        time.sleep(2.0)  # the last results and messages
    finally:
        plc.terminate()
        seen += _results(plc)
        said += stop(station)
        mes.close()
        broker.stop()
    rows = csv_rows(journal)
    by_seq = {int(r["seq"]): r for r in rows}
    parts = {int(r["part_id"]) for r in rows}
    seqs = [r["seq"] for r in seen]
    wrong_verdict, score_diff = 0, 0.0
    for row in rows:
        expected = truth[int(row["recipe"])][images[(int(row["part_id"]) - 1) % len(images)].name]
        wrong_verdict += row["verdict"] != expected["verdict"]
        # the same scores but for the journal's and the CSV's rounding (each image is its own ONNX Runtime call)
        score_diff = max(score_diff, abs(float(row["score"]) - float(expected["score"])))
    return {
        "faults_parts": n,
        "faults_kills": len(kills),
        "faults_plc_drops": len(drops),
        "faults_lost": n - len(parts & set(range(1, n + 1))),
        "faults_rows": len(rows),
        "faults_repeated_rows": len(rows) - len({r["path"] for r in rows}),
        "faults_plc_results": len(seen),
        "faults_stale": len(seqs) - len(set(seqs)) + sum(b <= a for a, b in zip(seqs, seqs[1:])),
        "faults_wrong_part": sum(int(by_seq[r["seq"]]["part_id"]) != r["part_id"] for r in seen if r["seq"] in by_seq),
        "faults_wrong_recipe": sum(int(by_seq[r["seq"]]["recipe"]) != r["recipe"] for r in seen if r["seq"] in by_seq),
        "faults_wrong_verdict": wrong_verdict,
        "faults_score_max_diff": score_diff,
        "faults_no_ack_parts": no_ack[1] - no_ack[0],
        "faults_overrun_said": sum("overrun:" in line for line in said),
        "faults_broker_down_parts": broker_down[1] - broker_down[0],
        "faults_mqtt_lost": len({int(r["seq"]) for r in rows} - mes.seqs),
        "faults_broken_model_refused": sum("does not load" in line for line in said),
        "faults_model_replaced": sum("model file replaced" in line for line in said),
    }


def _predicted(model: Path, images: list[Path], out: Path) -> dict[str, dict]:
    listing = out.with_suffix(".txt")
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    subprocess.run(anomaly_command("predict", str(model), str(listing), "--output", str(out)), check=True, capture_output=True)
    return {Path(r["path"]).name: r for r in csv_rows(out)}


def _results(plc: subprocess.Popen) -> list[dict]:
    out, _ = plc.communicate(timeout=60)
    return [r for r in (json.loads(line) for line in out.splitlines() if line.strip()) if "seq" in r]


class _Broker:
    """mosquitto on 127.0.0.1, keeping its sessions and queued messages across a restart."""

    def __init__(self, folder: Path, port: int):
        folder.mkdir()
        self.port, self.config, self.process = port, folder / "mosquitto.conf", None
        self.config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {folder}/\nuser {getpass.getuser()}\n")
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # it saves its sessions and queued messages first
            self.process.wait(10)

    def station_lines(self) -> list[str]:
        return ["[mqtt]", f'broker = "127.0.0.1:{self.port}"', 'topic = "faults"']


class _Subscriber:
    """An MES: every result's sequence number, through the broker's restart (QoS 1, a persistent session)."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self.seqs: set[int] = set()
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-mes", clean_session=False)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = lambda client, *args: client.subscribe("faults/results", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.seqs.add(json.loads(message.payload)["seq"])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
