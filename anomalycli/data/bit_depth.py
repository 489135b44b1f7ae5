"""How a 16-bit image file's values are read to 8 bits: decided once, from the goods, at the fit.

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
read its goods' files (``pixel_formats.frame_sixteen_bit``).

Values on an offset (a height map's 30,000 +- 2,000; a sensor's dark level) fill no whole number of
bits: read from 0 they keep a few grey levels of 256 (the screws held out, AUROC 0.867, on the window 0.953, against
0.952 for their 8-bit copies). Where the goods' values lie above their own spread, the window is
the goods' range and half its width again on each side (``OFFSET_MARGIN``), and the model records
it. A window on an offset is the ``SixteenBitWindow`` every reader takes, as whole bits are.

No PyTorch here: predict reads files with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FULL_BITS = 16
CANDIDATE_BITS = (8, 10, 12, 14)  # what cameras give (Mono8 ... Mono14): a range between them is one of them, underexposed
# Fewer grey levels than this between the goods' darkest and brightest values once read to 8 bits:
# worth a window of their own where they lie on an offset, else a warning.
FEW_GREY_LEVELS = 64
OFFSET_MARGIN = 0.5  # of the goods' spread, each side of it: a defect that far beyond their values still reads unclipped
WINDOW_KEY = "sixteen_bit_window"  # a model's window on an offset; whole bits are "significant_bits"


@dataclass(frozen=True)
class SixteenBitWindow:
    """The 16-bit values read onto the grey levels 0..255: ``low`` to black, ``high`` to white, those beyond saturate."""

    low: int
    high: int

    @classmethod
    def of_bits(cls, bits: int) -> SixteenBitWindow:
        return cls(0, 2**bits - 1)

    @property
    def bits(self) -> int | None:
        """The bits it reads from 0 on; None for a window on an offset."""
        span = self.high + 1
        return span.bit_length() - 1 if self.low == 0 and span & (span - 1) == 0 else None

    def to_grey(self, values: np.ndarray) -> np.ndarray:
        """16-bit ``values`` as uint8 grey levels."""
        return np.clip((np.asarray(values, dtype=np.float64) - self.low) / (self.high - self.low) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def grey_levels(self, smallest: int, largest: int) -> int:
        """How many of the 256 grey levels values from ``smallest`` to ``largest`` keep."""
        return int((largest - smallest) / (self.high - self.low) * 255) + 1

    def saturates(self, found: SixteenBit) -> bool:
        """Whether a file's values (``found``, less a few stray pixels) go beyond the window: its brightest or darkest parts saturate."""
        return found.high > self.high or found.low < self.low

    def described(self) -> str:
        """'12 bits', or 'window 28000-36000' for one on an offset."""
        return f"{self.bits} bits" if self.bits is not None else f"window {self.low}-{self.high}"

    def to_config(self) -> dict:
        return {"significant_bits": self.bits} if self.bits is not None else {WINDOW_KEY: [self.low, self.high]}


FULL_WINDOW = SixteenBitWindow.of_bits(FULL_BITS)


@dataclass(frozen=True)
class BitDepth:
    window: SixteenBitWindow  # what the 16-bit files' values are read on
    reason: str  # one line: what was measured ("" where the goods hold no 16-bit file)
    warning: str = ""  # one line where the goods' values, read so, span few of the grey levels the model sees

    def to_dict(self) -> dict:
        window = self.window
        return {"bits": window.bits, "window": [window.low, window.high], "described": window.described(), "reason": self.reason, "warning": self.warning}


def sixteen_bit_of(config: dict) -> SixteenBitWindow:
    """The window a model reads 16-bit files on; files from before the rule have none and read 0..65535."""
    if WINDOW_KEY in config:
        low, high = config[WINDOW_KEY]
        return SixteenBitWindow(int(low), int(high))
    return SixteenBitWindow.of_bits(int(config.get("significant_bits", FULL_BITS)))


@dataclass(frozen=True)
class SixteenBit:
    """What a 16-bit file's values say of the bits they were made with."""

    largest: int
    low_zero_bits: int  # the low bits every value leaves at 0: 4 for a Mono12 camera's values moved to the top bits
    # Its 1st and 99th percentiles: its values less a few stray pixels (a height map's no-data zeros, a hot pixel).
    low: int = 0
    high: int = 0


def sixteen_bit_values(image: Image.Image) -> SixteenBit | None:
    """``SixteenBit`` of an opened image; None for one that is not 16-bit grey."""
    if not image.mode.startswith("I;16"):
        return None
    values = np.asarray(image)
    every = int(np.bitwise_or.reduce(values, axis=None))
    low, high = np.percentile(values[::4, ::4], [1, 99])  # a sixteenth of the pixels: enough for them, quick on any file
    return SixteenBit(int(values.max()), min((every & -every).bit_length() - 1, FULL_BITS) if every else FULL_BITS, int(low), int(np.ceil(high)))


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
        return BitDepth(FULL_WINDOW, "")
    largest, shift = max(good.largest for good in goods), min(good.low_zero_bits for good in goods)
    low, high = min(good.low for good in goods), max(good.high for good in goods)  # their values, less stray pixels
    if shift >= 2:
        window = FULL_WINDOW
        reason = f"the {len(goods)} 16-bit good(s) hold a {FULL_BITS - shift}-bit camera's values in their top bits: read on their 16 bits"
    else:
        window = SixteenBitWindow.of_bits(fewest_bits(largest))
        reason = (
            f"the {len(goods)} 16-bit good(s) use their 16 bits (largest value {largest})"
            if window == FULL_WINDOW
            else f"the {len(goods)} 16-bit good(s) hold their values in the low {window.bits} bits (largest value {largest} of 65535): "
            f"every 16-bit image is read on 0-{window.high}"
        )
    if window.grey_levels(low, high) >= FEW_GREY_LEVELS:
        return BitDepth(window, reason)
    if low > high - low:  # on an offset above their own spread: a window of their own
        margin = max(1, int(OFFSET_MARGIN * (high - low)))
        window = SixteenBitWindow(max(0, low - margin), min(2**FULL_BITS - 1, high + margin))
        reason = (
            f"the {len(goods)} 16-bit good(s) hold values between {low} and {high} only (1st to 99th percentile), on an offset: "
            f"every 16-bit image is read on {window.low}-{window.high} ({window.grey_levels(low, high)} grey levels for the goods' range)"
        )
        return BitDepth(window, reason)
    return BitDepth(window, reason, _narrow(low, high, window))


def _narrow(smallest: int, largest: int, window: SixteenBitWindow) -> str:
    """A warning where the goods' values, read on ``window``, span fewer than ``FEW_GREY_LEVELS`` of
    the model's 256 grey levels and lie on no offset a window could take away: a dark camera's
    values in the top bits (the files say nothing of the line's range, so stretching them is the user's)."""
    return (
        f"the 16-bit goods' values lie between {smallest} and {largest} only (1st to 99th percentile): read on {window.low}-{window.high} they span "
        f"{window.grey_levels(smallest, largest)} of the 256 grey levels the model sees, and a faint defect's shade is lost; "
        "save the images with their values stretched over the 16 bits, or as 8-bit images stretched over the line's range, then train again"
    )


def saturated(paths: list[Path], sixteen_bit: SixteenBitWindow) -> list[Path]:
    """The 16-bit files among ``paths`` with values beyond ``sixteen_bit`` (none where a model reads
    16-bit files on 0..65535): their brightest or darkest pixels saturate."""
    if sixteen_bit == FULL_WINDOW:
        return []
    return [path for path in paths if (found := sixteen_bit_file(path)) is not None and sixteen_bit.saturates(found)]
