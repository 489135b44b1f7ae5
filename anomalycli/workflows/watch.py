"""``anomaly watch``: judge every image that arrives under a folder, once, as it arrives.

The order of things for one image, each step only after the one before is done:
arrival (``inbox``) -> decoded in a worker process -> scored with its batch (``line``) -> its row
on disk (``journal``, fsynced) -> its file sorted, kept for review, the drift check told.
A kill at any moment leaves the image either with a whole row (then it is never judged again; a
sort left undone is finished at the next start) or with none (then it is judged at the next start).

No PyTorch here (an import contract): with an int8 or exported model the watch starts in about
a second.
"""

from __future__ import annotations

import collections
import errno
import faulthandler
import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from anomalycli import files
from anomalycli.data import decoding
from anomalycli.data.encoding import encoding_of
from anomalycli.data.images import existing_folder, load_image, original_size
from anomalycli.data.inbox import RESCAN_SECONDS, Inbox
from anomalycli.deploy.journal import Journal
from anomalycli.deploy.line import Judged, Line
from anomalycli.deploy.onnx_model import CALLS_IN_FLIGHT
from anomalycli.errors import UsageError
from anomalycli.views.heatmaps import map_scale, mark_heatmaps_folder, overlay, save_heatmap

SORTED = {"normal": "good", "anomaly": "anomaly", "error": "error"}  # --sort-into's folders per verdict


@dataclass
class WatchOptions:
    inbox: Path
    journal: Path
    sort_into: Path | None = None  # move each judged image to good/, anomaly/ or error/ here
    keep_flagged: Path | None = None  # copy each flagged image (images/) and its heat map (heatmaps/) here
    min_free_mb: float = 500.0  # pause rather than fill a disk the watch writes to
    settle_seconds: float = 3.0  # an image that does not decode while this new may still be being written
    polling: bool = False  # scan the folder instead of inotify events
    threshold: float = 0.5
    batch_size: int = 8  # the most images scored together when many wait (a burst)
    regions: bool = False  # the defect regions' count and largest area in each row (maps: about 8 % more time)


@dataclass
class _Pending:
    path: Path
    name: str
    identity: tuple[str, str, str]
    arrived: float
    decoded: Future


def check_options(options: WatchOptions) -> None:
    """The options' mistakes, each one line, before anything loads."""
    existing_folder(options.inbox)
    if options.journal.suffix.lower() != ".csv":
        raise UsageError(f"--journal must end in .csv (got {options.journal.name})")
    inbox = options.inbox.resolve()
    if inbox in options.journal.resolve().parents:
        raise UsageError(f"--journal {options.journal} is inside the watched folder; put it beside {options.inbox}")
    for flag, folder in (("--sort-into", options.sort_into), ("--keep-flagged", options.keep_flagged)):
        if folder is not None and folder.resolve() == inbox:
            raise UsageError(f"{flag} {folder} must be a folder other than the watched one")
        files.check_writable(folder, flag, folder=True)
    if options.batch_size < 1 or options.settle_seconds < 0 or options.min_free_mb < 0:
        raise UsageError("--batch-size must be at least 1, and --settle and --min-free at least 0")


def watch(model_path: Path, engine: str, options: WatchOptions, say: Callable[[str], None], stop: threading.Event) -> dict:
    """Judge what arrives under ``options.inbox`` until ``stop`` is set; ``say`` prints a line.
    Returns this run's counts."""
    check_options(options)
    # The decoding workers fork first, from a process without ONNX Runtime's threads.
    pool = ProcessPoolExecutor(decoding.default_workers(), mp_context=decoding.process_context(), initializer=_ignore_stops)
    pool.submit(os.getpid).result()
    try:
        # A burst's batch scored two images at once, as predict does; one image alone still runs on every core.
        line = Line(
            model_path, engine, options.threshold, with_maps=options.keep_flagged is not None, with_regions=options.regions, calls_in_flight=CALLS_IN_FLIGHT
        )
        opened = Journal(options.journal)
        skip = tuple(p for p in (options.sort_into, options.keep_flagged) if p is not None)
        inbox = Inbox(options.inbox, skip=skip, polling=options.polling)
        try:
            return _Watch(line, opened, inbox, pool, options, say, stop).run()
        finally:
            inbox.close()
            opened.close()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_stops() -> None:
    # A stop reaches the whole process group: the main process finishes the image in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    decoding.die_with_parent()


