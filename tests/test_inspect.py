import json
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from anomalycli.cli import render
from anomalycli.workflows.inspect import resize_note, size_summary


def test_size_summary_counts_images_not_sizes():
    summary = size_summary(Counter({(100, 100): 3, (200, 50): 1}))
    assert summary["n_distinct"] == 2 and summary["n_images"] == 4
    assert summary["width"] == {"min": 100, "median": 100, "max": 200}
    assert summary["aspect"] == {"min": 1.0, "max": 4.0} and summary["square_share"] == 0.75
    assert summary["most_common"][0] == {"size": "100x100", "images": 3} and summary["n_other_sizes"] == 0


def test_resize_note_only_when_images_are_not_square_or_vary_a_lot():
    assert resize_note(size_summary(Counter({(128, 128): 10}))) is None
    assert resize_note(size_summary(Counter({(100, 100): 1, (150, 150): 1}))) is None
    squashed = resize_note(size_summary(Counter({(100, 400): 1})))
    assert "squashed" in squashed and "0.25 to 0.25" in squashed and "--image-size" in squashed and "--framing letterbox" in squashed
    assert "from 50 to 400 px" in resize_note(size_summary(Counter({(50, 50): 1, (400, 400): 1})))


def _random_sizes(root, n=200, seed=0):
    rng = np.random.default_rng(seed)
    sizes = set()
    for i in range(n):
        w, h = (int(v) for v in rng.integers(40, 400, size=2))
        folder = root / ("good" if i % 5 else "bad")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (w, h), int(rng.integers(0, 255))).save(folder / f"{i:03d}.png")
        sizes.add(f"{w}x{h}")
    return sizes


def test_many_sizes_fit_on_a_screen_and_json_keeps_every_size(tmp_path, monkeypatch):
    sizes = _random_sizes(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(render.console, "width", 80)
    result = run_cli("inspect", "--json", "facts.json")
    lines = result.output.splitlines()
    section = lines[lines.index("image sizes") + 1 : next(i for i, line in enumerate(lines) if line.startswith("facts written"))]
    assert len(section) < 15, "\n".join(section)
    assert "200 images" in section[0] and any("squashed" in line for line in section)
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert set(facts["image_sizes"]) == sizes and sum(facts["image_sizes"].values()) == 200
    # The layout heading is a line of its own, whole, and nothing is wider than the terminal.
    assert "data: class folders (class/)" in lines
    assert all(len(line) <= 80 for line in lines)


def test_one_size_is_one_line(parts):
    result = run_cli("inspect", parts)
    lines = result.output.splitlines()
    assert lines[lines.index("image sizes") + 1] == "64x64, all 36 images"


def test_inspect_says_how_the_images_were_saved(parts, tmp_path):
    assert "modes: L (36); saved as: lossless (36); masks found: 12" in " ".join(run_cli("inspect", parts).output.split())
    for i, path in enumerate(sorted((parts / "good").glob("*.png"))[:5]):
        (tmp_path / "good").mkdir(exist_ok=True)
        Image.open(path).save(tmp_path / "good" / f"{i}.jpg", quality=75)
    shutil.copy(sorted((parts / "good").glob("*.png"))[5], tmp_path / "good")
    assert "saved as: JPEG q75 (5), lossless (1)" in " ".join(run_cli("inspect", tmp_path).output.split())


def test_inspect_warns_of_a_mask_of_another_shape_than_its_image_and_not_of_a_smaller_one(parts, tmp_path):
    shutil.copytree(parts, tmp_path / "parts")
    masks = sorted((tmp_path / "parts").rglob("*_mask.png"))
    Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 12)).save(masks[0])  # the same shape, smaller: resized onto the image, it still fits
    assert "warning" not in run_cli("inspect", tmp_path / "parts").output
    Image.new("L", (64, 32)).save(masks[1])
    said = " ".join(run_cli("inspect", tmp_path / "parts", "--json", tmp_path / "f.json").output.split())
    assert f"warning: 1 mask(s) have another shape than their image (first: {masks[1]}, 64x32 against 64x64)" in said
    assert json.loads((tmp_path / "f.json").read_text())["misshapen_masks"] == [{"path": str(masks[1]), "mask": "64x32", "image": "64x64"}]


def test_inspect_says_how_train_would_take_the_goods_orientation(parts, tmp_path):
    from tests.test_orientation import key

    run_cli("inspect", parts, "--json", tmp_path / "facts.json")
    assert json.loads((tmp_path / "facts.json").read_text())["orientation"]["kind"] == "fixed"  # the synthetic disks lie alike
    rng = np.random.default_rng(0)
    (tmp_path / "keys" / "good").mkdir(parents=True)
    for i in range(6):
        key(rng.uniform(0, 360), rng).save(tmp_path / "keys" / "good" / f"{i}.png")
    output = run_cli("inspect", tmp_path / "keys").output
    assert "orientation (patchcore, from a few goods): free" in " ".join(output.split())


