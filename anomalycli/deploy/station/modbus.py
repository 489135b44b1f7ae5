"""The handshake on Modbus TCP (pymodbus): a server any PLC's Modbus client reads and writes.

Thin: ``signals.MODBUS_MAP`` says where each signal lies; every read is answered from one
``Handshake.snapshot`` (so the registers of one request never mix two results), every write goes
to ``Handshake.write``. The server runs on its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import struct
import threading

from anomalycli import runtime
from anomalycli.deploy.station import signals
from anomalycli.deploy.station.handshake import Handshake
from anomalycli.errors import UserError

# Modbus function codes by table: reads, then writes.
READS = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
WRITES = {5: "coil", 15: "coil", 6: "holding", 16: "holding"}
BIT_TABLES = ("coil", "discrete")


def table_size(table: str) -> int:
    """Bits (coil, discrete) or registers (holding, input) the table holds."""
    return max(s.address + (1 if table in BIT_TABLES else s.registers) for s in signals.MODBUS_MAP.values() if s.table == table)


def words(value, kind: str) -> list[int]:
    """A signal's value as registers, high word first."""
    if kind == "float32":
        return list(struct.unpack(">HH", struct.pack(">f", float(value))))
    if kind == "uint32":
        return [(int(value) >> 16) & 0xFFFF, int(value) & 0xFFFF]
    return [int(value) & 0xFFFF]


def value_of(registers: list[int], kind: str):
    """``words``' inverse."""
    if kind == "float32":
        return struct.unpack(">f", struct.pack(">HH", *registers))[0]
    if kind == "uint32":
        return (registers[0] << 16) | registers[1]
    return registers[0]


def table_values(snapshot: dict, table: str) -> list[int]:
    """The table's bits (as 0/1) or registers from a snapshot."""
    out = [0] * table_size(table)
    for name, s in signals.MODBUS_MAP.items():
        if s.table != table:
            continue
        if table in BIT_TABLES:
            out[s.address] = int(bool(snapshot[name]))
        else:
            out[s.address : s.address + s.registers] = words(snapshot[name], s.type)
    return out


class ModbusServer:
    """The station's Modbus TCP server on ``host``:``port`` (``start``, ``stop``)."""

    def __init__(self, handshake: Handshake, host: str = "127.0.0.1", port: int = 5020, device_id: int = 1):
        self.handshake, self.host, self.port, self.device_id = handshake, host, port, device_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._holding = table_values(handshake.snapshot(), "holding")

    async def _action(self, function_code, start_address, address, count, current_registers, set_values):
        """pymodbus' hook on every request: answer reads from the handshake, hand it writes."""
        if function_code in WRITES and set_values is not None:
            self._written(WRITES[function_code], address, list(set_values))
        if function_code in READS or function_code in WRITES:
            table = READS.get(function_code) or WRITES[function_code]
            values = table_values(self.handshake.snapshot(), table) if table != "holding" else self._holding
            if table in BIT_TABLES:  # 16 bits a register, the lowest bit first
                values = [sum(bit << i for i, bit in enumerate(values[k : k + 16])) for k in range(0, len(values), 16)]
            for i, value in enumerate(values[: len(current_registers)]):
                current_registers[i] = value
        return None

    def _written(self, table: str, address: int, values: list) -> None:
        if table == "coil":
            for i, value in enumerate(values):
                name = next((n for n, s in signals.MODBUS_MAP.items() if s.table == "coil" and s.address == address + i), None)
                if name:
                    self.handshake.write(name, bool(value))
            return
        self._holding[address : address + len(values)] = [int(v) & 0xFFFF for v in values]
        for name, s in signals.MODBUS_MAP.items():
            if s.table == "holding" and address < s.address + s.registers and s.address < address + len(values):
                self.handshake.write(name, value_of(self._holding[s.address : s.address + s.registers], s.type))

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="modbus", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise UserError(f"the Modbus server could not listen on {self.host}:{self.port} ({self._error}); choose another [modbus] port")

    def _run(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        blocks = tuple(
            [SimData(0, count=-(-table_size(t) // 16) if t in BIT_TABLES else table_size(t), datatype=DataType.BITS if t in BIT_TABLES else DataType.REGISTERS)]
            for t in ("coil", "discrete", "holding", "input")
        )
        device = SimDevice(self.device_id, simdata=blocks, action=self._action)

        async def serve():
            server = ModbusTcpServer(device, address=(self.host, self.port))
            try:
                with runtime.library_quiet("pymodbus.logging"):  # a port it cannot listen on is start()'s one line
                    await server.serve_forever(background=True)
            except (OSError, RuntimeError) as exc:  # the port is taken, or the address is not this machine's
                self._error = getattr(exc, "strerror", None) or exc
                self._started.set()
                return
            # Known to stop() only once listening: a shutdown sent to a loop that is closing after a
            # failed start is never awaited, and Python prints that after start()'s one line.
            self._loop, self._server = asyncio.get_running_loop(), server
            self._started.set()
            await server.serving

        try:
            asyncio.run(serve())
        except Exception as exc:  # reported by start(), or ends the thread after stop()
            self._error = self._error or exc
            self._started.set()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():  # not after a failed start
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
        if self._thread is not None:
            self._thread.join(10)
