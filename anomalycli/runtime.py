"""Process-wide settings for long runs on a CPU, and how they show their progress."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def keep_memory_flat() -> None:
    """Give glibc's malloc one arena instead of one per thread.

    With a heap per thread, the feature maps of batch after batch fragment the heaps and resident
    memory creeps up with the number of images scored (1,400 -> 1,880 MiB over 5,000 images
    here); with one arena it stays at 1,275 MiB from the 500th image on, at the same speed
    (BENCHMARKS.md, Scale and Ray). Elsewhere (macOS, Windows,
    musl) this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def idle_threads_sleep() -> None:
    """Let PyTorch's OpenMP threads sleep as soon as a parallel region ends, unless the user chose.

    By default they spin for a while first, waiting for the next region; but between PyTorch's
    regions ONNX Runtime (the int8 backbone, the int8 bank search) and the decoding worker need
    the same cores, and the spinning took them: with the threads sleeping, ``anomaly predict``
    used 20 % less CPU time and took 7-9 % less wall time, and ``anomaly train`` 25 % less CPU
    (BENCHMARKS.md, Levers tried and not shipped: the threads spinning). Read once, when OpenMP starts: set before PyTorch is imported.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    """The cores this process may run on (its affinity where the OS says, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def library_quiet(logger: str):
    """Hold a library's logger to critical messages: where a failure it would log, with a
    traceback, is reported by the caller in one line (a port a server cannot listen on)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def progress_bar(iterable=None, shown: bool = True, **options):
    """A tqdm bar where ``shown`` and stderr is a terminal: a log file or a pipe gets no bar (each of
    a bar's redraws is a carriage return, hundreds of them a fit in one line of the log)."""
    from tqdm import tqdm  # here, not at every command's start (4 ms)

    return tqdm(iterable, disable=None if shown else True, **options)
