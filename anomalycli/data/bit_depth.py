"""How many bits of a 16-bit image file hold its values: decided once, from the goods, at the fit.

A line camera's raw 10-, 12- or 14-bit values saved in the low bits of a 16-bit file (an SDK's
raw export, a uint16 array saved as it is) read as nearly black when scaled by 65535, as a 16-bit
file's are: 12-bit values keep 16 grey levels of 256, and a defect's faint shade is gone before
the backbone sees it. One file alone cannot say which it holds: a dark 16-bit image and 12-bit
data look alike, and a rule per file would scale two images of one line 4x apart where their
brightest pixel crosses a bit boundary. So the fit measures the largest value of the goods'
16-bit files, keeps the fewest of ``CANDIDATE_BITS`` that hold it, and the model records it: every
verb then reads each 16-bit file with those bits (a value above them saturates, as a brighter
exposure would). Values a camera moved to the top bits are on the 16-bit scale already (see
``bit_depth_of``). Files of 8 bits are not touched, and a camera's frames are read as the model
read its goods' files (``pixel_formats.frame_significant_bits``).

No PyTorch here: predict reads files with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FULL_BITS = 16
CANDIDATE_BITS = (8, 10, 12, 14)  # what cameras give (Mono8 ... Mono14): a range between them is one of them, underexposed
# Fewer grey levels than this between the goods' darkest and brightest values once read to 8 bits: worth a warning.
FEW_GREY_LEVELS = 64


@dataclass(frozen=True)
class BitDepth:
    bits: int  # the 16-bit files' values are read on 0 .. 2**bits - 1
    reason: str  # one line: what was measured ("" where the goods hold no 16-bit file)
    warning: str = ""  # one line where the goods' values span few of the grey levels the model sees

    def to_dict(self) -> dict:
        return {"bits": self.bits, "reason": self.reason, "warning": self.warning}


def significant_bits_of(config: dict) -> int:
    """The bits a model reads 16-bit files with; files from before the rule have none and read 16."""
    return int(config.get("significant_bits", FULL_BITS))


@dataclass(frozen=True)
class SixteenBit:
    """What a 16-bit file's values say of the bits they were made with."""

    largest: int
    low_zero_bits: int  # the low bits every value leaves at 0: 4 for a Mono12 camera's values moved to the top bits
    smallest: int = 0

    def saturates(self, bits: int) -> bool:
        """Whether read on ``bits`` its brightest pixels saturate."""
        return bits < FULL_BITS and self.largest >= 2**bits


def sixteen_bit_values(image: Image.Image) -> SixteenBit | None:
    """``SixteenBit`` of an opened image; None for one that is not 16-bit grey."""
    if not image.mode.startswith("I;16"):
        return None
    values = np.asarray(image)
    every = int(np.bitwise_or.reduce(values, axis=None))
    return SixteenBit(int(values.max()), min((every & -every).bit_length() - 1, FULL_BITS) if every else FULL_BITS, int(values.min()))


def sixteen_bit_file(path: Path) -> SixteenBit | None:
    """``sixteen_bit_values`` of the file at ``path``; None for any other file (or an unreadable one)."""
    try:
        with Image.open(path) as image:
            return sixteen_bit_values(image)
    except (OSError, ValueError, SyntaxError):
        return None


def fewest_bits(largest: int) -> int:
    """The fewest of ``CANDIDATE_BITS`` that hold ``largest``, else ``FULL_BITS``."""
    return next((bits for bits in CANDIDATE_BITS if largest < 2**bits), FULL_BITS)


def bit_depth(paths: list[Path]) -> BitDepth:
    """The bits the goods at ``paths`` hold their 16-bit values in (every good's file is measured:
    one brighter than a sample's would saturate)."""
    return bit_depth_of([found for found in map(sixteen_bit_file, paths) if found is not None])


def bit_depth_of(goods: list[SixteenBit]) -> BitDepth:
    """``bit_depth`` from what the goods' 16-bit files' values say.

    Values a camera moved to the top bits (a Mono12 frame as a 16-bit PNG, as the station's archive
    keeps it) leave their low bits at 0 in every pixel: they are on the 16-bit scale already,
    however dark, and are read on 16 bits as the camera's frames are. Values in the low bits fill
    them with noise."""
    if not goods:
        return BitDepth(FULL_BITS, "")
    largest, shift = max(good.largest for good in goods), min(good.low_zero_bits for good in goods)
    if shift >= 2:
        bits = FULL_BITS
        reason = f"the {len(goods)} 16-bit good(s) hold a {FULL_BITS - shift}-bit camera's values in their top bits: read on their 16 bits"
    else:
        bits = fewest_bits(largest)
        reason = (
            f"the {len(goods)} 16-bit good(s) use their 16 bits (largest value {largest})"
            if bits == FULL_BITS
            else f"the {len(goods)} 16-bit good(s) hold their values in the low {bits} bits (largest value {largest} of 65535): "
            f"every 16-bit image is read on 0-{2**bits - 1}"
        )
    return BitDepth(bits, reason, _narrow(min(good.smallest for good in goods), largest, bits))


def _narrow(smallest: int, largest: int, bits: int) -> str:
    """A warning where the goods' values, read on ``bits``, span fewer than ``FEW_GREY_LEVELS`` of the
    model's 256 grey levels: values on an offset (a height map's, a sensor's with a dark level) or a
    dark camera's in the top bits keep too few to show a faint defect. Reading scales from 0 on a
    whole number of bits, so stretching them is the user's (the files say nothing of the line's range)."""
    kept = int((largest - smallest) / (2**bits - 1) * 255) + 1
    if kept >= FEW_GREY_LEVELS:
        return ""
    return (
        f"the 16-bit goods' values lie between {smallest} and {largest} only: read on {bits} bits they span {kept} of the "
        "256 grey levels the model sees, and a faint defect's shade is lost; save the images with their values stretched "
        "over the 16 bits (less any offset), or as 8-bit images stretched over the line's range, then train again"
    )


def saturated(paths: list[Path], significant_bits: int) -> list[Path]:
    """The 16-bit files among ``paths`` with values above ``significant_bits`` (none where a model
    reads 16-bit files on all 16): their brightest pixels saturate."""
    if significant_bits >= FULL_BITS:
        return []
    return [path for path in paths if (found := sixteen_bit_file(path)) is not None and found.saturates(significant_bits)]
