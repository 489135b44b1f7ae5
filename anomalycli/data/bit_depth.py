"""How an image file's values of more than 8 bits are read to 8: decided once, from the goods, at the fit.

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
read its goods' files (``pixel_formats.frame_windows``).

Values on an offset (a height map's 30,000 +- 2,000; a sensor's dark level) fill no whole number of
bits: read from 0 they keep a few grey levels of 256 (the screws held out, AUROC 0.867, on the window 0.953, against
0.952 for their 8-bit copies). Where the goods' values lie above their own spread, the window is
the goods' range and half its width again on each side (``OFFSET_MARGIN``), and the model records
it. A window on an offset is the ``ValueWindow`` every reader takes, as whole bits are.

Float and 32-bit images (a height map in mm) were read each on its own scale (``images.own_scale_top``):
8.0 +- 0.5 mm kept 2 or 3 grey levels, and two images of one line could be scaled apart. Their goods
give one window the same way (``Windows.floats``); a missing value (NaN) reads black. The screws saved
as 8.0 +- 0.5 mm, held out: AUROC 0.937 on the window, 0.500 each on its own scale (0.952 as 8-bit).

Colour files of 16 bits a channel (48-bit PNGs, 16-bit RGB TIFFs) Pillow decodes to each channel's
top 8 bits, as they are read on 16 bits: right where the values fill them, nearly black where a
camera's 10-14 bits sit in the low ones (0-15 of 255 for 12 bits). No window can give back bits the
decoder dropped, so the goods' grey levels are measured and a narrow span is a warning (``colour_warning``).

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
FLOAT_WINDOW_KEY = "float_window"  # a model's window for float and 32-bit images


@dataclass(frozen=True)
class ValueWindow:
    """Values read onto the grey levels 0..255: ``low`` to black, ``high`` to white, those beyond saturate."""

    low: float
    high: float

    @classmethod
    def of_bits(cls, bits: int) -> ValueWindow:
        return cls(0, 2**bits - 1)

    @property
    def bits(self) -> int | None:
        """The bits it reads from 0 on; None for a window on an offset (or of floats)."""
        if not isinstance(self.high, int) or self.low != 0:
            return None
        span = self.high + 1
        return span.bit_length() - 1 if span & (span - 1) == 0 else None

    def to_grey(self, values: np.ndarray) -> np.ndarray:
        """``values`` as uint8 grey levels; a missing value (NaN, a height map's no data) black."""
        scaled = (np.asarray(values, dtype=np.float64) - self.low) / (self.high - self.low) * 255.0 + 0.5
        return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)

    def grey_levels(self, smallest: float, largest: float) -> int:
        """How many of the 256 grey levels values from ``smallest`` to ``largest`` keep."""
        return int((largest - smallest) / (self.high - self.low) * 255) + 1

    def saturates(self, found: Spread) -> bool:
        """Whether a file's values (``found``, less a few stray pixels) go beyond the window: its brightest or darkest parts saturate."""
        return found.high > self.high or found.low < self.low

    def described(self) -> str:
        """'12 bits', or 'window 28000-36000' for one on an offset."""
        return f"{self.bits} bits" if self.bits is not None else f"window {self.low:g}-{self.high:g}"

    def to_config(self) -> dict:
        return {"significant_bits": self.bits} if self.bits is not None else {WINDOW_KEY: [self.low, self.high]}


FULL_WINDOW = ValueWindow.of_bits(FULL_BITS)


