"""A PLC for the station's tests, in a process of its own: a Modbus TCP client (pyModbusTCP, not
the server's own library) that scans every 10 ms and drives the handshake from the PLC's side.

    python tests/plc_simulator.py PORT [--results N] [--seconds S] [--no-ack] [--recipe K]
    python tests/plc_simulator.py PORT --switch 1,2 --switches N


Each scan reads the station's discrete inputs and input registers in two requests. When
``result_valid`` is high and not yet acknowledged, it prints the result as a JSON line and raises
``result_ack``; when ``result_valid`` has fallen, it drops ``result_ack``. It stops after N results
or S seconds, then prints ``{"done": ...}`` with what it saw of ``overrun`` and the heartbeat.
With ``--switch``, it asks for those recipes in turn, N times, and prints each switch's time from
its ``recipe_request`` to the scan that sees the recipe active and ``ready``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time

from pyModbusTCP.client import ModbusClient

SCAN_SECONDS = 0.01


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--results", type=int, default=10**9)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-ack", action="store_true")
    parser.add_argument("--recipe", type=int, default=None)
    parser.add_argument("--switch", default=None)
    parser.add_argument("--switches", type=int, default=10)
    args = parser.parse_args()
    plc = ModbusClient(host="127.0.0.1", port=args.port, unit_id=1, auto_open=True, timeout=2.0)
    plc.write_single_coil(1, False)  # a PLC's first scan sets its outputs: no ack left high from before a dropped connection
    if args.switch:
        switch(plc, [int(k) for k in args.switch.split(",")], args.switches)
        return
    if args.recipe is not None:
        plc.write_single_register(2, args.recipe)
    seen, acked, overrun, beats, last_beat, last_seq = 0, False, False, 0, None, None
    end = time.monotonic() + args.seconds
    while time.monotonic() < end and seen < args.results:
        bits = plc.read_discrete_inputs(0, 9)
        registers = plc.read_input_registers(0, 10)
        if bits is None or registers is None:  # the station is away (restarting): scan again
            time.sleep(SCAN_SECONDS)
            continue
        ready, busy, valid, ok, ng, error, recipe_failed, overrun_now, heartbeat = bits
        overrun = overrun or overrun_now
        if last_beat is not None and heartbeat != last_beat:
            beats += 1
        last_beat = heartbeat
        seq = (registers[3] << 16) | registers[4]
        # A result shown twice is printed twice (the tests count repeats); without acks, once.
        if valid and not acked and (not args.no_ack or seq != last_seq):
            last_seq = seq
            result = {
                "seq": seq,
                "part_id": (registers[1] << 16) | registers[2],
                "ok": ok,
                "ng": ng,
                "error": error,
                "error_code": registers[0],
                "score": struct.unpack(">f", struct.pack(">HH", registers[5], registers[6]))[0],
                "recipe": registers[9],  # the recipe that judged it (registers[7]: the one active now)
                "t": time.time(),
            }
            print(json.dumps(result), flush=True)
            seen += 1
            if not args.no_ack:
                acked = plc.write_single_coil(1, True) or acked
        elif not valid and acked:
            acked = not plc.write_single_coil(1, False)
        time.sleep(SCAN_SECONDS)
    print(json.dumps({"done": seen, "overrun": overrun, "heartbeats": beats}), flush=True)
    sys.exit(0)


def switch(plc: ModbusClient, recipes: list[int], n: int) -> None:
    for i in range(n):
        recipe = recipes[i % len(recipes)]
        start = time.perf_counter()
        plc.write_single_register(2, recipe)
        while True:
            bits, registers = plc.read_discrete_inputs(0, 9), plc.read_input_registers(0, 10)
            if bits and registers and bits[0] and registers[7] == recipe:
                break
            time.sleep(SCAN_SECONDS)
        print(json.dumps({"recipe": recipe, "switch_s": time.perf_counter() - start}), flush=True)
        time.sleep(0.05)
    print(json.dumps({"done": n}), flush=True)


if __name__ == "__main__":
    main()
