"""The goods' orientation, measured from the goods: free, fixed and mirrored parts, surfaces; the
copies the bank learns; and, trained end to end on a few goods, aligned parts whose defect is a
rotation stay caught while free parts at a new angle pass."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from anomalycli.data.layouts import discover
from anomalycli.data.orientation import FIXED, FREE, orientation, turned_copies, turns
from anomalycli.detection.defaults import MIN_BANK_PATCHES

SIZE = 96


def key(angle: float, rng: np.random.Generator, mirrored: bool = False, notch: bool = False, size: int = SIZE) -> Image.Image:
    """A flat key: a long bar with a round head at one end and a tooth on one side, turned by ``angle``
    degrees, on a textured background; ``notch``: a dark notch bitten out of the bar (a defect)."""
    image = Image.new("L", (size, size), 50)
    draw = ImageDraw.Draw(image)
    s = size / 96
    draw.rectangle([22 * s, 44 * s, 78 * s, 52 * s], fill=200)
    draw.ellipse([12 * s, 38 * s, 32 * s, 58 * s], fill=200)
    tooth = [64 * s, 52 * s, 72 * s, 60 * s]
    if mirrored:
        tooth = [64 * s, 36 * s, 72 * s, 44 * s]
    draw.rectangle(tooth, fill=200)
    if notch:
        draw.rectangle([46 * s, 44 * s, 52 * s, 48 * s], fill=60)
    image = image.rotate(angle, resample=Image.BILINEAR, fillcolor=50, center=(size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2)))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 5, (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")


def test_keys_at_any_angle_are_free_and_keys_lying_one_way_are_fixed():
    rng = np.random.default_rng(0)
    free = orientation([key(rng.uniform(0, 360), rng) for _ in range(8)])
    assert free.kind == FREE and not free.mirrored and free.spread_degrees > 30
    fixed = orientation([key(rng.uniform(-3, 3), rng) for _ in range(8)])
    assert fixed.kind == FIXED and "aligned already" in fixed.reason


def test_keys_shown_mirrored_too_are_mirrored_and_a_surface_is_fixed():
    rng = np.random.default_rng(1)
    both = orientation([key(rng.uniform(0, 360), rng, mirrored=i % 2 == 1) for i in range(10)])
    assert both.kind == FREE and both.mirrored
    surfaces = [Image.fromarray(rng.normal(128, 30, (SIZE, SIZE)).clip(0, 255).astype(np.uint8), "L") for _ in range(8)]
    surface = orientation(surfaces)
    assert surface.kind == FIXED and "no part with an outline" in surface.reason


def test_the_user_decides_where_asked_and_one_good_stays_as_it_is():
    rng = np.random.default_rng(2)
    aligned = [key(0, rng) for _ in range(4)]
    assert orientation(aligned, "free").kind == FREE
    assert orientation([key(rng.uniform(0, 360), rng) for _ in range(4)], "fixed").kind == FIXED
    assert orientation(aligned[:1]).kind == FIXED


def test_few_goods_are_learnt_at_many_turns_and_many_goods_as_they_are():
    assert [turns(n, FREE) for n in (1, 4, 16, 64, 200, 400)] == [24, 24, 24, 6, 1, 1]
    assert turns(4, FIXED) == 1
    copies = turned_copies(key(0, np.random.default_rng(3)), 4, mirrored=True)
    assert len(copies) == 8 and all(c.size == (SIZE, SIZE) for c in copies)
    first, quarter = np.asarray(copies[0], dtype=float), np.asarray(copies[1], dtype=float)
    assert np.abs(np.rot90(first) - quarter)[8:-8, 8:-8].mean() < 6  # a quarter turn, the corners filled


def write_parts(folder, images: list[Image.Image]) -> None:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:03d}.png")


@pytest.mark.parametrize("how", ["fixed", "free"])
def test_a_few_goods_give_a_model_that_works_aligned_parts_keep_a_rotation_a_defect(how, tmp_path):
    """Aligned keys: the orientation check keeps them fixed, and a key turned 90 degrees is caught.
    Keys at any angle: learnt turned, a good key at an angle no good showed passes, a notched one is caught."""
    from anomalycli.workflows import evaluate, train
    from benchmarks.common import shipped_options

    rng = np.random.default_rng(4)
    angle = (lambda: rng.uniform(-2, 2)) if how == "fixed" else (lambda: rng.uniform(0, 360))
    write_parts(tmp_path / "data" / "good", [key(angle(), rng, size=64) for _ in range(6)])
    options = shipped_options(tmp_path / "data", [], method="patchcore", image_size=64)
    samples = discover(tmp_path / "data").samples
    model, _, _ = train.fit(options, samples, [], show_progress=False)
    assert model.config["orientation"]["kind"] == how
    patches = 6 * 64 * model.config["orientation"]["turns"]  # 64 px: 8 x 8 patches an image
    assert abs(model.config["bank_size"] - min(patches, MIN_BANK_PATCHES)) <= 6  # every patch of a few goods, up to the bank rule's floor (folds round)
    new_goods = [key(angle() if how == "fixed" else a, rng, size=64) for a in (17, 100, 200, 290)]
    defects = [key(90 + angle(), rng, size=64) for _ in range(4)] if how == "fixed" else [key(a, rng, notch=True, size=64) for a in (40, 130, 220, 310)]
    write_parts(tmp_path / "test" / "good", new_goods)
    write_parts(tmp_path / "test" / "bad", defects)
    test = discover(tmp_path / "test").samples
    _, rows = evaluate.evaluate(model, test, n_boot=0, show_progress=False)
    raw = {str(s.path.parent.name): [] for s in test}
    for sample, row in zip(test, rows):
        raw[sample.path.parent.name].append(row.raw)
    assert min(raw["bad"]) > max(raw["good"]), raw


def test_an_unreadable_good_is_skipped_by_the_orientation_and_its_copies_and_reported_by_the_fit(tmp_path):
    from anomalycli.workflows.train import TrainOptions, train

    rng = np.random.default_rng(7)
    write_parts(tmp_path / "data" / "good", [key(rng.uniform(0, 360), rng, size=64) for _ in range(5)])
    (tmp_path / "data" / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = train(TrainOptions(data=str(tmp_path / "data"), method="patchcore", image_size=64, run_dir=str(tmp_path / "run")), show_progress=False)
    assert result.model.config["orientation"]["kind"] == FREE and result.model.calibration.n_normal == 5
    assert any("unreadable" in warning for warning in result.warnings)


def test_many_goods_are_measured_on_a_spread_sample_and_decide_as_all_of_them(tmp_path, monkeypatch):
    """The pairs compared grow with the square of the goods: train measures at most SAMPLE of them,
    spread over the set, and many keys at any angle are still free (and aligned ones fixed)."""
    from anomalycli.data import orientation as orientation_module
    from anomalycli.data.layouts import Sample
    from anomalycli.workflows import turned_goods as turned_goods_module

    measured = []

    def counting(images, wanted="auto"):
        measured.append(len(images))
        return orientation_module.orientation(images, wanted)

    monkeypatch.setattr(turned_goods_module, "orientation", counting)
    rng = np.random.default_rng(8)
    n = orientation_module.SAMPLE + 16
    for name, angle in (("free", lambda: rng.uniform(0, 360)), ("aligned", lambda: rng.uniform(-3, 3))):
        write_parts(tmp_path / name, [key(angle(), rng, size=48) for _ in range(n)])
        goods = [Sample(path=p, class_name="good", label=0) for p in sorted((tmp_path / name).glob("*.png"))]
        with turned_goods_module.turned_goods(goods, "auto", 48) as turned:
            assert turned.orientation.kind == (FREE if name == "free" else FIXED) and turned.turns == turns(n, turned.orientation.kind)
    assert measured == [orientation_module.SAMPLE, orientation_module.SAMPLE]
