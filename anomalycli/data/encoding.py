"""How image files were saved: lossless, or lossy JPEG (at what quality) or WebP, read from their
headers without decoding them.

A model trained on lossless images flags goods saved as JPEG at quality 60 (every good screw:
BENCHMARKS.md, "The changed line"), at Pillow's default 75, or as lossy WebP: the compression
smooths a surface's fine texture and leaves blocks, and the drift check's image tests say only
that the images are blurrier. Train keeps
the encodings of its images, and where the drift check calls drift, the encodings of the images
judged (a batch's files; on the line, each image's as it is judged: 0.05-0.08 ms a header) are
compared with them, to name the cause.
"""

from __future__ import annotations

import functools
import io
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

LOSSLESS = "lossless"
WEBP_LOSSY = "WebP lossy"
# At most this many files are read for a summary, spread over the list: a header costs about 0.1 ms.
MOST_FILES = 64
# JPEG at this quality or above keeps a texture's scores (quality 90: 0.006 median, BENCHMARKS.md, "Speed").
GOOD_JPEG_QUALITY = 90


def encoding_of(path: str | Path, data: bytes | None = None) -> str | None:
    """'lossless', 'JPEG q75', 'WebP lossy' (the file at ``path``, or the bytes ``data`` it names);
    None where it does not open."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            if image.format == "JPEG":
                return f"JPEG q{jpeg_quality(image.quantization)}"
            if image.format == "WEBP":
                return LOSSLESS if _webp_lossless(path, data) else WEBP_LOSSY
            return LOSSLESS
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def summary(paths: list) -> dict[str, int]:
    """How many of (a spread sample of) ``paths`` were saved each way."""
    step = max(1, len(paths) // MOST_FILES)
    return counted(map(encoding_of, paths[::step]))


def counted(encodings) -> dict[str, int]:
    """How many of ``encodings`` (None: unknown) are each one."""
    return dict(Counter(e for e in encodings if e is not None))


def lossier_line(trained: dict[str, int] | None, judged: dict[str, int]) -> str | None:
    """One sentence where most images judged are saved lossier than every training image, else None."""
    if not trained or not judged:
        return None
    most, count = max(judged.items(), key=lambda item: item[1])
    if 2 * count < sum(judged.values()) or _quality(most) >= min(_quality(e) for e in trained):
        return None
    was = " and ".join(_prose(e) for e in sorted(trained))
    return (
        f"cause: these images are {_prose(most)} ({count} of the {sum(judged.values())} looked at), the training images {was}: lossy compression "
        f"smooths fine texture and leaves blocks, which score as defects; save the line's images lossless or as JPEG at quality "
        f"{GOOD_JPEG_QUALITY} or more, or adapt the model with good images saved as the line saves them"
    )


def added(trained: dict[str, int] | None, paths: list) -> dict[str, int]:
    """``trained`` with the encodings of ``paths`` counted in (adapt's new goods)."""
    return dict(Counter(trained or {}) + Counter(summary(paths)))


def _prose(encoding: str) -> str:
    return f"JPEG at quality {encoding[len('JPEG q') :]}" if encoding.startswith("JPEG q") else encoding


def _quality(encoding: str) -> float:
    if encoding == LOSSLESS:
        return 101.0
    if encoding.startswith("JPEG q"):
        return float(encoding[len("JPEG q") :])
    return 0.0  # lossy WebP: its quality is not in the header


def jpeg_quality(tables: dict) -> int:
    """The IJG quality (1-100) whose luminance table is nearest the file's first one."""
    first = np.asarray(tables[min(tables)], dtype=float)
    reference = _reference_tables()
    return int(1 + np.argmin(np.abs(reference - first).sum(1)))


@functools.cache
def _reference_tables() -> np.ndarray:
    """The luminance table of each quality 1-100, as Pillow writes and reads it (so in its order)."""
    tables = []
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, "JPEG", quality=quality)
        with Image.open(buffer) as image:
            tables.append(image.quantization[0])
    return np.asarray(tables, dtype=float)


def _webp_lossless(path: str | Path, data: bytes | None = None) -> bool:
    """A WebP file's first image chunk: VP8L is lossless, VP8 lossy (an extended file lists chunks)."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read(4096)
    head = data[12:4096]
    return b"VP8L" in head and b"VP8 " not in head
