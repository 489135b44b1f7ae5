"""BENCHMARKS.md from the topics' results: the headline table, then one section per topic.

Every topic's last run is a JSON file in the results folder (``save``); the report is written
from those files alone (``write``), so a topic rerun alone updates its rows and leaves the others'.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from anomalycli import files
from benchmarks import (
    accuracy,
    camera,
    few_shot,
    hidden_isa,
    ignore,
    levers,
    line,
    localisation,
    operating_point,
    peer,
    precision,
    precision_shift,
    resolution,
    scale,
    shift,
    speed,
    station,
)
from benchmarks.common import machine

# topic -> its module; operating_point reads the accuracy topic's results (same fits)
TOPICS = {
    "accuracy": accuracy,
    "localisation": localisation,
    "ignore": ignore,
    "resolution": resolution,
    "precision": precision,
    "speed": speed,
    "line": line,
    "station": station,
    "camera": camera,
    "scale": scale,
    "peer": peer,
    "shift": shift,
    "precision_shift": precision_shift,
    "few_shot": few_shot,
}
# (section title, the topic whose results it reads, the module that writes it), in the report's order
SECTIONS = [
    (accuracy.TITLE, "accuracy", accuracy),
    (operating_point.TITLE, "accuracy", operating_point),
    (localisation.TITLE, "localisation", localisation),
    (ignore.TITLE, "ignore", ignore),
    (resolution.TITLE, "resolution", resolution),
    (speed.TITLE, "speed", speed),
    (line.TITLE, "line", line),
    (station.TITLE, "station", station),
    (camera.TITLE, "camera", camera),
    (precision.TITLE, "precision", precision),
    (scale.TITLE, "scale", scale),
    (peer.TITLE, "peer", peer),
    (shift.TITLE, "shift", shift),
    (precision_shift.TITLE, "precision_shift", precision_shift),
    (few_shot.TITLE, "few_shot", few_shot),
]
HEADLINE = [
    ("accuracy", accuracy),
    ("accuracy", operating_point),
    ("localisation", localisation),
    ("ignore", ignore),
    ("resolution", resolution),
    ("precision", precision),
    ("speed", speed),
    ("line", line),
    ("station", station),
    ("camera", camera),
    ("scale", scale),
    ("peer", peer),
    ("shift", shift),
    ("precision_shift", precision_shift),
    ("few_shot", few_shot),
]


# Topics whose figures depend on the CPU's instruction sets: a run on a CPU of another class (AMX,
# AVX-512 VNNI, AVX2 ...) does not replace the last run on this one but moves it aside as
# ``TOPIC.CLASS.json``, and the report shows every class's last run (a line PC need not have the
# instruction sets of the machine that measured last).
PER_CPU = ("speed",)


def save(results: Path, topic: str, result: dict, command: str) -> None:
    record = {"topic": topic, "command": command, "date": f"{datetime.now(timezone.utc):%Y-%m-%d}", "machine": machine(), "result": result}
    path = results / f"{topic}.json"
    if hidden_isa.active():  # another class's kernels on this machine: beside its own runs, never in their place
        files.write_text(results / f"{topic}.{_slug(cpu_of(record))}.json", json.dumps(record, indent=1) + "\n")
        return
    if topic in PER_CPU and path.exists():
        old = json.loads(path.read_text())
        if cpu_of(old) != cpu_of(record):
            files.write_text(results / f"{topic}.{_slug(cpu_of(old))}.json", json.dumps(old, indent=1) + "\n")
        (results / f"{topic}.{_slug(cpu_of(record))}.json").unlink(missing_ok=True)  # this run is that class's last
    files.write_text(path, json.dumps(record, indent=1) + "\n")


def cpu_of(record: dict) -> str:
    """The CPU class a record was measured on (``engine_choice.cpu_class``: its architecture and
    int8 instruction sets), as ``machine()`` names it in brackets after the CPU's model."""
    found = re.search(r"\(([^()]*)\), \d+ cores", record["machine"])
    return found.group(1) if found else record["machine"]


