from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from anomalycli.cli.common import say_line, user_errors
from anomalycli.deploy.station import signals
from anomalycli.errors import UsageError
from anomalycli.workflows import station as line_station
from anomalycli.workflows.watch import stop_on_signals


@user_errors
def station_command(
    station_file: Optional[Path] = typer.Argument(
        None, metavar="STATION.toml", help="The station file: source, recipes, modbus, journal (README: the station)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Say every mistake in the file, one line each (models loaded and probed, ports tried), and start nothing."
    ),
    map_: bool = typer.Option(False, "--map", help="Print the Modbus map (every signal's table, address and type) and start nothing."),
    as_json: bool = typer.Option(False, "--json", help="With --map: as JSON, for a PLC program to import."),
) -> None:
    """Run an inspection station a PLC talks to (Modbus TCP, OPC UA; MQTT out): recipes kept warm, a handshake that never shows a stale result.

    Every result is a journal row (fsynced) before the PLC can read it; stops cleanly on Ctrl-C or
    SIGTERM, and started again with the same journal, judges each image once.
    """
    if map_:
        _print_map(as_json)
        return
    if as_json:
        raise UsageError("--json goes with --map: anomaly station --map --json")
    if station_file is None:
        raise UsageError("give the station file: anomaly station STATION.toml (--check to check it first)")
    if check:
        mistakes = line_station.check(station_file)
        for mistake in mistakes:
            sys.stdout.write(f"error: {mistake}\n")
        if mistakes:
            raise typer.Exit(1)
        sys.stdout.write(f"{station_file}: no mistakes found; every recipe's model loads\n")
        return
    stop = threading.Event()
    with stop_on_signals(stop):
        counts = line_station.station(station_file, say_line, stop)
    say_line(f"stopped: {counts['judged']} parts judged in this run ({counts['ng']} NG, {counts['errors']} errors)")


def _print_map(as_json: bool) -> None:
    table = signals.modbus_map()
    if as_json:
        sys.stdout.write(json.dumps(table, indent=1) + "\n")
        return
    for name, entry in table["signals"].items():
        sys.stdout.write(f"{name:15} {entry['direction']:8} {entry['table']:8} {entry['address']:3}  {entry['type']}\n")
    sys.stdout.write(f"32-bit values: two registers, {table['word_order']} word first. Error codes:\n")
    for code, text in table["error_codes"].items():
        sys.stdout.write(f"  {code:>3}  {text}\n")