def test_inspect_says_whether_train_would_stretch_the_goods_levels(tmp_path):
    from tests.test_levels import surface

    rng = np.random.default_rng(0)
    (tmp_path / "tiles" / "good").mkdir(parents=True)
    for i in range(8):
        surface(rng, rng.uniform(60, 200), rng.uniform(8, 30)).save(tmp_path / "tiles" / "good" / f"{i}.png")
    output = " ".join(run_cli("inspect", tmp_path / "tiles", "--json", tmp_path / "facts.json").output.split())
    assert "levels (patchcore, hybrid): stretch: the goods' exposure varies" in output
    assert json.loads((tmp_path / "facts.json").read_text())["levels"]["kind"] == "stretch"


def test_inspect_decides_as_train_would_from_the_images_it_fits_on_not_a_test_split(tmp_path):
    """MVTec AD's layout: goods alone under train/, the defects and their masks under test/. train
    plans its input size from the masks of the defects it fits on: none here."""
    from anomalycli.data.synthetic import make_dataset

    make_dataset(tmp_path / "mvtec", n_good=10, n_per_defect=0, split="train")
    make_dataset(tmp_path / "mvtec", n_good=4, n_per_defect=3, split="test", masks=True, seed=1)
    run_cli("inspect", tmp_path / "mvtec", "--json", tmp_path / "facts.json")
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["masks"] == 6 and facts["input_sizes"]["masks_measured"] == 0


def test_inspect_says_the_bits_train_reads_16_bit_files_on_and_warns_of_brighter_images(tmp_path):
    rng = np.random.default_rng(0)
    for top, folder in ((4095, "mono12"), (65535, "mono16")):
        for i, name in enumerate(("good/a", "good/b", "bad/c")):
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            values = rng.normal(top / 2, top / 8, (32, 32)).clip(0, top).astype(np.uint16)
            values[0, 0] = top
            if name == "bad/c":
                values[:8] = 5000  # a defect brighter than every good over a quarter of the image
            Image.fromarray(values).save(tmp_path / folder / f"{name}.png")
    said = " ".join(run_cli("inspect", tmp_path / "mono12", "--json", tmp_path / "f.json").output.split())
    assert "bit depth: the 2 16-bit good(s) hold their values in the low 12 bits (largest value 4095 of 65535)" in said
    assert "warning: 1 image(s) go beyond the goods' 12 bits (first:" in said and "bad/c.png" in said
    facts = json.loads((tmp_path / "f.json").read_text())["bit_depth"]
    assert facts["bits"] == 12 and facts["saturated"] == [str(tmp_path / "mono12" / "bad" / "c.png")]
    said = " ".join(run_cli("inspect", tmp_path / "mono16").output.split())
    assert "use their 16 bits" in said and "warning" not in said


def test_inspect_warns_of_16_bit_colour_goods_that_read_nearly_black(tmp_path):
    # A 12-bit colour camera's values in the low bits of 48-bit PNGs: Pillow gives their top 8 bits, 0-15 of 255.
    cv2 = pytest.importorskip("cv2")  # Pillow writes no 16-bit colour file
    rng = np.random.default_rng(0)
    for name in ("good/a", "good/b", "bad/c"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / f"{name}.png"), rng.integers(0, 4096, (32, 32, 3)).astype(np.uint16))
    said = " ".join(run_cli("inspect", tmp_path, "--json", tmp_path / "f.json").output.split())
    assert "bit depth: the 2 colour good(s) of 16 bits a channel are read on the top 8 bits of each" in said
    assert "warning: the 16-bit colour goods read between" in said and "Save the images as 16-bit grey" in said
    assert "16-bit colour goods" in json.loads((tmp_path / "f.json").read_text())["bit_depth"]["warning"]


def test_inspect_says_16_bit_goods_on_an_offset_are_read_on_a_window_of_their_own(tmp_path):
    # A height map's values: 30,000 to 31,500, 6 of the 256 grey levels once read from 0.
    rng = np.random.default_rng(0)
    for name in ("good/a", "good/b", "bad/c"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        values = rng.choice([30000, 31500], (32, 32))
        if name == "bad/c":
            values[:8] = 26000  # a dent deeper than the window over a quarter of the image
        Image.fromarray(values.astype(np.uint16)).save(tmp_path / f"{name}.png")
    said = " ".join(run_cli("inspect", tmp_path, "--json", tmp_path / "f.json").output.split())
    assert (
        "bit depth: the 2 16-bit good(s) hold values between 30000 and 31500 only (1st to 99th percentile), on an offset: every 16-bit image is read on 29250-32250"
        in said
    )
    assert "warning: 1 image(s) go beyond the goods' window 29250-32250 (first:" in said and "bad/c.png" in said
    facts = json.loads((tmp_path / "f.json").read_text())["bit_depth"]
    assert facts["window"] == [29250, 32250] and facts["bits"] is None and facts["warning"] == ""
