"""The handshake between the station and the PLC: one state machine that every protocol shows.

Plain Python, no protocol and no clock of its own (``clock`` is passed in), so its tests run
without any server. Thread-safe: the adapters call ``write`` and ``snapshot`` from their threads,
the station's loop calls the rest.

The rules, each so that the PLC can never read a stale or foreign result:

- ``result_valid`` rises only with a whole result (``ok``/``ng``, ``error``, ``error_code``,
  ``part_id_echo``, ``result_seq``, ``score``, ``result_recipe``), all set in one step under the lock; while it is low
  they all read 0. The PLC answers with ``result_ack``; on its rising edge the result is taken
  back (``result_valid`` and every result field fall), and the next result is shown only once
  ``result_ack`` is low again (a four-phase handshake: a PLC that holds its ack high sees nothing new).
- Results wait in order, up to ``queue_size``; a result that finds the queue full is in the
  journal only and sets ``overrun``, which stays set until the PLC has taken every waiting result.
- Triggers (``trigger``'s rising edge) latch ``part_id`` and the active recipe; the next image
  judged belongs to the earliest one. A trigger while another waits, a trigger while not ready and
  a trigger without an image within ``trigger_timeout`` seconds each make a result with ``ng``,
  ``error`` and an ``error_code`` (``signals.ERROR_CODES``): a part is never passed by silence.
- ``recipe_request`` asks for a recipe; the station drops ``ready``, switches (``recipe_switched``)
  or refuses (``recipe_refused``: ``recipe_failed`` and ``recipe_error``, the old recipe kept), and
  raises ``ready`` again.
- ``heartbeat`` toggles every ``HEARTBEAT_SECONDS`` while the station's loop runs (``tick``).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

from anomalycli.deploy.station import signals

QUEUE_SIZE = 8
TRIGGER_TIMEOUT = 5.0
HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True)
class Result:
    """One part's result, as the PLC reads it (and the journal keeps it)."""

    seq: int
    part_id: int
    recipe: int
    score: float  # 0..1, the anomaly at >= 0.5 (0 for an error)
    ng: bool
    error_code: int = 0  # signals.ERROR_CODES; not 0: ng and error


@dataclass(frozen=True)
class Trigger:
    part_id: int
    recipe: int
    at: float


