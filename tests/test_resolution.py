"""The sizes train would try, from the images' size and the defect masks (data/resolution.py)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from anomalycli.data.resolution import MAX_SIZE, THIN_DEFECT_PX, defect_thickness, plan_sizes


def _mask(path, size: int, width: int, spot: bool = False):
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if spot:
        draw.ellipse([size // 2 - width // 2, size // 2 - width // 2, size // 2 + width // 2, size // 2 + width // 2], fill=255)
    else:
        draw.line([size * 0.2, size * 0.5, size * 0.8, size * 0.5], fill=255, width=width)
    mask.save(path)
    return path


def test_a_scratch_is_as_thick_as_its_width_scaled_to_the_input_size(tmp_path):
    assert defect_thickness(_mask(tmp_path / "m.png", 640, 6), 320) == pytest.approx(3.0, rel=0.1)
    assert defect_thickness(_mask(tmp_path / "s.png", 640, 40, spot=True), 320) == pytest.approx(16, rel=0.25)
    Image.new("L", (64, 64), 0).save(tmp_path / "empty.png")
    assert defect_thickness(tmp_path / "empty.png", 320) is None


def test_small_images_keep_the_default_size():
    plan = plan_sizes([(256, 256)] * 10, [], 3, 320)
    assert plan.candidates == [320] and "256 px (median), at most 320: a larger input would only upscale them" in plan.reason
    near = plan_sizes([(380, 380)] * 10, [], 3, 320)
    assert near.candidates == [320] and "380 px (median), near 320: a larger input would add little detail" in near.reason


def test_large_images_with_thin_defects_try_a_larger_size_up_to_their_own(tmp_path):
    masks = [_mask(tmp_path / f"m{i}.png", 512, 3) for i in range(5)]
    plan = plan_sizes([(512, 512)] * 10, masks, 5, 320)
    assert plan.candidates == [320, 512]
    assert plan.small_defect_px < THIN_DEFECT_PX and "trying 320 and 512" in plan.reason
    assert plan_sizes([(2048, 1536)] * 10, masks, 5, 320).candidates == [320, MAX_SIZE]


def test_large_images_with_large_defects_keep_the_default_size(tmp_path):
    masks = [_mask(tmp_path / f"m{i}.png", 512, 120, spot=True) for i in range(5)]
    plan = plan_sizes([(512, 512)] * 10, masks, 5, 320)
    assert plan.candidates == [320] and "sees them" in plan.reason


def test_large_images_without_masks_try_larger_and_without_defects_cannot_measure_it():
    assert plan_sizes([(800, 600)] * 10, [], 4, 320).candidates == [320, 576]
    assert "no defect masks" in plan_sizes([(800, 600)] * 10, [], 4, 320).reason
    none = plan_sizes([(800, 600)] * 10, [], 0, 320)
    assert none.candidates == [320] and "no labelled defects" in none.reason
