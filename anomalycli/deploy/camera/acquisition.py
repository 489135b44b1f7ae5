"""Frames from a camera on a thread of their own, into a bounded queue, through losses and reconnects.

The thread opens the camera, takes frames as they come and hands them on in order. What it never
does is grow: a frame that finds the queue full (frames arriving faster than they are judged) is
dropped, counted, and kept as a marker (``dropped``) for the station to journal as an error result,
so a part is never passed by silence. A source that can wait (a video file) is not dropped from:
the thread waits for room instead. A camera that disappears is said once, closed, and opened
again with back-off (``BACKOFF_SECONDS``, doubling to ``BACKOFF_MOST``), and said again when back.
Software triggers are fired from this thread too: a producer's objects stay on one thread.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Callable

from anomalycli.deploy.camera.frames import Camera, CameraGone, Frame
from anomalycli.errors import UserError

QUEUE_FRAMES = 8  # frames waiting to be judged; at 5 MB a 1920 x 1200 RGB frame, 40 MB at most
GRAB_TIMEOUT = 0.05
BACKOFF_SECONDS, BACKOFF_MOST = 0.5, 10.0
DROPPED = "dropped: frames came faster than they were judged (the queue of {} frames was full)"


class Acquisition:
    """``camera``'s frames, every ``every``-th kept (free-running: one part in N), in a queue of
    ``queue_frames``; ``get`` takes the next. ``on_state(connected)`` is called as the camera comes and goes."""

    def __init__(
        self,
        camera: Camera,
        say: Callable[[str], None],
        queue_frames: int = QUEUE_FRAMES,
        every: int = 1,
        on_state: Callable[[bool], None] = lambda connected: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.camera, self.say, self.every, self.on_state, self.clock = camera, say, max(1, every), on_state, clock
        self.frames: queue.Queue[Frame] = queue.Queue(queue_frames)
        # Markers of dropped frames, for the journal (about 100 bytes each; the station takes them as it judges).
        self.dropped: collections.deque[Frame] = collections.deque(maxlen=100_000)
        self.counts = collections.Counter()  # frames, kept, dropped, losses, reconnects
        self.connected = False
        self._fires = 0  # software triggers asked for and not yet fired
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)

    def start(self, wait: float = 0.0) -> None:
        """Start acquiring; with ``wait``, until the camera is connected or ``wait`` seconds pass."""
        self._thread.start()
        deadline = self.clock() + wait
        while wait and not self.connected and self.clock() < deadline and self._thread.is_alive():
            time.sleep(0.01)

    def get(self, timeout: float) -> Frame | None:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def fire(self) -> None:
        """Ask for a software trigger (fired on the acquisition thread, before its next grab)."""
        with self._lock:
            self._fires += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self.camera.close()

    def _run(self) -> None:
        backoff, said_unreachable = BACKOFF_SECONDS, False
        while not self._stop.is_set():
            if not self.connected:
                try:
                    lines = self.camera.open()
                except (CameraGone, UserError) as exc:
                    if not said_unreachable:
                        self.say(f"camera {self.camera.name}: not reachable ({exc}); trying again, every {BACKOFF_MOST:g} s at most")
                        said_unreachable = True
                    self._stop.wait(backoff)
                    backoff = min(BACKOFF_MOST, backoff * 2)
                    continue
                for line in lines:
                    self.say(line)
                self.counts["reconnects"] += self.counts["losses"] > 0 or said_unreachable
                self.say(f"camera {self.camera.name}: acquiring" + (" again" if self.counts["losses"] or said_unreachable else ""))
                backoff, said_unreachable, self.connected = BACKOFF_SECONDS, False, True
                with self._lock:
                    self._fires = 0  # a trigger asked for while the camera was gone has no frame coming: it times out
                self.on_state(True)
            try:
                self._fire_asked()
                frame = self.camera.grab(GRAB_TIMEOUT)
            except CameraGone as exc:
                self.counts["losses"] += 1
                self.connected = False
                self.on_state(False)
                self.say(f"camera {self.camera.name}: lost ({exc}); reconnecting")
                self.camera.close()
                continue
            if frame is not None:
                self._hand_on(frame)

    def _fire_asked(self) -> None:
        with self._lock:
            fires, self._fires = self._fires, 0
        for _ in range(fires):
            self.camera.fire()

    def _hand_on(self, frame: Frame) -> None:
        self.counts["frames"] += 1
        if (self.counts["frames"] - 1) % self.every:
            return
        if not self.camera.live:  # a file: wait for room, never drop
            while not self._stop.is_set():
                try:
                    self.frames.put(frame, timeout=0.1)
                    self.counts["kept"] += 1
                    return
                except queue.Full:
                    continue
            return
        try:
            self.frames.put_nowait(frame)
            self.counts["kept"] += 1
        except queue.Full:
            self.counts["dropped"] += 1
            self.dropped.append(Frame(None, frame.frame_id, frame.timestamp_ns, frame.camera, frame.arrived, DROPPED.format(self.frames.maxsize)))
