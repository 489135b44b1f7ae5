"""Probe (a record, not a topic): the localisation topic with letterboxing that keeps only a share
of each image's shape (its aspect ratio raised to KEEP: 1 is the shipped letterbox, 0 squashing),
the rest stretched as squashing does, so that long images keep more pixels across.

    python -m benchmarks.probes.partial_letterbox KEEP --data ../shared/data/magtiles --results R --out B.md
"""

from __future__ import annotations

import sys

from anomalycli.data import framing
from benchmarks.__main__ import main


def partial_box(keep: float):
    def content_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
        aspect = (width / height) ** keep
        w, h = (size, size / aspect) if aspect >= 1 else (size * aspect, size)
        w, h = min(size, max(1, round(w))), min(size, max(1, round(h)))
        return (size - w) // 2, (size - h) // 2, w, h

    return content_box


if __name__ == "__main__":
    framing.content_box = partial_box(float(sys.argv[1]))
    sys.exit(main(["--topics", "localisation", *sys.argv[2:]]))