def _slug(cpu: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")


def other_cpus(results: Path, topic: str) -> list[dict]:
    """The last records of ``topic`` on other CPU classes than its main record's (``PER_CPU``), oldest first."""
    records = [json.loads(path.read_text()) for path in sorted(results.glob(f"{topic}.*.json"))]
    return sorted(records, key=lambda record: record["date"])


def save_keeping_other_data(results: Path, topic: str, result: dict, command: str) -> None:
    """``save``, keeping the runs of the data sets this run did not measure from the topic's last
    record (``--keep-other-data``), and saying in the record's note where they come from."""
    path = results / f"{topic}.json"
    old = json.loads(path.read_text()) if path.exists() else None
    measured = {run["data"] for run in result["runs"]}
    kept = [run for run in old["result"]["runs"] if run["data"] not in measured] if old else []
    save(results, topic, {**result, "runs": kept + result["runs"]}, command)
    if kept:
        record = json.loads(path.read_text())
        record["note"] = (
            f"This run measured {', '.join(sorted(measured))} only; the {', '.join(sorted({run['data'] for run in kept}))} rows "
            f"are from the run of {old['date']} on {old['machine']} (`{old['command']}`)."
        )
        files.write_text(path, json.dumps(record, indent=1) + "\n")


def load(results: Path) -> dict:
    """Each topic's last record; a ``PER_CPU`` topic's records on other CPU classes under ``other_cpus``."""
    records = {path.stem: json.loads(path.read_text()) for path in sorted(results.glob("*.json")) if path.stem in TOPICS}
    for topic in PER_CPU:
        if topic in records:
            records[topic]["other_cpus"] = other_cpus(results, topic)
    return records


def headline(records: dict, data_sets: list[str]) -> str:
    lines = ["| | " + " | ".join(data_sets) + " | measured by |", "| --- |" + " --- |" * (len(data_sets) + 1)]
    for topic, module in HEADLINE:
        if topic not in records:
            continue
        record = records[topic]
        lines += _headline_rows(record, module, data_sets)
        for other in record.get("other_cpus", []):  # the key rows only; the topic's section has the rest
            lines += _headline_rows(other, module, data_sets, keys=module.OTHER_CPU_HEADLINE, suffix=f", on {cpu_of(other)}")
    return "\n".join(lines)


def _headline_rows(record: dict, module, data_sets: list[str], keys: tuple[str, ...] | None = None, suffix: str = "") -> list[str]:
    """A record's headline rows (those of ``keys``, where given), one cell per data set."""
    per_data = {data: module.headline(record["result"], data) for data in data_sets}
    rows = []
    for key in dict.fromkeys(k for values in per_data.values() for k in values if keys is None or k in keys):
        cells = [per_data[data].get(key, "-") for data in data_sets]
        rows.append(f"| {key}{suffix} | " + " | ".join(cells) + f" | `{record['command']}`, {record['date']} |")
    return rows


def data_sets_in(records: dict) -> list[str]:
    names = []
    for record in records.values():
        result = record["result"]
        for run in result.get("runs", [result]):
            if run.get("data") not in names:
                names.append(run.get("data"))
    return [n for n in names if n]


def markdown(records: dict) -> str:
    data_sets = data_sets_in(records)
    machines = sorted({r["machine"] for r in records.values()})
    lines = [
        "# Benchmarks",
        "",
        "Every number below is the output of `python -m benchmarks` (all topics, about three hours on 2 cores; "
        "`python -m benchmarks --topics speed` reruns one topic and rewrites this file from the others' last results). "
        "The shipped defaults, on the development sets "
        + ", ".join(f"`../shared/data/{d}`" for d in data_sets)
        + " (read in place, never copied). Machine: "
        + "; ".join(machines)
        + ".",
        "",
        "## Headline: the defaults today",
        "",
        headline(records, data_sets),
    ]
    for title, topic, module in SECTIONS:
        lines += ["", f"## {title}", ""]
        if topic in records:
            record = records[topic]
            lines += [f"`{record['command']}`, {record['date']}, on {record['machine']}.", ""]
            # A topic rerun on some data sets only keeps the others' runs, and says so (``save_keeping_other_data``).
            lines += [record["note"], ""] if record.get("note") else []
            lines += [module.section(record["result"])]
            lines += ["", module.RECORD] if hasattr(module, "RECORD") else []
            for other in record.get("other_cpus", []):
                lines += ["", f"### The same on {cpu_of(other)}", "", f"`{other['command']}`, {other['date']}, on {other['machine']}.", ""]
                lines += [module.section(other["result"])]
        else:
            lines += [f"Not measured yet: `python -m benchmarks --topics {topic}`."]
    lines += ["", f"## {levers.TITLE}", "", levers.NOTE, "", levers.section()]
    return "\n".join(lines) + "\n"


def write(results: Path, out: Path) -> None:
    files.write_text(out, markdown(load(results)))
