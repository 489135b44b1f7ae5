"""The good images a patchcore bank learns: as they are, or turned (and mirrored) where the goods
show the part at many orientations (``data/orientation.py`` decides, or ``--orientation``).

The copies are written as PNG files to a folder that lasts the fit, and read like any image: each
no larger than the fit's input needs (``COPY_DETAIL``) and quickly compressed, since a camera's
large images made writing them most of a fit's time (BENCHMARKS.md, "Speed"). They enter the bank
only: each copy is in its original's cross-fitting fold (a good is never scored by its own turned
copies), and the calibration, the pixel threshold and the drift reference are made of the
originals alone, whose count is what the threshold's interval knows.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from PIL import Image

from anomalycli.data.bit_depth import OWN_SCALES, Windows
from anomalycli.data.images import ImageError, open_image, to_grey_or_rgb
from anomalycli.data.layouts import Sample
from anomalycli.data.orientation import FIXED, Orientation, measured_goods, orientation, turned_copies, turns

log = logging.getLogger("anomalycli")

# A copy keeps COPY_DETAIL x the fit's input size on its short side (any framing resizes it further
# down), and is written at zlib level 1: a 1024 px camera screw's copy took 230 ms to turn and
# write at full size and level 6, about 40 ms so.
COPY_DETAIL, COPY_COMPRESSION = 2, 1


@dataclass
class TurnedGoods:
    samples: list[Sample]  # the originals, then the copies
    copy_of: dict[Path, Path]  # each copy's path -> its original's
    orientation: Orientation
    turns: int  # orientations each good is learnt at (1: as it is)

    def config(self) -> dict:
        """What the model's config keeps of it: ``views`` counts the goods and their copies, the
        images the bank's share of patches is a share of (``adapt`` adds to it)."""
        views = sum(s.label == 0 for s in self.samples)
        return {"orientation": {**self.orientation.to_dict(), "turns": self.turns, "views": int(views)}}


def learnt_views(orientation: dict, n_goods: int) -> int:
    """How many good images (goods and their copies) a model's bank learnt: as its config counts
    them, or, in a file from before that count, each of ``n_goods`` at the turns it keeps."""
    if "views" in orientation:
        return int(orientation["views"])
    return n_goods * orientation["turns"] * (2 if orientation["mirrored"] else 1)


@contextlib.contextmanager
def turned_goods(samples: list[Sample], wanted: str, image_size: int, ignore_masks: bool = False, windows: Windows = OWN_SCALES) -> Iterator[TurnedGoods]:
    """``samples`` with the turned copies of their goods where the orientation says so, for a fit at
    ``image_size`` reading 16-bit goods on ``windows``; the copies' folder goes when the block ends."""
    goods = [s for s in samples if s.label == 0]
    if ignore_masks and wanted != FIXED:
        # A don't-care mask is in the goods' own frame: a turned copy would put it elsewhere.
        found = Orientation(FIXED, False, None, "--ignore masks are in the images' own frame: the goods are used as they are")
    else:
        found = orientation(measured_goods([s.path for s in goods], windows), wanted)
    with goods_turned(samples, found, turns(len(goods), found.kind), image_size, windows) as turned:
        if turned.copy_of:
            log.info(f"orientation: {found.reason}; {len(goods)} goods learnt at {turned.turns} orientations" + (" and mirrored" if found.mirrored else ""))
        yield turned


@contextlib.contextmanager
def goods_turned(samples: list[Sample], found: Orientation, count: int, image_size: int, windows: Windows = OWN_SCALES) -> Iterator[TurnedGoods]:
    """``samples`` with each good's copies at ``count`` orientations (mirrored too where ``found``
    says), as decided already: by ``turned_goods``, or by the model that ``adapt`` teaches more goods."""
    if count == 1 and not found.mirrored:
        yield TurnedGoods(list(samples), {}, found, 1)
        return
    with tempfile.TemporaryDirectory(prefix="anomalycli-turned-") as folder:
        copies, copy_of = [], {}
        for i, good in enumerate(s for s in samples if s.label == 0):
            original = _original(good.path, windows)  # an unreadable good has no copies; the fit reports it
            for k, image in enumerate(turned_copies(shrunk(original, image_size), count, found.mirrored)[1:] if original else [], start=1):
                path = Path(folder) / f"{i:05d}-{k:02d}.png"
                image.save(path, compress_level=COPY_COMPRESSION)
                copies.append(replace(good, path=path, mask=None))
                copy_of[path] = good.path
        yield TurnedGoods(list(samples) + copies, copy_of, found, count)


def shrunk(image: Image.Image, image_size: int) -> Image.Image:
    """``image`` resized (as the fit resizes) so that its short side is at most ``COPY_DETAIL`` x
    ``image_size``, its shape kept; a smaller image as it is."""
    scale = COPY_DETAIL * image_size / min(image.size)
    if scale >= 1:
        return image
    width, height = (max(1, round(side * scale)) for side in image.size)
    return image.resize((width, height), Image.BILINEAR, reducing_gap=3.0)


def _original(path: Path, windows: Windows) -> Image.Image | None:
    """A good as the fit reads it, a grey one kept grey (its copies a third of the bytes to write:
    the fit reads an L image exactly as its RGB copy; an 8-bit copy of a 16-bit good is read as it
    was written); None where it does not decode."""
    try:
        return to_grey_or_rgb(open_image(path), windows)
    except ImageError:
        return None
