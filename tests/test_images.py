from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalycli.data.images import ImageError, list_images, list_source, load_image, original_size, read_image_array, resized_array
from anomalycli.errors import UserError


def _png(path, size=32, mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_any_mode_loads_as_rgb(tmp_path, mode):
    path = tmp_path / f"x.{'tif' if mode in ('CMYK',) else 'png'}"
    if mode == "I;16":
        Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, (8, 8)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (8, 8)
    if mode == "I;16":
        assert np.asarray(image).min() == 255, "16-bit white must stay white, not clip or wrap"


@pytest.mark.parametrize("top", [1.0, 255.0, 65535.0])
def test_a_float_tiff_is_scaled_from_its_own_range_not_clipped(tmp_path, top):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp * np.float32(top), "F").save(tmp_path / "f.tiff")
    grey = np.asarray(load_image(tmp_path / "f.tiff"))[..., 0].astype(int)
    assert abs(grey - np.round(ramp * 255)).max() <= 1  # 0..1 is not a black image, 0..65535 not a white one


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_original_size_is_the_decoded_images_with_its_exif_rotation(tmp_path, suffix):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.save(tmp_path / f"r.{suffix}", exif=exif)
    Image.new("RGB", (40, 20)).save(tmp_path / f"plain.{suffix}")
    assert original_size(tmp_path / f"r.{suffix}") == load_image(tmp_path / f"r.{suffix}").size == (20, 40)
    assert original_size(tmp_path / f"plain.{suffix}") == (40, 20)


def test_original_size_of_a_png_reads_its_header_not_its_pixels(tmp_path):
    # Decoding every pixel to look for an eXIf chunk behind them doubled predict's decoding.
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 200), dtype=np.uint8)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # its pixels cannot be decoded
    with pytest.raises(ImageError):
        load_image(tmp_path / "cut.png")
    assert original_size(tmp_path / "cut.png") == (200, 300)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_fast_read_matches_rgb_then_resize(tmp_path, mode):
    rng = np.random.default_rng(0)
    path = tmp_path / f"x.{'tif' if mode == 'CMYK' else 'png'}"
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, (96, 96), dtype=np.uint16)).save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).convert(mode).save(path)
    expected = np.asarray(load_image(path).resize((40, 40), Image.BILINEAR, reducing_gap=3.0))
    fast = read_image_array(path, 40)
    assert fast.shape == (40, 40, 3) and fast.dtype == np.uint8
    # Grey images are resized before they become RGB; rounding may differ by one level, nothing more.
    assert np.abs(fast.astype(int) - expected.astype(int)).max() <= 1


def test_fast_read_of_a_large_jpeg_decodes_at_reduced_scale_and_stays_faithful(tmp_path):
    yy, xx = np.mgrid[0:1024, 0:768]
    smooth = np.stack([xx / 3, yy / 4, (xx + yy) / 7], axis=-1).astype(np.uint8)
    image = Image.fromarray(smooth)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees: orientation survives the reduced-scale decode
    image.save(tmp_path / "big.jpg", quality=95, exif=exif)
    with Image.open(tmp_path / "big.jpg") as opened:
        assert opened.draft(None, (64, 64)) is not None, "Pillow no longer decodes this JPEG at reduced scale"
    full = resized_array(load_image(tmp_path / "big.jpg"), 64).astype(float)
    fast = read_image_array(tmp_path / "big.jpg", 64).astype(float)
    assert fast.shape == full.shape == (64, 64, 3)
    assert np.abs(fast - full).mean() < 2.0


def test_broken_files_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    good = _png(tmp_path / "ok.png", size=64)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    for name, words in [("empty.png", "empty file"), ("text.png", "not an image"), ("cut.png", "truncated")]:
        with pytest.raises(ImageError, match=words) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)


def test_a_colour_float_tiff_pillow_cannot_decode_is_named_with_what_to_save_instead(tmp_path):
    cv2 = pytest.importorskip("cv2")  # Pillow writes no colour float TIFF, nor reads one
    cv2.imwrite(str(tmp_path / "rgb.tiff"), np.random.default_rng(0).random((16, 16, 3)).astype(np.float32))
    with pytest.raises(ImageError, match=r"rgb.tiff: a TIFF Pillow cannot decode \(a colour float one\?\); save it as 8- or 16-bit colour"):
        load_image(tmp_path / "rgb.tiff")


def test_list_images_skips_other_files_and_survives_symlink_loops(tmp_path):
    _png(tmp_path / "a/x.png")
    (tmp_path / "a/.DS_Store").write_bytes(b"\0")
    (tmp_path / "a/notes.txt").write_text("n")
    (tmp_path / "a/loop").symlink_to(tmp_path / "a")
    images, skipped = list_images(tmp_path)
    assert [p.name for p in images] == ["x.png"]
    assert {p.name for p in skipped} == {"notes.txt", ".DS_Store"}


def test_a_path_list_keeps_its_order_and_repeats_and_skips_comments(tmp_path):
    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "tonight.txt"
    listed.write_text("# archive, line 3\n\nb.png\n  /abs/a.png  \nb.png\nsub/c.jpg\n")
    paths, skipped, base = list_source(listed)
    assert paths == [tmp_path / "lists/b.png", Path("/abs/a.png"), tmp_path / "lists/b.png", tmp_path / "lists/sub/c.jpg"]
    assert skipped == [] and base == tmp_path / "lists"
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="is not an image; give an image, a folder of images or a .txt list"):
        list_source(tmp_path / "model.safetensors")
    _png(tmp_path / "one.png")
    assert list_source(tmp_path / "one.png") == ([tmp_path / "one.png"], [], tmp_path)
    (tmp_path / "notepad.txt").write_bytes("\ufeffone.png\r\none.png\r\n".encode())  # Windows Notepad: a byte-order mark, CRLF
    assert list_source(tmp_path / "notepad.txt")[0] == [tmp_path / "one.png", tmp_path / "one.png"]


def test_a_mask_marks_as_a_black_and_white_one_whatever_its_values_and_mode(tmp_path):
    """0/255 (MVTec's), 0/1 (a bool array saved as it is), 16-bit 0/65535, red on black, a palette's
    index 1 and a 1-bit image: the same pixels marked, at any size the verbs read them."""
    from anomalycli.data.images import binary_mask
    from anomalycli.data.tensors import load_mask

    marked = np.zeros((16, 24), bool)
    marked[4:9, 10:20] = True
    red = np.zeros((16, 24, 3), np.uint8)
    red[marked] = (255, 0, 0)
    palette = Image.fromarray(marked.astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0])
    masks = {
        "255": Image.fromarray(marked.astype(np.uint8) * 255, "L"),
        "01": Image.fromarray(marked.astype(np.uint8), "L"),
        "16bit": Image.fromarray(marked.astype(np.uint16) * 65535),
        "red": Image.fromarray(red, "RGB"),
        "palette": palette,
        "1bit": Image.fromarray(marked.astype(np.uint8) * 255, "L").convert("1"),
    }
    for name, mask in masks.items():
        assert (np.asarray(binary_mask(mask)) == marked * 255).all(), name
        mask.save(tmp_path / f"{name}.png")
        assert (load_mask(tmp_path / f"{name}.png", 32).numpy() == load_mask(tmp_path / "255.png", 32).numpy()).all(), name
    assert not np.asarray(binary_mask(Image.new("L", (8, 8)))).any(), "an empty mask marks nothing"