@dataclass(frozen=True)
class Windows:
    """How a model reads values of more than 8 bits: 16-bit files on ``sixteen_bit``; float and
    32-bit ones on ``floats``, or each on its own scale (``images.own_scale_top``) where it has none."""

    sixteen_bit: ValueWindow = FULL_WINDOW
    floats: ValueWindow | None = None

    def described(self) -> str:
        """'12 bits', 'window 28000-36000', 'float window 6.9-9.3', or both joined by 'and'."""
        parts = [self.sixteen_bit.described()] if self.sixteen_bit != FULL_WINDOW or self.floats is None else []
        return " and ".join(parts + ([f"float {self.floats.described()}"] if self.floats else []))

    def saturates(self, found: SixteenBit | Spread | SixteenBitColour) -> bool:
        """Whether a 16-bit file's values (``found``: ``SixteenBit``) or a float one's (``Spread``) go
        beyond their window; never where it is read on 0..65535, or on its own scale, nor a colour one's."""
        if isinstance(found, SixteenBit):
            return self.sixteen_bit != FULL_WINDOW and self.sixteen_bit.saturates(found.spread)
        return isinstance(found, Spread) and self.floats is not None and self.floats.saturates(found)

    def to_config(self) -> dict:
        return {**self.sixteen_bit.to_config(), **({FLOAT_WINDOW_KEY: [self.floats.low, self.floats.high]} if self.floats else {})}


OWN_SCALES = Windows()  # a model from before windows, or fitted on 8-bit goods


@dataclass(frozen=True)
class BitDepth:
    windows: Windows  # what 16-bit and float files' values are read on
    reason: str  # one line: what was measured ("" where the goods hold no 16-bit or float file)
    warning: str = ""  # one line where the goods' values, read so, span few of the grey levels the model sees

    def to_dict(self) -> dict:
        window, floats = self.windows.sixteen_bit, self.windows.floats
        return {
            "bits": window.bits,
            "window": [window.low, window.high],
            "described": self.windows.described(),
            "float_window": [floats.low, floats.high] if floats else None,
            "reason": self.reason,
            "warning": self.warning,
        }


def windows_of(config: dict) -> Windows:
    """The windows a model reads 16-bit and float files on; files from before them have none, and
    read 16-bit files on 0..65535, each float one on its own scale."""
    if WINDOW_KEY in config:
        low, high = config[WINDOW_KEY]
        sixteen_bit = ValueWindow(int(low), int(high))
    else:
        sixteen_bit = ValueWindow.of_bits(int(config.get("significant_bits", FULL_BITS)))
    floats = ValueWindow(*map(float, config[FLOAT_WINDOW_KEY])) if FLOAT_WINDOW_KEY in config else None
    return Windows(sixteen_bit, floats)


@dataclass(frozen=True)
class Spread:
    """A file's values less a few stray pixels: their 1st and 99th percentiles."""

    low: float
    high: float


def spread_of(values: np.ndarray) -> Spread:
    """``Spread`` of an image's values (NaN, no data, left out), on a sixteenth of its pixels: enough, and quick on any file."""
    sample = np.asarray(values, dtype=np.float64)[::4, ::4]
    if np.isnan(sample).all():
        return Spread(0.0, 0.0)
    low, high = np.nanpercentile(sample, [1, 99])
    return Spread(float(low), float(high))


@dataclass(frozen=True)
class SixteenBit:
    """What a 16-bit file's values say of the bits they were made with."""

    largest: int
    low_zero_bits: int  # the low bits every value leaves at 0: 4 for a Mono12 camera's values moved to the top bits
    # Its 1st and 99th percentiles: its values less a few stray pixels (a height map's no-data zeros, a hot pixel).
    low: int = 0
    high: int = 0

    @property
    def spread(self) -> Spread:
        return Spread(self.low, self.high)


def sixteen_bit_values(image: Image.Image) -> SixteenBit | None:
    """``SixteenBit`` of an opened image; None for one that is not 16-bit grey."""
    if not image.mode.startswith("I;16"):
        return None
    values = np.asarray(image)
    every = int(np.bitwise_or.reduce(values, axis=None))
    spread = spread_of(values)
    return SixteenBit(int(values.max()), min((every & -every).bit_length() - 1, FULL_BITS) if every else FULL_BITS, int(spread.low), int(np.ceil(spread.high)))


