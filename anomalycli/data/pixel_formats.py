"""A camera's frame buffer (GenICam pixel formats) as the image ``predict`` would read from a PNG.

A frame becomes a Pillow image in the mode its PNG would open in: Mono8 'L'; Mono10/12/14/16
'I;16', the values moved to the top bits as a 16-bit PNG holds them (a 12-bit 4095 is 65520);
RGB8, BGR8, RGBa8, BGRa8 and the demosaiced Bayer formats 'RGB' (or their 16-bit values scaled
to 8). From there ``images.resized_array`` frames it exactly as a decoded file, so a frame and the
same frame saved as PNG give the model the same pixels (tests/test_pixel_formats.py).

Bayer demosaicing is OpenCV's (``opencv-python-headless``, installed with the camera extra). Packed
formats (Mono12p, Mono10Packed...) are refused in one line: the camera can send them unpacked.
No PyTorch here: the station judges frames without it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from anomalycli.data.bit_depth import FULL_BITS, FULL_WINDOW, OWN_SCALES, ValueWindow, Windows
from anomalycli.errors import UserError

MONO_BITS = {"Mono8": 8, "Mono10": 10, "Mono12": 12, "Mono14": 14, "Mono16": 16}
# colour order of the channels, and whether a fourth (alpha or padding) follows
COLOUR = {"RGB8": ("RGB", 3), "BGR8": ("BGR", 3), "RGBa8": ("RGB", 4), "BGRa8": ("BGR", 4)}
# The Bayer pattern's first 2 x 2 (GenICam names it by its top-left pixel pair) -> OpenCV's code of that name.
BAYER_PATTERNS = ("RG", "GR", "GB", "BG")
BAYER_BITS = (8, 10, 12, 16)
SUPPORTED = (*MONO_BITS, *COLOUR, *(f"Bayer{p}{b}" for p in BAYER_PATTERNS for b in BAYER_BITS))
CAMERA_INSTALL_HINT = 'pip install "anomalycli[camera]"'


def frame_image(data: np.ndarray, width: int, height: int, pixel_format: str) -> Image.Image:
    """The frame's buffer (``data``: its values, 1-D or already 2-D, uint8 or uint16) as a Pillow
    image, the mode its PNG would open in. ``UserError`` for a format not in ``SUPPORTED``, or a
    buffer too short for its size (an incomplete frame)."""
    if pixel_format not in SUPPORTED:
        raise UserError(f"pixel format {pixel_format} is not supported; set PixelFormat to one of {', '.join(SUPPORTED)} in [source.camera.features]")
    channels = COLOUR[pixel_format][1] if pixel_format in COLOUR else 1
    values = np.asarray(data).reshape(-1)
    if values.size < width * height * channels:
        raise UserError(f"incomplete frame: {values.size} values for {width} x {height} {pixel_format}")
    values = values[: width * height * channels]
    if pixel_format in MONO_BITS:
        bits = MONO_BITS[pixel_format]
        plane = values.reshape(height, width)
        if bits == 8:
            return Image.fromarray(plane.astype(np.uint8, copy=False), "L")
        return Image.fromarray((plane.astype(np.uint16) << (16 - bits)).astype(np.uint16))  # mode I;16
    if pixel_format in COLOUR:
        order, _ = COLOUR[pixel_format]
        pixels = values.reshape(height, width, channels)[..., :3]
        if order == "BGR":
            pixels = pixels[..., ::-1]
        return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")
    return Image.fromarray(_demosaic(values.reshape(height, width), pixel_format), "RGB")


def frame_windows(pixel_format: str, model: Windows) -> Windows:
    """The windows to read a frame's 16-bit image on (its n-bit values moved to the top bits) so
    that the model sees it as it saw its goods: a model whose 16-bit window lies within n bits
    (``bit_depth.py``: goods saved with their values in the low bits) read a value v on that window,
    and so must a frame's v << (16 - n) be read, on the window moved up as far. A window beyond n
    bits is on the 16-bit scale, as the frame's values are: the frame is read on it (on 0..65535
    from 0). Any other format (an 8-bit one is no 16-bit image): its own range."""
    n, window = MONO_BITS.get(pixel_format), model.sixteen_bit
    if n is None or n <= 8:
        return OWN_SCALES
    shift = FULL_BITS - n
    if window.high < 2**n:
        return Windows(ValueWindow(window.low << shift, ((window.high + 1) << shift) - 1))
    return Windows(window if window.low else FULL_WINDOW)


def _demosaic(plane: np.ndarray, pixel_format: str) -> np.ndarray:
    """A Bayer plane as 8-bit RGB (height x width x 3): OpenCV's bilinear demosaicing, then (above 8
    bits) the values scaled to 8 as a 16-bit image's are (``images.to_grey_or_rgb``)."""
    try:
        import cv2
    except ImportError:
        raise UserError(f"{pixel_format} frames are demosaiced by OpenCV, which is not installed; run: {CAMERA_INSTALL_HINT}") from None
    pattern, bits = pixel_format[5:7], int(pixel_format[7:])
    code = getattr(cv2, f"COLOR_Bayer{pattern[0]}{pattern[1]}{_second_row(pattern)}2RGB")
    if bits == 8:
        return cv2.cvtColor(np.ascontiguousarray(plane, dtype=np.uint8), code)
    wide = cv2.cvtColor(np.ascontiguousarray(plane.astype(np.uint16) << (16 - bits), dtype=np.uint16), code)
    return np.clip(wide.astype(np.float64) / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _second_row(pattern: str) -> str:
    """The second row's pair of a Bayer 2 x 2 whose first row is ``pattern`` (RG -> GB)."""
    return {"RG": "GB", "GR": "BG", "GB": "RG", "BG": "GR"}[pattern]
