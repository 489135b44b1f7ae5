"""A watched folder: the image files that arrive under it, each handed out once it looks written.

On Linux, inotify (through watchdog) says when a file written under the folder is closed or
renamed into it: such a file is handed out at once. A file only created or changed so far is
handed out after ``QUIET`` seconds without a change (a writer that never closes, a copy tool that
reopens). Elsewhere, or with ``polling``, the folder is scanned every ``poll_seconds`` and a file
is handed out once two scans see the same size and time. Either way a slow scan every
``RESCAN_SECONDS`` catches what an event queue dropped.

Handing a file out is no promise that it is whole: the one who reads it decides, and can ask for
it again with ``later`` (``watch`` does, for an image that does not decode while it is still new).
"""

from __future__ import annotations

import heapq
import os
import queue
import time
from pathlib import Path

from anomalycli.data.images import is_image_file

QUIET = 0.3  # seconds without a change after which a file that was not closed is handed out
RESCAN_SECONDS = 30.0


class Inbox:
    """Image files under ``root`` (recursively, hidden files and ``skip`` folders left out)."""

    def __init__(self, root: Path, skip: tuple[Path, ...] = (), polling: bool = False, poll_seconds: float = 0.5):
        self.root = Path(root)
        self.skip = tuple(Path(os.path.abspath(s)) for s in skip)
        self.poll_seconds = poll_seconds
        # queue.Queue, not SimpleQueue: a stop signal that came while the main thread waited in
        # SimpleQueue.get (its C lock) left that wait hung past its timeout, and the watch or station never stopped.
        self._events: queue.Queue[tuple[float, Path]] = queue.Queue()
        self._due: list[tuple[float, str]] = []  # (when, path) heap of files to hand out later
        self._observer = None if polling else _inotify_observer(self.root, self._events)
        self._seen: dict[str, tuple[int, int]] = {}  # polling: each file's (size, mtime) at the last scan
        self._next_scan = 0.0

    @property
    def how(self) -> str:
        return "inotify close events" if self._observer else f"a scan every {self.poll_seconds:g} s"

    def present(self) -> list[Path]:
        """The image files under the folder now, sorted."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not self._skipped(Path(dirpath) / d))
            found += [Path(dirpath) / f for f in sorted(filenames) if is_image_file(Path(f))]
        return found

    def _skipped(self, folder: Path) -> bool:
        return Path(os.path.abspath(folder)) in self.skip

    def later(self, path: Path, when: float) -> None:
        """Hand ``path`` out again at ``when`` (time.monotonic)."""
        heapq.heappush(self._due, (when, str(path)))

    def arrived(self, timeout: float) -> list[Path]:
        """Files to look at now, waiting up to ``timeout`` seconds for the first; in arrival order,
        each once per call."""
        deadline = time.monotonic() + timeout
        found: dict[str, None] = {}
        while True:
            now = time.monotonic()
            try:
                while True:
                    self._take(*self._events.get_nowait(), now, found)
            except queue.Empty:
                pass
            while self._due and self._due[0][0] <= now:
                path = heapq.heappop(self._due)[1]
                if _quiet_since(path, QUIET):  # a file still being written has a later look due
                    found[path] = None
            if now >= self._next_scan:
                found.update((str(p), None) for p in self._scan())
            if found or now >= deadline:
                return [Path(p) for p in found if is_image_file(Path(p)) and not self._under_skip(Path(p))]
            wake = min(deadline, self._next_scan, self._due[0][0] if self._due else deadline)
            try:
                self._take(*self._events.get(timeout=max(0.0, wake - now)), time.monotonic(), found)
            except queue.Empty:
                pass

    def _take(self, when: float, path: Path, now: float, found: dict) -> None:
        if when <= now:
            found[str(path)] = None
        else:
            self.later(path, when)

    def _under_skip(self, path: Path) -> bool:
        absolute = Path(os.path.abspath(path))
        return any(s in absolute.parents for s in self.skip)

    def _scan(self) -> list[Path]:
        """Polling: the files whose size and time two scans in a row saw unchanged and that were
        not handed out so. With inotify: every file (the rescan; the reader skips judged ones)."""
        self._next_scan = time.monotonic() + (RESCAN_SECONDS if self._observer else self.poll_seconds)
        present = self.present()
        if self._observer:
            return present
        ready, seen = [], {}
        for path in present:
            try:
                stat = path.stat()
            except OSError:
                continue
            state = (stat.st_size, stat.st_mtime_ns)
            key = str(path)
            if self._seen.get(key) == state:
                ready.append(path)
            seen[key] = state
        self._seen = seen
        return ready

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


def _inotify_observer(root: Path, events: "queue.Queue[tuple[float, Path]]"):
    """A running watchdog observer that puts (when to look, path) for each file event; None where
    inotify is not available (another OS, or the system's watch limit reached)."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:
        return None

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.is_directory:
                return
            now = time.monotonic()
            if event.event_type == "closed":  # written and closed: look now
                events.put((now, Path(event.src_path)))
            elif event.event_type == "moved":  # renamed into place: whole
                events.put((now, Path(event.dest_path)))
            elif event.event_type in ("created", "modified"):  # still being written, or copied in by rename from outside
                events.put((now + QUIET, Path(event.src_path)))

    observer = InotifyObserver()
    try:
        observer.schedule(Handler(), str(root), recursive=True)
        observer.start()
    except OSError:
        return None
    return observer


def _quiet_since(path: str, seconds: float) -> bool:
    """Whether ``path`` was last changed at least ``seconds`` ago (True where it is gone: the
    reader says so)."""
    try:
        return time.time() - os.stat(path).st_mtime >= seconds
    except OSError:
        return True
