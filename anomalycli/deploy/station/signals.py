"""The station's signals, their fixed Modbus map, and the error codes.

The map is part of the interface a PLC program is written against: it never changes between
versions unless the README's station section says so. 32-bit values take two registers, high word
first (``WORD_ORDER``); ``float32`` is IEEE 754.
"""

from __future__ import annotations

from dataclasses import dataclass

# Written by the PLC.
FROM_PLC = ("trigger", "part_id", "result_ack", "recipe_request")
# Read by the PLC.
TO_PLC = (
    "ready",
    "busy",
    "result_valid",
    "ok",
    "ng",
    "error",
    "error_code",
    "part_id_echo",
    "result_seq",
    "score",
    "result_recipe",
    "recipe_active",
    "recipe_failed",
    "recipe_error",
    "overrun",
    "heartbeat",
    "station_error",
)
WORD_ORDER = "big"


@dataclass(frozen=True)
class Signal:
    table: str  # coil | discrete | holding | input
    address: int  # the first (or only) bit or register, 0-based
    type: str  # bool | uint16 | uint32 | float32

    @property
    def registers(self) -> int:
        return {"bool": 1, "uint16": 1, "uint32": 2, "float32": 2}[self.type]


MODBUS_MAP = {
    # PLC -> station
    "trigger": Signal("coil", 0, "bool"),
    "result_ack": Signal("coil", 1, "bool"),
    "part_id": Signal("holding", 0, "uint32"),
    "recipe_request": Signal("holding", 2, "uint16"),
    # station -> PLC
    "ready": Signal("discrete", 0, "bool"),
    "busy": Signal("discrete", 1, "bool"),
    "result_valid": Signal("discrete", 2, "bool"),
    "ok": Signal("discrete", 3, "bool"),
    "ng": Signal("discrete", 4, "bool"),
    "error": Signal("discrete", 5, "bool"),
    "recipe_failed": Signal("discrete", 6, "bool"),
    "overrun": Signal("discrete", 7, "bool"),
    "heartbeat": Signal("discrete", 8, "bool"),
    "error_code": Signal("input", 0, "uint16"),
    "part_id_echo": Signal("input", 1, "uint32"),
    "result_seq": Signal("input", 3, "uint32"),
    "score": Signal("input", 5, "float32"),
    "recipe_active": Signal("input", 7, "uint16"),
    "recipe_error": Signal("input", 8, "uint16"),
    "result_recipe": Signal("input", 9, "uint16"),  # the recipe that judged the result shown
    "station_error": Signal("input", 10, "uint16"),  # why ready is low, where something is wrong (STATION_ERRORS); 0 otherwise
}

# error_code (with ng and error set) and recipe_error: what went wrong, by number. Documented in the README.
ERROR_CODES = {
    0: "none",
    1: "the image could not be read (unreadable, truncated or not an image)",
    2: "the model failed while judging the image",
    3: "a trigger got no image within the trigger timeout",
    4: "a trigger came while an earlier one still waited for its image",
    5: "a trigger came while the station was not ready (starting, or switching recipes)",
    6: "the camera's frame was lost or incomplete",
    7: "the frame was dropped: frames came faster than they were judged",
    10: "recipe_request names a recipe the station file does not have",
}
UNREADABLE, MODEL_FAILED, TRIGGER_TIMEOUT, DOUBLE_TRIGGER, NOT_READY, UNKNOWN_RECIPE = 1, 2, 3, 4, 5, 10
FRAME_LOST, FRAME_DROPPED = 6, 7
# station_error: what keeps ready low, by number (0: nothing is wrong). Documented in the README.
STATION_ERRORS = {0: "none", 20: "the camera is not connected (the station reconnects by itself)"}
CAMERA_DISCONNECTED = 20


def modbus_map() -> dict:
    """The map as ``anomaly station --map --json`` prints it."""
    return {
        "signals": {
            name: {"table": s.table, "address": s.address, "type": s.type, "direction": "from_plc" if name in FROM_PLC else "to_plc"}
            for name, s in MODBUS_MAP.items()
        },
        "word_order": WORD_ORDER,
        "error_codes": {str(code): text for code, text in ERROR_CODES.items()},
        "station_errors": {str(code): text for code, text in STATION_ERRORS.items()},
    }
