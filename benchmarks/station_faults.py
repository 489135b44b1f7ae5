"""The station under a line's faults, many parts through the PLC simulator: parts lost, results
the PLC read twice (stale), results with another part's ID, and verdicts against ``predict``'s.

One run of ``n`` parts, one at a time as a line sends them, with two recipes (the model, and the
model recalibrated to another threshold: the same scores, other verdicts, another sha256), while:
the PLC switches recipe every 100 parts, the station is SIGKILLed and restarted twice, and the PLC
drops its connection twice and comes back (a new simulator process). Each part's expected verdict
and score are ``anomaly predict``'s with its recipe's model on the same image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.common import anomaly_command, csv_rows, wait_until


def run_faults(model: Path, images: list[Path], tmp: Path, n: int, station_file, start, simulator, port: int) -> dict:
    """``station_file``, ``start`` and ``simulator`` are the station topic's helpers (``station.py``)."""
    from pyModbusTCP.client import ModbusClient

    other = tmp / "recalibrated.safetensors"
    subprocess.run(anomaly_command("calibrate", str(model), "--max-fpr", "0.2", "--out", str(other)), check=True, capture_output=True)
    truth = {1: _predicted(model, images, tmp / "p1.csv"), 2: _predicted(other, images, tmp / "p2.csv")}
    path = station_file(tmp / "faults", [model, other], port)
    inbox, journal = path.parent / "inbox", path.parent / "verdicts.csv"
    station = start(path)
    seen: list[dict] = []
    plc = simulator(port, "--seconds", 3600)
    recipe_writer = ModbusClient(host="127.0.0.1", port=port, unit_id=1, auto_open=True, timeout=2)
    kills, drops = {n // 3, 2 * n // 3}, {n // 4, 3 * n // 4}
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
                os.kill(station.pid, signal.SIGKILL)
                station.wait()
                station = start(path)
            if i in drops:  # the PLC's connection gone, and a new one
                plc.terminate()
                seen += _results(plc)
                plc = simulator(port, "--seconds", 3600)
        time.sleep(1.0)  # the last results
    finally:
        plc.terminate()
        seen += _results(plc)
        station.terminate()
        station.wait(60)
    rows = csv_rows(journal)
    by_seq = {int(r["seq"]): r for r in rows}
    parts = {int(r["part_id"]) for r in rows}
    seqs = [r["seq"] for r in seen]
    wrong_verdict, score_diff = 0, 0.0
    for row in rows:
        expected = truth[int(row["recipe"])][images[(int(row["part_id"]) - 1) % len(images)].name]
        wrong_verdict += row["verdict"] != expected["verdict"]
        # predict scores in batches, the station one image at a time: an int8 search quantises a batch as a whole
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
    }


def _predicted(model: Path, images: list[Path], out: Path) -> dict[str, dict]:
    listing = out.with_suffix(".txt")
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    subprocess.run(anomaly_command("predict", str(model), str(listing), "--output", str(out)), check=True, capture_output=True)
    return {Path(r["path"]).name: r for r in csv_rows(out)}


def _results(plc: subprocess.Popen) -> list[dict]:
    out, _ = plc.communicate(timeout=60)
    return [r for r in (json.loads(line) for line in out.splitlines() if line.strip()) if "seq" in r]
