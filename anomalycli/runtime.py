"""Process-wide settings for long runs on a CPU."""

from __future__ import annotations

import ctypes
import sys

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def keep_memory_flat() -> None:
    """Give glibc's malloc one arena instead of one per thread.

    With a heap per thread, the feature maps of batch after batch fragment the heaps and resident
    memory creeps up with the number of images scored (1,400 -> 1,880 MiB over 5,000 images
    here); with one arena it stays at 1,275 MiB from the 500th image on, at the same speed
    (measured 2026-11-28, Scale in `git show cf0a644:BENCHMARKS.md`). Elsewhere (macOS, Windows,
    musl) this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass
