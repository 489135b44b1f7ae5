"""The station's MQTT messages, against a real broker (Debian's mosquitto, which .ci/run installs)
and a subscriber on 127.0.0.1: every result once at QoS 1, through a broker restart."""

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

import paho.mqtt.client as mqtt
import pytest

from tests.test_station import _free_port, drop, journal_rows, wait_for_rows, write_station

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# Skipped on a machine without the broker, but never in CI: .ci/run installs it and sets ANOMALYCLI_REQUIRE_BROKER.
pytestmark = pytest.mark.skipif(
    not Path(MOSQUITTO).exists() and not os.environ.get("ANOMALYCLI_REQUIRE_BROKER"), reason="mosquitto is not installed (apt-get install mosquitto)"
)


class Broker:
    """mosquitto on 127.0.0.1:``port``, persisting its sessions in ``folder`` across restarts."""

    def __init__(self, folder: Path, port: int):
        self.port = port
        self.config = folder / "mosquitto.conf"
        folder.mkdir(exist_ok=True)
        # As root, mosquitto drops to the user "mosquitto", who could not write the test's folder: it stays this user.
        user = f"user {getpass.getuser()}\n"
        self.config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {folder}/\n{user}")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            try:
                probe.connect("127.0.0.1", self.port)
                probe.disconnect()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # it saves its sessions and queued messages first
        self.process.wait(10)


