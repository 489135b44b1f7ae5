"""The station: from an image's close to its result at the PLC, a recipe switch, and the memory of a
station with five recipes.

Per data set, the default model (``anomaly train DATA``) in ``anomaly station`` as a line starts
it, and the tests' PLC simulator (``tests/plc_simulator.py``: pyModbusTCP, scanning every 10 ms)
as a separate process:
- latency, one part at a time: the writer's close of the image to the simulator's scan that reads
  ``result_valid`` (median and p99), beside the station's own time from the image's arrival to its
  verdict (the journal's ``latency_ms``): the difference is what the handshake adds;
- a recipe switch: ``recipe_request`` written to the scan that sees the recipe active and ``ready``;
- on the first set, memory: a station with five recipes (five copies of the model, as five
  products), the PLC switching recipe every 100 parts, its resident memory once ready and after
  every part was judged.
Images: the set's own at 1024 x 1024 when ``../shared/data/screws-1024`` does not hold camera images of it.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CAMERA, REPO, anomaly_command, csv_rows, rss_mib, runs_table, samples_of, wait_until
from benchmarks.speed import fit_process, upscaled_copies
from benchmarks.station_faults import run_faults

TITLE = "The station: a PLC's view"
SIMULATOR = REPO / "tests" / "plc_simulator.py"
COUNTS = {"latency": 60, "switches": 20, "memory": 1000, "faults": 1000}
QUICK_COUNTS = {"latency": 6, "switches": 4, "memory": 40, "faults": 24}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _station_file(folder: Path, models: list[Path], port: int, extra: list[str] = ()) -> Path:
    (folder / "inbox").mkdir(parents=True)
    lines = ["[source]", 'inbox = "inbox"', 'part_id_pattern = "(?P<part_id>\\\\d+)"', "[recipes]"]
    lines += [f'{i + 1} = "{m}"' for i, m in enumerate(models)]
    lines += ["[modbus]", f"port = {port}", "[journal]", 'path = "verdicts.csv"', *extra]
    path = folder / "station.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(path: Path) -> subprocess.Popen:
    process = subprocess.Popen(anomaly_command("station", str(path)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("station ready"):
            break
    process.said = []  # what it says once ready, its pipe kept drained
    process.drain = threading.Thread(target=lambda: process.said.extend(process.stdout), daemon=True)
    process.drain.start()
    return process


def _stop(process: subprocess.Popen, kill: bool = False) -> list[str]:
    """Stop a station ``_start`` started (SIGTERM, or SIGKILL with ``kill``) and return all it said
    once ready: its pipe read to the end and closed."""
    if kill:
        process.kill()
    else:
        process.terminate()
    process.wait(60)
    process.drain.join(10)
    process.stdout.close()
    return process.said


def _simulator(port: int, *options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SIMULATOR), str(port), *map(str, options)], stdout=subprocess.PIPE, text=True)


def _lines(process: subprocess.Popen, timeout: float) -> list[dict]:
    out, _ = process.communicate(timeout=timeout)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class Listeners:
    """An MES on MQTT (a paho subscriber, with a mosquitto broker of its own) and a client on OPC
    UA (an asyncua subscription to ``result_seq``), each noting when every result reached it."""

    def __init__(self, tmp: Path):
        self.mqtt_times: dict[int, float] = {}
        self.opcua_times: dict[int, float] = {}
        self.mqtt_port, self.opcua_port = _port(), _port()
        self.broker = None
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if Path(mosquitto).exists():
            config = tmp / "mosquitto.conf"
            config.write_text(f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n")
            self.broker = subprocess.Popen([mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._stop = threading.Event()

    def station_lines(self) -> list[str]:
        lines = ["[opcua]", f"port = {self.opcua_port}"]
        if self.broker is not None:
            lines += ["[mqtt]", f'broker = "127.0.0.1:{self.mqtt_port}"', 'topic = "bench"']
        return lines

    def start(self) -> None:
        """Once the station is ready: subscribe to both."""
        if self.broker is not None:
            import paho.mqtt.client as mqtt

            self.subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            self.subscriber.on_message = lambda client, userdata, message: self.mqtt_times.setdefault(json.loads(message.payload)["seq"], time.time())
            self.subscriber.connect("127.0.0.1", self.mqtt_port)
            self.subscriber.subscribe("bench/results", qos=1)
            self.subscriber.loop_start()
        subscribed = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._opcua(subscribed)), daemon=True)
        self.thread.start()
        subscribed.wait(30)

    async def _opcua(self, subscribed: threading.Event) -> None:
        from asyncua import Client

        times = self.opcua_times

        class Handler:
            def datachange_notification(self, node, value, data):
                if value:
                    times.setdefault(int(value), time.time())

        async with Client(f"opc.tcp://127.0.0.1:{self.opcua_port}/anomalycli/station") as client:
            ns = await client.get_namespace_index("urn:anomalycli:station")
            node = await (await client.nodes.objects.get_child(f"{ns}:Station")).get_child(f"{ns}:result_seq")
            subscription = await client.create_subscription(5, Handler())
            await subscription.subscribe_data_change(node)
            subscribed.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        if getattr(self, "thread", None) is not None:
            self.thread.join(10)
        if self.broker is not None:
            if getattr(self, "subscriber", None) is not None:
                self.subscriber.loop_stop()
            self.broker.terminate()
            self.broker.wait(10)


def predict_per_image(model: Path, images: list[Path], tmp: Path) -> float:
    """``anomaly predict``'s time an image on these images, its start-up taken out: the whole
    process on all of them less the whole process on one, over the images but one."""
    seconds = {}
    for count in (1, len(images)):
        listing = tmp / f"predict-{count}.txt"
        listing.write_text("\n".join(str(p) for p in images[:count]) + "\n")
        start = time.perf_counter()
        subprocess.run(anomaly_command("predict", str(model), str(listing), "--output", str(tmp / f"predict-{count}.csv")), check=True, capture_output=True)
        seconds[count] = time.perf_counter() - start
    return (seconds[len(images)] - seconds[1]) / (len(images) - 1)


def latency(model: Path, images: list[Path], tmp: Path, n: int) -> dict:
    port = _port()
    listeners = Listeners(tmp)
    path = _station_file(tmp / "latency", [model], port, listeners.station_lines())
    station = _start(path)
    listeners.start()
    simulator = _simulator(port, "--results", n, "--seconds", 60 + 5 * n)
    closed = []
    try:
        for i in range(n):
            data = images[i % len(images)].read_bytes()
            with open(path.parent / "inbox" / f"{i + 1:05d}.png", "wb") as handle:
                handle.write(data)
            closed.append(time.time())
            wait_until(lambda: len(csv_rows(path.parent / "verdicts.csv")) > i, 60)
            time.sleep(0.3)  # parts apart, as on a line: each result read before the next image
        results = [r for r in _lines(simulator, 120) if "seq" in r]
        time.sleep(0.5)  # the last messages
    finally:
        listeners.close()  # the clients leave first, as a line's would
        _stop(station)
    to_plc = [r["t"] - closed[r["part_id"] - 1] for r in results]
    rows = csv_rows(path.parent / "verdicts.csv")
    own = [float(r["latency_ms"]) / 1000 for r in rows]
    part_of = {int(r["seq"]): int(r["part_id"]) for r in rows}
    out = {
        "plc_median": statistics.median(to_plc),
        "plc_p99": float(np.percentile(to_plc, 99)),
        "station_median": statistics.median(own),
        "latency_n": len(to_plc),
    }
    for kind, times in (("opcua", listeners.opcua_times), ("mqtt", listeners.mqtt_times)):
        seconds = [t - closed[part_of[seq] - 1] for seq, t in times.items() if seq in part_of]
        if seconds:
            out[f"{kind}_median"], out[f"{kind}_p99"] = statistics.median(seconds), float(np.percentile(seconds, 99))
    return out


def switches(model: Path, tmp: Path, n: int) -> dict:
    twin = tmp / "twin.safetensors"
    shutil.copy(model, twin)
    port = _port()
    station = _start(_station_file(tmp / "switch", [model, twin], port))
    try:
        seconds = [r["switch_s"] for r in _lines(_simulator(port, "--switch", "2,1", "--switches", n), 120) if "switch_s" in r]
    finally:
        _stop(station)
    return {"switch_median": statistics.median(seconds), "switch_max": max(seconds), "switch_n": len(seconds)}


def memory(model: Path, images: list[Path], tmp: Path, n: int) -> dict:
    from pyModbusTCP.client import ModbusClient

    models = [model]
    for k in range(2, 6):
        models.append(tmp / f"recipe{k}.safetensors")
        shutil.copy(model, models[-1])
    port = _port()
    path = _station_file(tmp / "memory", models, port)
    station = _start(path)
    ready_rss = rss_mib(station.pid)
    simulator = _simulator(port, "--results", n, "--seconds", 60 + n)
    plc = ModbusClient(host="127.0.0.1", port=port, unit_id=1, auto_open=True, timeout=2)
    journal = path.parent / "verdicts.csv"
    try:
        for i in range(n):
            if i % 100 == 0:
                plc.write_single_register(2, 1 + (i // 100) % 5)
                time.sleep(0.05)
            with open(path.parent / "inbox" / f"{i + 1:05d}.png", "wb") as handle:
                handle.write(images[i % len(images)].read_bytes())
            if i % 4 == 3:  # a few parts ahead, as a line's queue holds
                wait_until(lambda: len(csv_rows(journal)) > i - 4, 60, 0.01)
        wait_until(lambda: len(csv_rows(journal)) >= n, 300, 0.05)
        final_rss = rss_mib(station.pid)
    finally:
        simulator.terminate()  # it may wait for results an overrun kept from it (parts were sent 4 ahead): the journal has them
        _stop(station)
    recipes = {r["recipe"] for r in csv_rows(journal)}
    return {"memory_ready": ready_rss, "memory_after": final_rss, "memory_parts": n, "memory_recipes_used": len(recipes)}


def run(data_sets: list[Path], quick: bool, log=print) -> dict:
    counts = QUICK_COUNTS if quick else COUNTS
    runs = []
    for index, data in enumerate(data_sets):
        with tempfile.TemporaryDirectory(prefix="bench-station-") as tmp:
            tmp = Path(tmp)
            fit_process(data, tmp / "run", *(("--image-size", "64") if quick else ()))
            model = tmp / "run" / "model.safetensors"
            camera = CAMERA.get(data.name)
            if camera is not None and camera.is_dir() and not quick:
                images, source = sorted(camera.glob("*.png")), "camera images, 1024 px"
            else:
                (tmp / "pngs").mkdir()
                images = upscaled_copies([s.path for s in samples_of(data, False)][:40], tmp / "pngs")
                source = "1024 px copies"
            out = {"data": data.name, "images": source}
            out.update(latency(model, images, tmp, counts["latency"]))
            out["predict_per_image"] = predict_per_image(model, images[: counts["latency"]], tmp)
            log(
                f"  {data.name}: close to result_valid at the PLC {1000 * out['plc_median']:.1f} ms median; to the OPC UA data change "
                f"{1000 * out.get('opcua_median', float('nan')):.1f} ms; to the MQTT message {1000 * out.get('mqtt_median', float('nan')):.1f} ms; "
                f"the station's own {1000 * out['station_median']:.1f} ms; predict {1000 * out['predict_per_image']:.1f} ms an image"
            )
            out.update(switches(model, tmp, counts["switches"]))
            log(f"  {data.name}: recipe switch {1000 * out['switch_median']:.1f} ms median, {1000 * out['switch_max']:.1f} ms at most")
            if index == 0:
                out.update(memory(model, images, tmp, counts["memory"]))
                log(f"  {data.name}: 5 recipes: {out['memory_ready']:.0f} MiB ready, {out['memory_after']:.0f} MiB after {out['memory_parts']} parts")
                out.update(run_faults(model, images, tmp, counts["faults"], _station_file, _start, _stop, _simulator, _port(), _port()))
                log(f"  {data.name}: faults: " + ", ".join(f"{k.removeprefix('faults_')} {v}" for k, v in out.items() if k.startswith("faults_")))
            runs.append(out)
    return {"runs": runs}


def _met(r: dict, kind: str) -> str:
    """Whether the median latency to ``kind`` is within predict's time an image + 15 ms (the issue's bar)."""
    if f"{kind}_median" not in r:
        return "-"
    return "yes" if r[f"{kind}_median"] <= r["predict_per_image"] + 0.015 else "no"


def headline(result: dict, data: str) -> dict:
    r = next((r for r in result["runs"] if r["data"] == data), None)
    if r is None:
        return {}
    rows = {
        "station: image closed to result_valid at the PLC (Modbus, 10 ms scans), median / p99; the station's own time": f"{1000 * r['plc_median']:.1f} / "
        f"{1000 * r['plc_p99']:.1f} ms; {1000 * r['station_median']:.1f} ms",
        "station: a recipe switch, median / most": f"{1000 * r['switch_median']:.1f} / {1000 * r['switch_max']:.1f} ms",
    }
    if "predict_per_image" in r:
        rows["station: the bar, predict's time an image + 15 ms; met by Modbus / OPC UA / MQTT"] = (
            f"{1000 * r['predict_per_image'] + 15:.1f} ms; " + " / ".join(_met(r, kind) for kind in ("plc", "opcua", "mqtt"))
        )
    if "opcua_median" in r:
        rows["station: image closed to the OPC UA data change / to the MQTT message, median"] = f"{1000 * r['opcua_median']:.1f} / " + (
            f"{1000 * r['mqtt_median']:.1f} ms" if "mqtt_median" in r else "- (no broker)"
        )
    if "faults_parts" in r:
        rows[
            f"station, {r['faults_parts']:,} parts through {r['faults_kills']} SIGKILLs, {r['faults_plc_drops']} PLC reconnections, a recipe switch "
            f"every 100, {r['faults_no_ack_parts']} parts unacknowledged, the broker down for {r['faults_broker_down_parts']} and a broken model file: "
            "lost / read twice or out of order / wrong part / wrong recipe / verdicts unlike predict's / MQTT messages lost"
        ] = (
            f"{r['faults_lost']} / {r['faults_stale']} / {r['faults_wrong_part']} / {r['faults_wrong_recipe']} / {r['faults_wrong_verdict']} / "
            f"{r['faults_mqtt_lost']}"
        )
    if "memory_after" in r:
        rows[f"station with 5 recipes: resident memory once ready / after {r['memory_parts']:,} parts"] = (
            f"{r['memory_ready']:.0f} / {r['memory_after']:.0f} MiB"
        )
    return rows


def section(result: dict) -> str:
    runs = result["runs"]
    lines = [
        "Each set's default model in `anomaly station`, and the tests' PLC simulator (a pyModbusTCP client scanning every 10 ms) as separate processes. "
        "Latency is from the writer's close of the image to the simulator's scan that reads `result_valid`; the station's own time is its "
        "journal's `latency_ms` (the image's arrival to its verdict). One part at a time, 0.3 s apart.",
        "",
    ]
    table, row = runs_table(runs)

    row("images", lambda r: r["images"])
    row("close to result_valid at the PLC, median / p99 (ms)", lambda r: f"{1000 * r['plc_median']:.1f} / {1000 * r['plc_p99']:.1f} (n={r['latency_n']})")
    row(
        "close to the OPC UA data change (a subscription to result_seq), median / p99 (ms)",
        lambda r: f"{1000 * r['opcua_median']:.1f} / {1000 * r['opcua_p99']:.1f}" if "opcua_median" in r else "-",
    )
    row(
        "close to the MQTT message at a subscriber, median / p99 (ms)",
        lambda r: f"{1000 * r['mqtt_median']:.1f} / {1000 * r['mqtt_p99']:.1f}" if "mqtt_median" in r else "-",
    )
    row("the station's own time, arrival to verdict, median (ms)", lambda r: f"{1000 * r['station_median']:.1f}")
    row(
        "`anomaly predict` on the same images, ms an image (its start-up taken out); the bar, predict + 15 ms: met by Modbus / OPC UA / MQTT",
        lambda r: (
            f"{1000 * r['predict_per_image']:.1f}; {1000 * r['predict_per_image'] + 15:.1f}: "
            + " / ".join(
                ("yes" if r[f"{k}_median"] <= r["predict_per_image"] + 0.015 else "no") if f"{k}_median" in r else "-" for k in ("plc", "opcua", "mqtt")
            )
        ),
    )
    row("a recipe switch, median / most (ms)", lambda r: f"{1000 * r['switch_median']:.1f} / {1000 * r['switch_max']:.1f} (n={r['switch_n']})")
    row(
        "5 recipes: resident memory once ready / after the parts (MiB)",
        lambda r: (
            f"{r['memory_ready']:.0f} / {r['memory_after']:.0f} ({r['memory_parts']} parts, {r['memory_recipes_used']} recipes used)"
            if "memory_after" in r
            else "-"
        ),
    )
    row(
        "faults: parts / SIGKILLs / PLC reconnections / parts unacknowledged / parts with the broker down; lost / read twice or out of order / "
        "wrong part / wrong recipe / verdicts unlike predict's (its scores' largest difference) / MQTT messages lost",
        lambda r: (
            f"{r['faults_parts']} / {r['faults_kills']} / {r['faults_plc_drops']} / {r['faults_no_ack_parts']} / {r['faults_broker_down_parts']}; "
            f"{r['faults_lost']} / {r['faults_stale']} / {r['faults_wrong_part']} / {r['faults_wrong_recipe']} / {r['faults_wrong_verdict']} "
            f"({r['faults_score_max_diff']:.4f}) / {r['faults_mqtt_lost']}; {r['faults_plc_results']} results read by the PLC, {r['faults_rows']} rows, "
            f"{r['faults_overrun_said']} overrun lines"
            if "faults_parts" in r
            else "-"
        ),
    )
    row(
        "faults: a broken model file written over recipe 2's while it judged: refused, the old model judging on / the good file back: taken",
        lambda r: f"{r['faults_broken_model_refused']} / {r['faults_model_replaced']}" if "faults_parts" in r else "-",
    )
    return "\n".join(lines + table)