class Handshake:
    def __init__(
        self,
        recipe: int,
        first_seq: int = 1,
        queue_size: int = QUEUE_SIZE,
        trigger_timeout: float = TRIGGER_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock
        self.queue_size, self.trigger_timeout = queue_size, trigger_timeout
        self._lock = threading.RLock()
        self._next_seq = first_seq
        self._inputs = {"trigger": False, "part_id": 0, "result_ack": False, "recipe_request": recipe}
        self._shown: Result | None = None
        self._waiting: collections.deque[Result] = collections.deque()
        self._triggers: collections.deque[Trigger] = collections.deque()
        self._flags = {"ready": False, "overrun": False, "recipe_failed": False, "heartbeat": False}
        self._recipe_active, self._recipe_error, self._recipe_wanted = recipe, 0, None
        self._station_error = 0  # signals.STATION_ERRORS: what keeps ready low
        self._jobs = 0  # images in hand
        self._made: list[Result] = []  # error results the handshake made itself, for the station to journal, then publish
        self._next_beat = clock() + HEARTBEAT_SECONDS

    # --- the PLC's side ---------------------------------------------------------------------

    def write(self, name: str, value) -> None:
        """The PLC wrote ``name`` (``signals.FROM_PLC``)."""
        with self._lock:
            before, self._inputs[name] = self._inputs[name], value
            if name == "result_ack":
                if value and not before and self._shown is not None:
                    self._shown = None
                    if not self._waiting:
                        self._flags["overrun"] = False
                elif not value and before:
                    self._show_next()
            elif name == "trigger" and value and not before:
                self._trigger()
            elif name == "recipe_request" and int(value) != self._recipe_active and int(value) != self._recipe_wanted:
                self._recipe_wanted = int(value)
                self._flags["ready"] = False

    def _trigger(self) -> None:
        part_id = int(self._inputs["part_id"])
        if not self._flags["ready"]:
            self._made.append(self._error(part_id, signals.NOT_READY))
        elif self._triggers:
            self._made.append(self._error(part_id, signals.DOUBLE_TRIGGER))
        else:
            self._triggers.append(Trigger(part_id, self._recipe_active, self.clock()))

    # --- the station's side -----------------------------------------------------------------

    def set_ready(self, ready: bool) -> None:
        with self._lock:
            self._flags["ready"] = ready and self._recipe_wanted is None and not self._station_error

    def set_station_error(self, code: int) -> None:
        """Something keeps the station from judging (``signals.STATION_ERRORS``; 0: nothing any more):
        ``ready`` falls with it, and rises again with 0."""
        with self._lock:
            before, self._station_error = self._station_error, code
            if code:
                self._flags["ready"] = False
            elif before:
                self._flags["ready"] = self._recipe_wanted is None

    def part_id(self) -> int:
        """The PLC's last written part ID (an arriving image's, without triggers)."""
        with self._lock:
            return int(self._inputs["part_id"])

    @property
    def recipe_active(self) -> int:
        with self._lock:
            return self._recipe_active

    def recipe_wanted(self) -> int | None:
        """The recipe the PLC asked for and the station has not switched to yet, or None."""
        with self._lock:
            return self._recipe_wanted

    def recipe_switched(self, recipe: int) -> None:
        with self._lock:
            self._recipe_active, self._recipe_error, self._recipe_wanted = recipe, 0, None
            self._flags["recipe_failed"], self._flags["ready"] = False, not self._station_error

    def recipe_refused(self, code: int) -> None:
        with self._lock:
            self._recipe_error, self._recipe_wanted = code, None
            self._flags["recipe_failed"], self._flags["ready"] = True, not self._station_error

    def claim_trigger(self) -> Trigger | None:
        """The earliest trigger still waiting for its image (now taken), or None."""
        with self._lock:
            return self._triggers.popleft() if self._triggers else None

    def next_trigger(self) -> Trigger | None:
        """The earliest trigger still waiting for its image (left waiting), or None."""
        with self._lock:
            return self._triggers[0] if self._triggers else None

    def unclaim_trigger(self, trigger: Trigger) -> None:
        """A claimed trigger back at the front: its image was not judged yet (still being written)."""
        with self._lock:
            self._triggers.appendleft(trigger)

    def job_started(self) -> None:
        with self._lock:
            self._jobs += 1

    def job_done(self) -> None:
        with self._lock:
            self._jobs = max(0, self._jobs - 1)

    def new_result(self, part_id: int, recipe: int, score: float, ng: bool, error_code: int = 0) -> Result:
        """A result with the next sequence number (not yet shown: ``publish`` it once journaled)."""
        with self._lock:
            result = Result(self._next_seq, part_id, recipe, 0.0 if error_code else float(score), ng or bool(error_code), error_code)
            self._next_seq += 1
            return result

    def publish(self, result: Result) -> bool:
        """Show ``result`` to the PLC when its turn comes; False where the queue was full (``overrun``)."""
        with self._lock:
            return self._publish(result)

    def _publish(self, result: Result) -> bool:
        if len(self._waiting) >= self.queue_size:
            self._flags["overrun"] = True
            return False
        self._waiting.append(result)
        self._show_next()
        return True

    def _error(self, part_id: int, code: int) -> Result:
        return self.new_result(part_id, self._recipe_active, 0.0, True, code)

    def _show_next(self) -> None:
        if self._shown is None and not self._inputs["result_ack"] and self._waiting:
            self._shown = self._waiting.popleft()

    def tick(self) -> list[Result]:
        """Time passing: the heartbeat, and an error result for each trigger whose image never
        came. Returns the error results made since the last call (those and the triggers' own, as
        a double trigger's), for the caller to journal, then ``publish``: the journal first."""
        with self._lock:
            now = self.clock()
            if now >= self._next_beat:
                self._flags["heartbeat"] = not self._flags["heartbeat"]
                self._next_beat = now + HEARTBEAT_SECONDS
            while self._triggers and now - self._triggers[0].at > self.trigger_timeout:
                trigger = self._triggers.popleft()
                self._made.append(self.new_result(trigger.part_id, trigger.recipe, 0.0, True, signals.TRIGGER_TIMEOUT))
            made, self._made = self._made, []
            return made

    # --- what every protocol shows ------------------------------------------------------------

    def snapshot(self) -> dict:
        """Every signal to the PLC at one instant (``signals.TO_PLC``), and the PLC's own inputs."""
        with self._lock:
            shown = self._shown
            out = {
                **self._flags,
                "busy": bool(self._triggers) or self._jobs > 0,
                "result_valid": shown is not None,
                "ok": shown is not None and not shown.ng,
                "ng": shown is not None and shown.ng,
                "error": shown is not None and shown.error_code != 0,
                "error_code": shown.error_code if shown else 0,
                "part_id_echo": shown.part_id if shown else 0,
                "result_seq": shown.seq if shown else 0,
                "score": shown.score if shown else 0.0,
                "result_recipe": shown.recipe if shown else 0,
                "recipe_active": self._recipe_active,
                "recipe_error": self._recipe_error,
                "station_error": self._station_error,
            }
            return {**out, **self._inputs}

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)
