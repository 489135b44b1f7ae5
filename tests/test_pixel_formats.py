"""A camera frame in each pixel format gives the model what the same image saved as PNG gives predict."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomalycli.data.bit_depth import OWN_SCALES, ValueWindow, Windows
from anomalycli.data.images import read_image_array, resized_array
from anomalycli.data.pixel_formats import BAYER_PATTERNS, SUPPORTED, frame_image, frame_windows
from anomalycli.errors import UserError

WIDTH, HEIGHT, SIZE = 96, 80, 64


def scene(seed: int = 0) -> np.ndarray:
    """A smooth colour scene with some texture, uint8 H x W x 3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([120 + 80 * np.sin(x / 9.0), 100 + 60 * np.cos(y / 7.0), 90 + 40 * np.sin((x + y) / 11.0)], -1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def mosaic(rgb: np.ndarray, pattern: str, bits: int) -> np.ndarray:
    """The Bayer plane a camera with ``pattern`` (its first row's pair) sends of ``rgb``, in ``bits``."""
    channel = {"R": 0, "G": 1, "B": 2}
    full = pattern + {"RG": "GB", "GR": "BG", "GB": "RG", "BG": "GR"}[pattern]
    plane = np.zeros(rgb.shape[:2], np.uint16)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        plane[dy::2, dx::2] = rgb[dy::2, dx::2, channel[full[k]]].astype(np.uint16) << (bits - 8)
    return plane if bits > 8 else plane.astype(np.uint8)


def buffer_and_reference(pixel_format: str, tmp_path) -> tuple[np.ndarray, object]:
    """The frame's flat buffer, and the PNG (a path) a camera program would have saved of it."""
    rgb, png = scene(), tmp_path / f"{pixel_format}.png"
    grey = rgb.mean(-1).astype(np.uint8)
    if pixel_format == "Mono8":
        Image.fromarray(grey, "L").save(png)
        return grey.ravel(), png
    if pixel_format.startswith("Mono"):
        bits = int(pixel_format[4:])
        values = (grey.astype(np.uint16) << (bits - 8)) | (np.arange(grey.size).reshape(grey.shape) % (1 << (bits - 8))).astype(np.uint16)
        Image.fromarray((values << (16 - bits)).astype(np.uint16)).save(png)  # 16-bit PNG, the values at the top bits
        return values.ravel(), png
    if pixel_format.startswith("Bayer"):
        return mosaic(rgb, pixel_format[5:7], int(pixel_format[7:])).ravel(), None
    order = rgb if pixel_format.startswith("RGB") else rgb[..., ::-1]
    if pixel_format.endswith("a8"):
        order = np.concatenate([order, np.full((HEIGHT, WIDTH, 1), 255, np.uint8)], -1)
    Image.fromarray(rgb, "RGB").save(png)
    return order.ravel(), png


@pytest.mark.parametrize(
    "window, pixel_format",
    [((0, 1023), "Mono12"), ((0, 4095), "Mono12"), ((0, 255), "Mono12"), ((0, 4095), "Mono14"), ((0, 1023), "Mono10"), ((200, 900), "Mono12")],
)
def test_a_frame_is_read_as_the_model_read_its_cameras_values_saved_in_the_low_bits(window, pixel_format, tmp_path):
    """A model fitted on a camera's n-bit values saved in the low bits of 16-bit files, read on
    ``window`` (data/bit_depth.py: fewer bits than n where the goods were dark, a window of their
    own where they lie on an offset), sees a frame of the same values as it saw the file."""
    n, window = int(pixel_format[4:]), ValueWindow(*window)
    windows = Windows(window)
    values = np.random.default_rng(0).integers(window.low, min(window.high + 1, 2**n), (HEIGHT, WIDTH))
    frame = frame_image(values.astype(np.uint16).ravel(), WIDTH, HEIGHT, pixel_format)
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "low.png")
    from_file = read_image_array(tmp_path / "low.png", SIZE, windows=windows)
    from_frame = resized_array(frame, SIZE, windows=frame_windows(pixel_format, windows))
    assert np.abs(from_frame.astype(int) - from_file).max() <= 1
    assert frame_windows("Mono8", windows) == frame_windows("RGB8", windows) == OWN_SCALES, "8-bit frames: their own range"


def test_a_frame_is_read_on_a_window_of_16_bit_values_as_it_is():
    """A window beyond the frame's bits was measured on the 16-bit scale (goods the archive kept,
    their values in the top bits): a frame's values are on it already."""
    assert frame_windows("Mono12", Windows(ValueWindow(30000, 40000))).sixteen_bit == ValueWindow(30000, 40000)
    assert frame_windows("Mono12", OWN_SCALES) == frame_windows("Mono12", Windows(ValueWindow.of_bits(14))) == OWN_SCALES


@pytest.mark.parametrize("pixel_format", [f for f in SUPPORTED if not f.startswith("Bayer")])
def test_a_frame_gives_the_model_the_pixels_of_its_png(pixel_format, tmp_path):
    data, png = buffer_and_reference(pixel_format, tmp_path)
    from_frame = resized_array(frame_image(data, WIDTH, HEIGHT, pixel_format), SIZE)
    from_png = read_image_array(png, SIZE)
    assert from_frame.shape == (SIZE, SIZE, 3)
    assert np.abs(from_frame.astype(float) - from_png.astype(float)).max() / 255 <= 1e-4


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("bits", [8, 12])
def test_a_bayer_frame_is_demosaiced_to_the_scene_and_reads_as_its_png(pattern, bits, tmp_path):
    rgb = scene()
    image = frame_image(mosaic(rgb, pattern, bits).ravel(), WIDTH, HEIGHT, f"Bayer{pattern}{bits}")
    assert image.mode == "RGB" and image.size == (WIDTH, HEIGHT)
    inner = (slice(4, -4), slice(4, -4))
    error = np.abs(np.asarray(image).astype(float)[inner] - rgb.astype(float)[inner])
    assert error.mean() < 6 and np.median(error) < 5  # the colours in their places: a wrong pattern swaps red and blue (error ~ 40)
    image.save(tmp_path / "saved.png")
    assert np.array_equal(resized_array(image, SIZE), read_image_array(tmp_path / "saved.png", SIZE))


def test_a_frame_scores_as_its_png_through_a_model(patchcore_model, tmp_path):
    from anomalycli.deploy.loading import load

    model = load(patchcore_model, "auto")
    data, png = buffer_and_reference("Mono12", tmp_path)
    from_frame = resized_array(frame_image(data, WIDTH, HEIGHT, "Mono12"), model.config["image_size"]).transpose(2, 0, 1)
    from_png = read_image_array(png, model.config["image_size"]).transpose(2, 0, 1)
    raw, _ = model.score(np.stack([from_frame, from_png]), with_maps=False)
    raw = np.asarray(raw, dtype=float)
    assert abs(raw[0] - raw[1]) <= 1e-4 * max(1.0, abs(raw[1]))


def test_an_unknown_format_or_an_incomplete_frame_is_one_line():
    with pytest.raises(UserError, match="pixel format Mono12p is not supported; set PixelFormat to one of"):
        frame_image(np.zeros(10, np.uint8), 4, 2, "Mono12p")
    with pytest.raises(UserError, match="incomplete frame: 7 values for 4 x 2 Mono8"):
        frame_image(np.zeros(7, np.uint8), 4, 2, "Mono8")
