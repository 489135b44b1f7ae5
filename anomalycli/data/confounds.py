"""Whether the good and the defective images were taken differently: a model learns the difference.

Where the good images are one size, mode or file format and the defective ones another (goods from
the line's camera, defects photographed later or saved by another program), the scores separate the
two by that alone: the hybrid's head and the classifier learn it, a bank's distances grow with
another resize or JPEG's blocks, and the validation figures are measured on the same difference, so
they say so too. On the line, a defect from the same camera as the goods is missed. ``inspect``,
``train`` and ``eval`` say so in one line.

Read from headers (about 0.1 ms a file), on at most ``MOST_FILES`` of each group. No PyTorch here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from anomalycli.data.encoding import encoding_of

MOST_FILES = 64  # of each group, spread over it: a header each
SHARE = 0.9  # a group is taken one way where at least this share of it is


@dataclass(frozen=True)
class Taken:
    """How one image file was taken, as its header says."""

    size: str  # "1024x768"
    mode: str  # Pillow's: L, RGB, I;16 ...
    saved_as: str  # encoding.encoding_of: lossless, JPEG q85 ...


def taken(path: Path) -> Taken | None:
    """``Taken`` of the file at ``path``; None where it does not open."""
    try:
        with Image.open(path) as image:
            size, mode = f"{image.width}x{image.height}", image.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    saved_as = encoding_of(path)
    return None if saved_as is None else Taken(size, mode, saved_as)


def differences(goods: list[Taken], defects: list[Taken]) -> list[str]:
    """What sets the two groups apart, each as '<what>: the good images X, the defective ones Y':
    where each group is mostly (``SHARE``) one value, and the two values differ."""
    found = []
    for field, what in (("size", "size"), ("mode", "mode"), ("saved_as", "saved as")):
        good_values, defect_values = Counter(getattr(t, field) for t in goods), Counter(getattr(t, field) for t in defects)
        if not good_values or not defect_values:
            continue
        (good, n_good), (defect, n_defect) = good_values.most_common(1)[0], defect_values.most_common(1)[0]
        if good != defect and n_good >= SHARE * len(goods) and n_defect >= SHARE * len(defects):
            found.append(f"{what}: the good images {good} ({n_good} of {len(goods)}), the defective ones {defect} ({n_defect} of {len(defects)})")
    return found


def taken_differently(good_paths: list[Path], defect_paths: list[Path]) -> str | None:
    """One line where the good and the defective images were taken differently, else None."""
    goods, defects = _taken(good_paths), _taken(defect_paths)
    found = differences(goods, defects)
    if not found:
        return None
    return (
        f"the good and the defective images were taken differently ({'; '.join(found)}): the scores can separate them by that "
        "instead of the defect, and the figures measured on them with it; on the line a defect taken as the goods are would be missed. "
        "Take both from the line's camera, saved the same way"
    )


def _taken(paths: list[Path]) -> list[Taken]:
    step = max(1, len(paths) // MOST_FILES)
    return [t for t in map(taken, paths[::step]) if t is not None]