class _Watch:
    def __init__(self, line: Line, journal: Journal, inbox: Inbox, pool: ProcessPoolExecutor, options: WatchOptions, say, stop: threading.Event):
        self.line, self.journal, self.inbox, self.pool, self.options, self.say, self.stop = line, journal, inbox, pool, options, say, stop
        self.waiting: collections.deque[tuple[Path, str, tuple[str, str, str], float]] = collections.deque()  # arrived, not yet decoding
        self.pending: collections.deque[_Pending] = collections.deque()  # decoding or decoded, in arrival order
        self.in_flight: set[str] = set()
        self.counts = collections.Counter()
        self.scale = map_scale(line.model) if line.with_maps else None
        self.drift_file = options.journal.with_name(options.journal.stem + ".drift.json")
        self.paused = False
        self.next_forget = time.monotonic() + RESCAN_SECONDS

    def run(self) -> dict:
        o = self.options
        for text in self.line.engine_lines:
            self.say(text)
        mended = f", {self.journal.repaired} cut row(s) mended" if self.journal.repaired else ""
        self.say(
            f"watching {o.inbox} ({self.inbox.how}); journal {o.journal} ({self.journal.rows} rows{mended}); "
            f"model {self.line.identity['file']} ({self.line.identity['method']}, sha256 {self.line.identity['sha256']}); Ctrl-C or SIGTERM stops"
        )
        for path in self.inbox.present():  # what arrived while no watch ran
            self._consider(path)
        while not self.stop.is_set():
            if self._disk_low():
                time.sleep(1.0)  # not stop.wait: a signal handler setting the Event while this thread holds its lock would deadlock
                continue
            for path in self.inbox.arrived(timeout=0.0 if self.pending else 0.25):
                self._consider(path)
            if self.pending:
                self._judge_ready()
            if time.monotonic() >= self.next_forget:
                present = {self._name(p) for p in self.inbox.present()}
                self.journal.forget(lambda key: key[0] in present)
                self.next_forget = time.monotonic() + RESCAN_SECONDS
        self.say(
            f"stopped: {self.counts['judged']} images judged in this run ({self.counts['anomaly']} flagged, {self.counts['error']} errors); "
            f"{self.journal.rows} rows in {o.journal}"
        )
        return dict(self.counts)

    def _name(self, path: Path) -> str:
        return path.relative_to(self.options.inbox).as_posix()

    def _consider(self, path: Path) -> None:
        """Queue ``path`` for decoding, unless it is judged already (then finish its sorting), gone
        or in hand."""
        if str(path) in self.in_flight:
            return
        try:
            stat = path.stat()
        except OSError:
            return  # gone before it was read: nothing to judge (a rename out of the folder, a temporary file)
        name = self._name(path)
        identity = (name, str(stat.st_size), str(stat.st_mtime_ns))
        if identity in self.journal:
            try:
                self._sort(path, name, self.journal.verdict(identity))
            except OSError as exc:
                self.say(f"warning: {name} judged before, but not moved: {exc.strerror or exc}")
            return
        self.in_flight.add(str(path))
        self.waiting.append((path, name, identity, time.monotonic()))
        self._decode_ahead()

    def _decode_ahead(self) -> None:
        """Hand the decoding workers the next waiting images, as many ahead as predict decodes: a
        burst of thousands waits as paths, not as decoded pixels (memory stays flat)."""
        while self.waiting and len(self.pending) < decoding.images_ahead(self.options.batch_size):
            path, name, identity, arrived = self.waiting.popleft()
            self.pending.append(
                _Pending(path, name, identity, arrived, self.pool.submit(decoding.decode, path, self.line.image_size, self.line.framing, self.line.windows))
            )

    def _judge_ready(self) -> None:
        """Score the first waiting image with those decoded behind it (up to a batch), then write,
        sort and keep them."""
        batch = [self.pending.popleft()]
        results = [batch[0].decoded.result()]
        while self.pending and len(batch) < self.options.batch_size and self.pending[0].decoded.done():
            batch.append(self.pending.popleft())
            results.append(batch[-1].decoded.result())
        self._decode_ahead()
        ready, images, errors = [], [], []
        for item, (pixels, error) in zip(batch, results):
            self.in_flight.discard(str(item.path))
            if self._still_arriving(item, error):
                continue
            ready.append(item)
            images.append(np.zeros((3, self.line.image_size, self.line.image_size), np.uint8) if pixels is None else pixels.transpose(2, 0, 1))
            errors.append(error)
        if not ready:
            return
        sizes = [original_size(i.path) for i in ready] if self.line.wants_sizes else None
        saved_as = [encoding_of(i.path) if not e else None for i, e in zip(ready, errors)]
        judged, said = self.line.judge([i.name for i in ready], np.stack(images), errors, [i.arrived for i in ready], sizes, saved_as)
        for item, verdict in zip(ready, judged):
            verdict.bytes, verdict.mtime_ns = item.identity[1], item.identity[2]
        self.journal.append([j.row() for j in judged])  # on disk: from here on, these images are judged
        for item, verdict in zip(ready, judged):
            self._tell(verdict)
            try:
                if verdict.verdict == "anomaly" and self.options.keep_flagged is not None:
                    self._keep(item.path, verdict)
                self._sort(item.path, item.name, verdict.verdict)
            except OSError as exc:  # the verdict is written: a file that cannot be kept or moved stops nothing
                self.say(f"warning: {item.name} judged, but not kept or moved: {exc.strerror or exc}")
            verdict.scored.map = None
        for text in said:
            self.say(text)
        if said:
            files.write_text(self.drift_file, json.dumps(self.line.drift_state(), indent=1))

    def _still_arriving(self, item: _Pending, error: str) -> bool:
        """Whether ``item`` is not to be judged now: changed since it was read (its next arrival is
        due), gone, or undecodable while new (looked at again once it is ``settle_seconds`` old)."""
        try:
            stat = item.path.stat()
        except OSError:
            self.say(f"skipped {item.name}: deleted or moved away before it was judged")
            return True
        if (item.identity[1], item.identity[2]) != (str(stat.st_size), str(stat.st_mtime_ns)):
            self.inbox.later(item.path, time.monotonic())
            return True
        if error:
            age = time.time() - stat.st_mtime
            if age < self.options.settle_seconds:
                self.inbox.later(item.path, time.monotonic() + self.options.settle_seconds - age)
                return True
        return False

    def _tell(self, judged: Judged) -> None:
        self.counts["judged"] += 1
        self.counts[judged.verdict] += 1
        score = "" if judged.verdict == "error" else f" {judged.scored.score:.3f}"
        why = f" ({judged.scored.error})" if judged.scored.error else ""
        self.say(f"{judged.verdict}{score} {judged.name}{why}")

    def _sort(self, path: Path, name: str, verdict: str | None) -> None:
        """Move a judged image to ``sort_into``/good|anomaly|error/, never over another file."""
        if self.options.sort_into is None or verdict not in SORTED or not path.exists():
            return
        target = _free_name(self.options.sort_into / SORTED[verdict] / name)
        for attempt in range(3):  # the line's own clean-up may remove the folder between mkdir and the move
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, target)
                return
            except FileNotFoundError:
                if not path.exists() or attempt == 2:
                    raise
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.move(str(path), str(target))  # another disk: copy, then remove
                return

    def _keep(self, path: Path, judged: Judged) -> None:
        """A flagged image and its heat map under ``keep_flagged`` (images/, heatmaps/), for
        ``anomaly review MODEL KEEP/images``."""
        keep = self.options.keep_flagged
        target = _free_name(keep / "images" / judged.name)
        with files.atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
        if judged.scored.map is not None:
            heat = overlay(load_image(path, self.line.windows), judged.scored.map, self.scale, flagged=judged.verdict == "anomaly")
            mark_heatmaps_folder(keep / "heatmaps")
            save_heatmap(heat, keep / "heatmaps" / heatmap_name(target.relative_to(keep / "images")))

    def _disk_low(self) -> bool:
        """Whether a disk the watch writes to has less than ``min_free_mb`` free; says so once,
        and once when it has again."""
        folders = [self.options.journal.parent, self.options.sort_into, self.options.keep_flagged]
        low = []
        for folder in folders:
            if folder is None:
                continue
            place = folder if folder.exists() else folder.parent
            free = shutil.disk_usage(place).free / 2**20
            if free < self.options.min_free_mb:
                low.append(f"{free:.0f} MB free on {place}")
        if low and not self.paused:
            self.say(f"disk guard: {'; '.join(low)}, under --min-free {self.options.min_free_mb:g} MB: no image is judged until there is more")
        elif self.paused and not low:
            self.say("disk guard: space again: judging resumes")
        self.paused = bool(low)
        return self.paused


