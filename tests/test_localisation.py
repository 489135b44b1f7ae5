import numpy as np
import pytest

from anomalycli.judgement.localisation import aupro, regions, touched_and_false


def test_aupro_on_a_case_worked_by_hand():
    # One region of 2 pixels; 2 good pixels. Descending: 0.9 (half the region, fpr 0), 0.5 (a good
    # pixel: fpr 0.5), 0.2 (the region whole), 0.1 (fpr 1). Up to fpr 0.3 the PRO is 0.5 throughout.
    mask = np.array([[1, 1], [0, 0]], bool)
    anomaly_map = np.array([[0.9, 0.2], [0.5, 0.1]])
    assert aupro([mask], [anomaly_map]) == pytest.approx(0.5)
    # Over the whole range: 0.5 x 0.5 (to fpr 0.5), then 1.0 x 0.5.
    assert aupro([mask], [anomaly_map], max_fpr=1.0) == pytest.approx(0.75)


def test_aupro_weighs_every_true_region_alike_however_large():
    # A 3-pixel region found whole before any false positive, a 1-pixel region found last: PRO 0.5
    # all along (a pixel-weighted overlap would say 0.75).
    masks = [np.array([[1, 1, 1, 0]], bool), np.array([[1, 0, 0]], bool)]
    maps = [np.array([[0.9, 0.8, 0.7, 0.1]]), np.array([[0.05, 0.6, 0.2]])]
    assert aupro(masks, maps) == pytest.approx(0.5)
    assert aupro(masks, maps, max_fpr=1.0) == pytest.approx(0.5)
    assert aupro([np.zeros((2, 2), bool)], [np.zeros((2, 2))]) is None


def test_regions_are_boxed_and_measured_in_the_original_images_pixels():
    anomaly_map = np.zeros((4, 4))
    anomaly_map[1:3, 0:2] = [[2.0, 3.0], [2.5, 2.0]]
    anomaly_map[3, 3] = 5.0  # a second, one-pixel region
    found = regions(anomaly_map, 1.0, original_size=(8, 4))  # the image was 8 wide, 4 high: squashed to 4 x 4
    assert [(r.x, r.y, r.width, r.height, r.area_px) for r in found] == [(0, 1, 4, 2, 8.0), (6, 3, 2, 1, 2.0)]
    assert found[0].peak == 3.0 and found[0].mean == pytest.approx(2.375)
    assert [r.area_px for r in regions(anomaly_map, 1.0, (8, 4), min_area_px=3)] == [8.0]
    in_mm = found[0].to_dict(pixel_size_mm=0.5)
    assert in_mm["area_mm2"] == pytest.approx(2.0) and in_mm["width_mm"] == pytest.approx(2.0)


def test_touched_regions_and_false_regions_per_good_image():
    truth = [np.array([[1, 0, 0, 1]], bool), np.zeros((1, 4), bool), np.zeros((1, 4), bool)]
    guess = [np.array([[1, 1, 0, 0]], bool), np.array([[1, 0, 1, 0]], bool), np.zeros((1, 4), bool)]
    assert touched_and_false(truth, guess) == {"regions_touched": 0.5, "false_regions_per_good_image": 1.0, "true_regions": 2}
