"""The pixel threshold: from the defect masks where there are enough, else from the goods' rate."""

import numpy as np
import pytest

from anomalycli.judgement import pixel_threshold


def _maps(n_good: int, n_defect: int, seed: int = 0):
    """Good maps of noise around 1; defect maps with a 4 x 4 true defect scoring around 3."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(1.0, 0.2, (n_good + n_defect, 16, 16))
    masks = [None] * n_good
    for i in range(n_good, n_good + n_defect):
        mask = np.zeros((16, 16), bool)
        mask[6:10, 6:10] = True
        maps[i][mask] += 2.0
        masks.append(mask)
    return maps, np.array([0] * n_good + [1] * n_defect), masks


def test_without_enough_masks_the_goods_rate_decides():
    maps, labels, masks = _maps(40, 4)
    chosen = pixel_threshold.choose(maps, labels, masks, 0.01)
    assert chosen["value"] == chosen["goods_value"] == pytest.approx(np.quantile(maps[:40], 0.99))
    assert chosen["good_pixel_rate"] == pytest.approx(0.01, abs=0.002) and "0.01" not in chosen["rule"] and "1 %" in chosen["rule"]


def test_with_masks_the_level_that_touches_the_most_true_regions_for_the_fewest_false_ones():
    maps, labels, masks = _maps(40, 8)
    chosen = pixel_threshold.choose(maps, labels, masks, 0.01)
    assert "8 defect masks" in chosen["rule"]
    # The goods' 1 % level makes false regions on most good images; the chosen one sits between
    # the goods' noise (about 1 +- 0.2) and the defects (about 3): every true region touched, and
    # about no false one.
    assert chosen["goods_value"] < 1.6 < chosen["value"] < 2.6 and chosen["good_pixel_rate"] < 0.001
    truth = np.stack([m for m in masks if m is not None])
    assert all((m[t] >= chosen["value"]).any() for m, t in zip(maps[40:], truth))
    # Its merit: every true region touched (1) less the false regions per good image there.
    assert 0.9 < chosen["regions_merit"] <= 1.0
    assert pixel_threshold.choose(*_maps(40, 4), 0.01)["regions_merit"] is None
    # Defects too faint for any level: the highest level wins the tie (fewest false regions).
    faint = maps.copy()
    faint[40:] = maps[:8]
    faint_choice = pixel_threshold.choose(faint, labels, masks, 0.01)
    assert faint_choice["value"] == pytest.approx(np.quantile(maps[:40], 1 - 1e-5)) and faint_choice["regions_merit"] < 0.5
    # A defect without a mask says nothing of where it is: it is left out, not counted as good.
    unmasked = [None if i == 47 else m for i, m in enumerate(masks)]
    assert "7 defect masks" in pixel_threshold.choose(maps, labels, unmasked, 0.001)["rule"]