def heatmap_name(image: Path) -> Path:
    """A kept image's heat map's name: the image's, as a PNG (a.jpg's a.jpg.png, never a.png's a.png)."""
    return image if image.suffix.lower() == ".png" else image.with_name(f"{image.name}.png")


def _free_name(path: Path) -> Path:
    """``path``, or ``stem-1.ext``, ``stem-2.ext``... where it is taken."""
    n, candidate = 0, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


# A stop that takes longer than this writes whether the stop was seen and every thread's stack to
# stderr (the process goes on stopping): a watch that will not stop says where it waits.
SLOW_STOP_SECONDS = 20.0


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Within it, SIGTERM and the first Ctrl-C set ``stop`` (the image in hand is finished); a
    second Ctrl-C interrupts at once. On leaving, the former handlers return and a slow-stop
    report not yet due is called off."""
    timers = []

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not stop.is_set():
            # A daemon thread: a process that stops in time exits before it speaks.
            timers.append(threading.Timer(SLOW_STOP_SECONDS, _tell_slow_stop, (stop,)))
            timers[-1].daemon = True
            timers[-1].start()
        stop.set()

    former = {number: signal.signal(number, handler) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()
        for number, previous in former.items():
            signal.signal(number, previous)


def _tell_slow_stop(stop: threading.Event) -> None:
    seen = "set" if stop.is_set() else "NOT set"
    sys.stderr.write(f"watch: still stopping {SLOW_STOP_SECONDS:g} s after the stop signal (stop flag {seen}); every thread's stack:\n")
    sys.stderr.flush()
    faulthandler.dump_traceback(all_threads=True)
