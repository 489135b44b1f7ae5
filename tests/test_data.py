from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalycli.data import (
    ImageError, defect_type_from_name, discover, image_to_tensor, list_images, load_image, read_image_tensor, read_manifest,
    write_manifest,
)
from anomalycli.errors import UserError
from anomalycli.synthetic import make_part


def _png(path, size=32, mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value).save(path)
    return path


def test_class_folders_give_labels_and_defect_types(parts):
    dataset = discover(parts)
    assert dataset.layout.startswith("class folders")
    assert sum(s.label == 0 for s in dataset.samples) == 24
    assert {s.defect_type for s in dataset.samples if s.label} == {"scratch", "spot"}
    assert all(s.mask is not None for s in dataset.samples if s.label)
    assert not any("ground_truth" in str(s.path) for s in dataset.samples), "masks must never be taken for images"


def test_split_folders_and_subfolder_defect_types(tmp_path):
    _png(tmp_path / "train/good/a.png")
    _png(tmp_path / "train/bad/crack/b.png")
    _png(tmp_path / "val/good/c.png")
    _png(tmp_path / "test/bad/007.png")
    dataset = discover(tmp_path, normal_class="good")
    assert dataset.layout.startswith("split folders")
    by_name = {s.path.name: s for s in dataset.samples}
    assert by_name["b.png"].defect_type == "crack" and by_name["b.png"].split == "train"
    assert by_name["c.png"].split == "val" and by_name["c.png"].label == 0
    assert by_name["007.png"].defect_type == "bad" and by_name["007.png"].split == "test"


def test_mvtec_layout_matches_masks_without_split_folder(tmp_path):
    _png(tmp_path / "train/good/000.png")
    _png(tmp_path / "test/good/000.png")
    _png(tmp_path / "test/scratch_head/000.png")
    _png(tmp_path / "ground_truth/scratch_head/000_mask.png")
    dataset = discover(tmp_path)
    assert dataset.layout.startswith("MVTec AD")
    defect = [s for s in dataset.samples if s.label][0]
    assert defect.defect_type == "scratch_head"
    assert defect.mask == tmp_path / "ground_truth/scratch_head/000_mask.png"
    assert len(dataset.samples) == 3


def test_defect_type_from_file_name():
    assert defect_type_from_name("scratch_head001") == "scratch_head"
    assert defect_type_from_name("thread-top 12") == "thread-top"
    assert defect_type_from_name("007") is None


def test_labels_csv_for_a_flat_folder(tmp_path):
    _png(tmp_path / "img1.png")
    _png(tmp_path / "img2.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label,defect_type\nimg1.png,good,\nimg2.png,nok,dent\n")
    dataset = discover(tmp_path, labels=labels)
    assert [(s.label, s.defect_type) for s in dataset.samples] == [(0, None), (1, "dent")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,class\nimg1.png,good\n", "needs the columns filename,label"),
        ("filename,label\nimg1.png,good\nmissing.png,nok\n", "missing"),
        ("filename,label\nimg1.png,good\nimg1.png,nok\n", "listed twice"),
        ("filename,label\nimg1.png,ok\n", "no image labelled 'good'"),
        ("filename,label\nimg1.png,\n", "empty label"),
    ],
)
def test_bad_labels_csv_is_a_user_error(tmp_path, content, message):
    _png(tmp_path / "img1.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    with pytest.raises(UserError, match=message):
        discover(tmp_path, labels=labels)


def test_manifest_round_trip_and_outside_paths(parts, tmp_path):
    dataset = discover(parts)
    samples = [s.__class__(**{**s.__dict__, "split": "train"}) for s in dataset.samples]
    out = tmp_path / "m.csv"
    write_manifest(out, parts, samples, "split")
    again = read_manifest(parts, out, "good")
    assert [(s.path, s.label, s.defect_type, s.split) for s in again.samples] == [(s.path, s.label, s.defect_type, s.split) for s in samples]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,defect_type,split\n../../etc/passwd,good,,train\n")
    with pytest.raises(UserError, match="outside"):
        read_manifest(parts, bad, "good")


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


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_fast_read_matches_rgb_then_resize(tmp_path, mode):
    rng = np.random.default_rng(0)
    path = tmp_path / f"x.{'tif' if mode == 'CMYK' else 'png'}"
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, (96, 96), dtype=np.uint16)).save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).convert(mode).save(path)
    expected = np.asarray(load_image(path).resize((40, 40), Image.BILINEAR, reducing_gap=3.0))
    fast = read_image_tensor(path, 40).permute(1, 2, 0).numpy()
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
    full = image_to_tensor(load_image(tmp_path / "big.jpg"), 64).float()
    fast = read_image_tensor(tmp_path / "big.jpg", 64).float()
    assert fast.shape == full.shape == (3, 64, 64)
    assert (fast - full).abs().mean() < 2.0


def test_broken_files_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    good = _png(tmp_path / "ok.png", size=64)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    for name, words in [("empty.png", "empty file"), ("text.png", "not an image"), ("cut.png", "truncated")]:
        with pytest.raises(ImageError, match=words) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)


def test_list_images_skips_other_files_and_survives_symlink_loops(tmp_path):
    _png(tmp_path / "a/x.png")
    (tmp_path / "a/.DS_Store").write_bytes(b"\0")
    (tmp_path / "a/notes.txt").write_text("n")
    (tmp_path / "a/loop").symlink_to(tmp_path / "a")
    images, skipped = list_images(tmp_path)
    assert [p.name for p in images] == ["x.png"]
    assert {p.name for p in skipped} == {"notes.txt", ".DS_Store"}


def test_missing_and_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(UserError, match="no images"):
        discover(tmp_path)


def test_synthetic_defect_is_drawn_where_its_mask_is():
    image, mask = make_part(64, np.random.default_rng(0), "spot")
    pixels, inside = np.asarray(image, dtype=float), np.asarray(mask) > 0
    assert inside.any() and pixels[inside].mean() < 100


def test_a_path_list_keeps_its_order_and_repeats_and_skips_comments(tmp_path):
    from anomalycli.data import list_source

    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "tonight.txt"
    listed.write_text("# archive, line 3\n\nb.png\n  /abs/a.png  \nb.png\nsub/c.jpg\n")
    paths, skipped, base = list_source(listed)
    assert paths == [tmp_path / "lists/b.png", Path("/abs/a.png"), tmp_path / "lists/b.png", tmp_path / "lists/sub/c.jpg"]
    assert skipped == [] and base == tmp_path / "lists"
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="give a folder of images or a .txt list"):
        list_source(tmp_path / "model.safetensors")
