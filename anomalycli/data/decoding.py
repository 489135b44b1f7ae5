"""Decoding images ahead of the model, in worker processes, in order.

A PNG takes about as long to decode as the network takes to score it, so decoding runs in other
processes while the model works. ``DecodeAhead`` imports no PyTorch: ``anomaly predict`` starts
it before PyTorch's import (over a second on a small CPU), and the other core decodes the first
images meanwhile.
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from anomalycli.data.bit_depth import OWN_SCALES, Windows
from anomalycli.data.framing import SQUASH
from anomalycli.data.images import ImageError, read_image_array
from anomalycli.runtime import available_cores

# Batches of images decoded ahead of the one the model asks for: memory stays flat in the number
# of images (4 batches of 32 at 320 px are 39 MB).
BATCHES_AHEAD = 4


def images_ahead(batch_size: int) -> int:
    """How many images a ``DecodeAhead`` feeding batches of ``batch_size`` decodes in advance."""
    return BATCHES_AHEAD * max(1, batch_size)


def default_workers() -> int:
    # One decoding worker per two cores overlaps PNG decoding with the network, and two at least: on
    # 2 cores a second worker fills the gaps the scoring graph leaves (camera screws' whole predict
    # 1.09x, magnetic tiles' 1.00x, one image the same; BENCHMARKS.md, "Speed"). The cores this
    # process may use (a line PC may pin it to some), not the machine's.
    return min(4, max(2, available_cores() // 2))


def decode(path: Path, image_size: int, framing: str = SQUASH, windows: Windows = OWN_SCALES) -> tuple[np.ndarray | None, str]:
    """(pixels S x S x 3, "") or (None, the error's one line) for one image file."""
    try:
        return read_image_array(path, image_size, framing=framing, windows=windows), ""
    except ImageError as exc:
        return None, str(exc)


class DecodeAhead:
    """Each path's ``decode`` result, in order, decoded up to ``ahead`` images in advance by
    ``workers`` processes (none: here, when asked for). Use it in a ``with`` block, or ``close`` it:
    that stops the workers."""

    def __init__(
        self,
        paths: list[Path],
        image_size: int,
        workers: int | None = None,
        ahead: int = images_ahead(32),
        framing: str = SQUASH,
        windows: Windows = OWN_SCALES,
    ):
        self.paths, self.image_size, self.ahead = list(paths), image_size, max(1, ahead)
        self.framing, self.windows = framing, windows
        workers = default_workers() if workers is None else workers
        self._in_process = not workers
        self._pool = None if self._in_process else ProcessPoolExecutor(workers, mp_context=process_context(), initializer=_ignore_interrupts)
        self._pending: collections.deque[Future] = collections.deque()
        self._next = 0  # the next path to hand to the pool
        # The first submit forks the workers (on Linux). Frozen, the objects of this process are
        # not the workers' collector's to free: a worker that freed an ONNX Runtime session it
        # inherited hung in its destructor, waiting on threads a fork does not copy.
        gc.freeze()
        try:
            self._fill()
        finally:
            gc.unfreeze()

    def _fill(self) -> None:
        while self._pool and self._next < len(self.paths) and len(self._pending) < self.ahead:
            self._pending.append(self._pool.submit(decode, self.paths[self._next], self.image_size, self.framing, self.windows))
            self._next += 1

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, str]]:
        if self._in_process:
            yield from (decode(path, self.image_size, self.framing, self.windows) for path in self.paths)
            return
        while self._pending:
            result = self._pending.popleft().result()
            self._fill()
            yield result

    def close(self) -> None:
        """Stop the workers; what was not decoded yet never will be."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._pending = None, collections.deque()

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batches(
    paths: list[Path],
    image_size: int,
    batch_size: int = 32,
    workers: int | None = None,
    decoded: DecodeAhead | None = None,
    framing: str = SQUASH,
    windows: Windows = OWN_SCALES,
):
    """Yield (uint8 images B x 3 x S x S, indices into ``paths``, errors) per batch, as numpy
    arrays, decoded ahead by ``workers`` processes (or by ``decoded``, one already started).

    An unreadable file gives a zero image and its error message ('' for the readable ones).
    """
    with decoded or DecodeAhead(paths, image_size, workers, images_ahead(batch_size), framing, windows) as images:
        batch, errors = [], []
        for index, (pixels, error) in enumerate(images):
            batch.append(np.zeros((3, image_size, image_size), np.uint8) if pixels is None else pixels.transpose(2, 0, 1))
            errors.append(error)
            if len(batch) == batch_size or index == len(images.paths) - 1:
                yield np.stack(batch), np.arange(index + 1 - len(batch), index + 1), errors
                batch, errors = [], []


def process_context():
    # Forking is the quick start where it is safe (Linux); elsewhere a worker starts afresh and
    # imports only this module and Pillow.
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group: the main process stops the workers, and the
    # workers print no traceback of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def die_with_parent() -> None:
    """End this worker process when the process that started it ends, even by SIGKILL (Linux):
    a watch killed and restarted a hundred times must not leave a hundred idle workers."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