@dataclass(frozen=True)
class SixteenBitColour:
    """A colour file of 16 bits a channel as Pillow decodes it (each channel's top 8 bits): its grey
    levels less a few stray pixels (1st and 99th percentiles, 0..255)."""

    low: int
    high: int


def sixteen_bit_colour(image: Image.Image) -> SixteenBitColour | None:
    """``SixteenBitColour`` of an opened image (not yet loaded); None for one that is not 16-bit colour.
    Pillow has no 16-bit colour mode: its decoder's raw mode ("RGB;16B" in a PNG, "RGB;16N" in a
    TIFF) is what says the file's depth."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return None
    args = image.tile[0].args
    raw_mode = args if isinstance(args, str) else args[0] if args and isinstance(args[0], str) else ""
    if ";16" not in raw_mode:
        return None
    spread = spread_of(np.asarray(image.convert("L")))
    return SixteenBitColour(int(spread.low), int(np.ceil(spread.high)))


def fewest_bits(largest: int) -> int:
    """The fewest of ``CANDIDATE_BITS`` that hold ``largest``, else ``FULL_BITS``."""
    return next((bits for bits in CANDIDATE_BITS if largest < 2**bits), FULL_BITS)


def float_spread(image: Image.Image) -> Spread | None:
    """``Spread`` of an opened float or 32-bit image; None for any other."""
    return spread_of(np.asarray(image)) if image.mode in ("I", "F") else None


def measured(image: Image.Image) -> SixteenBit | Spread | SixteenBitColour | None:
    """What an opened (not yet loaded) image says of its values: ``SixteenBit`` for a 16-bit grey
    one, ``Spread`` for a float or 32-bit one, ``SixteenBitColour`` for a 16-bit colour one; None
    for any other."""
    return sixteen_bit_colour(image) or sixteen_bit_values(image) or float_spread(image)


def measured_file(path: Path) -> SixteenBit | Spread | SixteenBitColour | None:
    """``measured`` of the file at ``path``; None for an unreadable one."""
    try:
        with Image.open(path) as image:
            return measured(image)
    except (OSError, ValueError, SyntaxError):
        return None


def bit_depth(paths: list[Path]) -> BitDepth:
    """The windows the goods at ``paths`` are read on (every good's file is measured: one brighter
    than a sample's would saturate)."""
    return bit_depth_of([values for values in map(measured_file, paths) if values is not None])


def bit_depth_of(found: list[SixteenBit | Spread | SixteenBitColour]) -> BitDepth:
    """``bit_depth`` from what the goods' files say (``measured``): their 16-bit grey, float and 16-bit colour ones.

    Values a camera moved to the top bits (a Mono12 frame as a 16-bit PNG, as the station's archive
    keeps it) leave their low bits at 0 in every pixel: they are on the 16-bit scale already,
    however dark, and are read on 16 bits as the camera's frames are. Values in the low bits fill
    them with noise. Float and 32-bit goods (a height map in mm) are read on their range and half
    its width again on each side, as 16-bit ones on an offset are: one scale for the whole line,
    not each file's own."""
    goods = [v for v in found if isinstance(v, SixteenBit)]
    float_goods = [v for v in found if isinstance(v, Spread)]
    colour_goods = [v for v in found if isinstance(v, SixteenBitColour)]
    window, reason, warning = _sixteen_bit_window(goods) if goods else (FULL_WINDOW, "", "")
    floats = None
    if float_goods:
        low, high = min(good.low for good in float_goods), max(good.high for good in float_goods)
        margin = OFFSET_MARGIN * (high - low) or max(abs(low), 1.0) * 1e-3  # goods all one value: a narrow window round it
        floats = ValueWindow(low - margin, high + margin)
        said = (
            f"the {len(float_goods)} float or 32-bit good(s) hold values between {low:g} and {high:g} (1st to 99th percentile): "
            f"every such image is read on {floats.low:g}-{floats.high:g}"
        )
        reason = f"{reason}; {said}" if reason else said
    if colour_goods:
        said = f"the {len(colour_goods)} colour good(s) of 16 bits a channel are read on the top 8 bits of each"
        reason = f"{reason}; {said}" if reason else said
        warning = "; ".join(filter(None, [warning, colour_warning(colour_goods)]))
    return BitDepth(Windows(window, floats), reason, warning)


def colour_warning(goods: list[SixteenBitColour]) -> str:
    """A warning where 16-bit colour goods, as decoded, span fewer than ``FEW_GREY_LEVELS`` grey levels ("" otherwise)."""
    low, high = min(good.low for good in goods), max(good.high for good in goods)
    if high - low + 1 >= FEW_GREY_LEVELS:
        return ""
    return (
        f"the 16-bit colour goods read between {low} and {high} of 255 only (the top 8 bits of each channel, all the decoder gives): "
        f"{high - low + 1} grey levels, and a faint defect's shade is lost; a camera's 10-14-bit values saved in the low bits read so. "
        "Save the images as 16-bit grey, or as 8-bit colour stretched over the line's range, then train again"
    )


def _sixteen_bit_window(goods: list[SixteenBit]) -> tuple[ValueWindow, str, str]:
    """The 16-bit goods' window, what was measured and any warning (``bit_depth_of``)."""
    largest, shift = max(good.largest for good in goods), min(good.low_zero_bits for good in goods)
    low, high = min(good.low for good in goods), max(good.high for good in goods)  # their values, less stray pixels
    if shift >= 2:
        window = FULL_WINDOW
        reason = f"the {len(goods)} 16-bit good(s) hold a {FULL_BITS - shift}-bit camera's values in their top bits: read on their 16 bits"
    else:
        window = ValueWindow.of_bits(fewest_bits(largest))
        reason = (
            f"the {len(goods)} 16-bit good(s) use their 16 bits (largest value {largest})"
            if window == FULL_WINDOW
            else f"the {len(goods)} 16-bit good(s) hold their values in the low {window.bits} bits (largest value {largest} of 65535): "
            f"every 16-bit image is read on 0-{window.high}"
        )
    if window.grey_levels(low, high) >= FEW_GREY_LEVELS:
        return window, reason, ""
    if low > high - low:  # on an offset above their own spread: a window of their own
        margin = max(1, int(OFFSET_MARGIN * (high - low)))
        window = ValueWindow(max(0, low - margin), min(2**FULL_BITS - 1, high + margin))
        reason = (
            f"the {len(goods)} 16-bit good(s) hold values between {low} and {high} only (1st to 99th percentile), on an offset: "
            f"every 16-bit image is read on {window.low}-{window.high} ({window.grey_levels(low, high)} grey levels for the goods' range)"
        )
        return window, reason, ""
    return window, reason, _narrow(low, high, window)


def _narrow(smallest: int, largest: int, window: ValueWindow) -> str:
    """A warning where the goods' values, read on ``window``, span fewer than ``FEW_GREY_LEVELS`` of
    the model's 256 grey levels and lie on no offset a window could take away: a dark camera's
    values in the top bits (the files say nothing of the line's range, so stretching them is the user's)."""
    return (
        f"the 16-bit goods' values lie between {smallest} and {largest} only (1st to 99th percentile): read on {window.low}-{window.high} they span "
        f"{window.grey_levels(smallest, largest)} of the 256 grey levels the model sees, and a faint defect's shade is lost; "
        "save the images with their values stretched over the 16 bits, or as 8-bit images stretched over the line's range, then train again"
    )


def saturated(paths: list[Path], windows: Windows) -> list[Path]:
    """The 16-bit and float files among ``paths`` whose values go beyond ``windows``: their
    brightest or darkest parts saturate."""
    return [path for path in paths if (found := measured_file(path)) is not None and windows.saturates(found)]