class Subscriber:
    def __init__(self, port: int, topic: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-mes", clean_session=False)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = lambda client, *args: client.subscribe(topic + "/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, message.retain))

    def results(self) -> list[dict]:
        with self.lock:
            return [json.loads(payload) for topic, payload, _ in self.messages if topic.endswith("/results")]

    def statuses(self) -> list[str]:
        with self.lock:
            return [payload.decode() for topic, payload, _ in self.messages if topic.endswith("/status")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_every_result_is_one_message_through_a_broker_restart_and_the_status_says_online_then_offline(parts, patchcore_model, running_station, tmp_path):
    port = _free_port()
    broker = Broker(tmp_path / "broker", port)
    broker.start()
    subscriber = Subscriber(port, "line1/anomaly")
    extra = f'[mqtt]\nbroker = "127.0.0.1:{port}"\ntopic = "line1/anomaly"\nclient_id = "station-under-test"\n[station]\nregions = true'
    station = running_station(write_station(tmp_path, {1: patchcore_model}, extra=extra))
    images = sorted(parts.glob("*/*.png"))[::3][:10]  # goods and defects
    inbox, journal = tmp_path / "inbox", tmp_path / "verdicts.csv"
    try:
        drop(images[:5], inbox, [f"part{i}.png" for i in range(5)])
        assert wait_for_rows(journal, 5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(subscriber.results()) < 5:
            time.sleep(0.05)
        broker.stop()  # the broker goes away; the next parts are judged meanwhile
        drop(images[5:], inbox, [f"part{i}.png" for i in range(5, 10)])
        assert wait_for_rows(journal, 10)
        broker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({m["seq"] for m in subscriber.results()}) < 10:
            time.sleep(0.1)
        results = subscriber.results()
        rows = {int(r["seq"]): r for r in journal_rows(journal)}
        assert sorted({m["seq"] for m in results}) == sorted(rows), "no QoS 1 message lost through the broker's restart"
        for message in results:
            row = rows[message["seq"]]
            assert message["part_id"] == int(row["part_id"]) and message["image"] == row["path"] and message["model_sha256"] == row["model_sha256"]
            assert message["score"] == pytest.approx(float(row["score"]), abs=1e-5) and message["verdict"] == ("NG" if row["verdict"] != "normal" else "OK")
            assert len(message["regions"]) == int(row["regions"]), "the regions asked for, as the journal counts them"
            if message["regions"]:
                assert message["regions"][0]["area_px"] == pytest.approx(float(row["largest_area_px"]), abs=0.1)
        assert any(m["regions"] for m in results), "a defect's regions reach the MES"
        assert "online" in subscriber.statuses()
        station.stop_running()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and subscriber.statuses()[-1:] != ["offline"]:
            time.sleep(0.05)
        assert subscriber.statuses()[-1] == "offline"
    finally:
        subscriber.close()
        broker.stop()


def test_a_station_killed_with_messages_unconfirmed_sends_them_again_when_it_starts(parts, patchcore_model, tmp_path):
    """The broker away, the station judges on and is SIGKILLed with those messages in its queue:
    restarted, it sends the journal's results the broker never confirmed, in order, marked as sent
    again; none the broker had confirmed is sent twice."""
    import sys

    port = _free_port()
    broker = Broker(tmp_path / "broker", port)
    broker.start()
    subscriber = Subscriber(port, "line1/anomaly")
    extra = f'[mqtt]\nbroker = "127.0.0.1:{port}"\ntopic = "line1/anomaly"\nclient_id = "station-killed"'
    path = write_station(tmp_path, {1: patchcore_model}, extra=extra)
    images = sorted(parts.glob("*/*.png"))[::3][:10]
    inbox, journal = tmp_path / "inbox", tmp_path / "verdicts.csv"
    delivered = tmp_path / "verdicts.csv.mqtt-delivered"

    def delivered_through(seq: int) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if delivered.exists() and delivered.read_text().strip() == str(seq):
                return True
            time.sleep(0.05)
        return False

    def start_station() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "anomalycli", "station", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        said = []
        for line in process.stdout:
            said.append(line)
            if line.startswith("station ready"):
                break
        threading.Thread(target=lambda: said.extend(process.stdout), daemon=True).start()
        process.said = said
        return process

    station = start_station()
    try:
        drop(images[:5], inbox, [f"part{i}.png" for i in range(5)])
        assert wait_for_rows(journal, 5)
        assert delivered_through(5), "the broker confirmed the first five"
        broker.stop()
        drop(images[5:], inbox, [f"part{i}.png" for i in range(5, 10)])
        assert wait_for_rows(journal, 10)
        station.kill()  # SIGKILL: the five messages waiting for the broker die with it
        station.wait(10)
        broker.start()
        station = start_station()
        assert any("5 results the broker had not confirmed" in line for line in station.said), station.said
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({m["seq"] for m in subscriber.results()}) < 10:
            time.sleep(0.1)
        results = subscriber.results()
        rows = {int(r["seq"]): r for r in journal_rows(journal)}
        assert sorted({m["seq"] for m in results}) == sorted(rows) == list(range(1, 11)), "no result lost through the kill"
        resent = [m for m in results if m.get("resent")]
        assert [m["seq"] for m in resent] == [6, 7, 8, 9, 10], "only the unconfirmed ones, in order"
        for message in resent:
            row = rows[message["seq"]]
            assert message["part_id"] == int(row["part_id"]) and message["image"] == row["path"] and message["model_sha256"] == row["model_sha256"]
            assert message["verdict"] == ("NG" if row["verdict"] != "normal" else "OK") and message["score"] == pytest.approx(float(row["score"]), abs=1e-5)
        assert delivered_through(10)
    finally:
        station.kill()
        station.wait(10)
        subscriber.close()
        broker.stop()


def test_results_published_while_the_broker_comes_back_never_overtake_those_held_during_its_absence(tmp_path):
    """Results made while the broker is away wait in the client; once it is back, results published
    as it reconnects go after them, never before (an MES may read ``seq`` order as the line's)."""
    from anomalycli.deploy.station.mqtt import MqttPublisher

    port = _free_port()
    broker = Broker(tmp_path / "broker", port)
    broker.start()
    subscriber = Subscriber(port, "line1/anomaly")
    publisher = MqttPublisher(f"127.0.0.1:{port}", "line1/anomaly", "publisher-under-test")
    publisher.start()
    seq = 0

    def publish() -> None:
        nonlocal seq
        seq += 1
        publisher.publish({"seq": seq})

    try:
        assert publisher.connected.wait(10)
        publish()
        for restart in range(5):
            broker.stop()
            deadline = time.monotonic() + 10
            while publisher.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            for _ in range(3):  # held while the broker is away
                publish()
            broker.start()
            deadline = time.monotonic() + 10
            while not publisher.connected.is_set() and time.monotonic() < deadline:
                publish()  # published as the client reconnects: the window a live result could overtake in
                time.sleep(0.001)
            for _ in range(20):
                publish()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len({m["seq"] for m in subscriber.results()}) < seq:
            time.sleep(0.05)
        arrived = [m["seq"] for m in subscriber.results()]
        assert sorted(set(arrived)) == list(range(1, seq + 1)), "none lost"
        firsts = [s for i, s in enumerate(arrived) if s not in arrived[:i]]
        overtaken = next((i for i in range(1, len(firsts)) if firsts[i] < firsts[i - 1]), None)
        assert overtaken is None, f"out of order: {firsts[max(0, overtaken - 3) : overtaken + 3]} of {len(firsts)}"
    finally:
        publisher.stop()
        subscriber.close()
        broker.stop()
