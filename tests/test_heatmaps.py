import dataclasses

import numpy as np
from PIL import Image

from anomalycli.detection.methods import AnomalyModel
from anomalycli.views.heatmaps import MASK_COLOUR, REGION_COLOUR, MapScale, map_scale, overlay, panel


def _grey(size=64, value=128):
    return Image.new("L", (size, size), value)


def test_heat_only_above_the_floor_and_the_flagged_region_outlined():
    anomaly_map = np.zeros((64, 64), dtype=np.float32)
    anomaly_map[20:40, 20:40] = 3.0  # above the threshold
    anomaly_map[50:60, 5:15] = 1.5  # above the floor, below the threshold
    out = np.asarray(overlay(_grey(), anomaly_map, MapScale(floor=1.0, threshold=2.0, top=3.0)))
    assert (out[:10, 40:] == 128).all(), "below the floor the image is untouched"
    assert (out[55, 10] != 128).any() and not (out[55, 10] == REGION_COLOUR).all(), "heat, but no outline, below the threshold"
    assert (out[20, 30] == REGION_COLOUR).all() and (out[30, 20] == REGION_COLOUR).all()
    assert not (out[30, 30] == REGION_COLOUR).all(), "an outline, not a filled square"


def test_a_flagged_image_without_a_region_is_framed_whole_and_one_with_a_region_is_not():
    faint = np.full((64, 64), 1.5, dtype=np.float32)  # heat, but nowhere the region's level
    scale = MapScale(floor=1.0, threshold=2.0, top=3.0)
    framed = np.asarray(overlay(_grey(), faint, scale, flagged=True))
    assert (framed[0, :] == REGION_COLOUR).all() and (framed[:, -1] == REGION_COLOUR).all()
    assert not (framed[32, 32] == REGION_COLOUR).all(), "a frame, not a fill"
    assert not (np.asarray(overlay(_grey(), faint, scale))[0, 0] == REGION_COLOUR).all(), "not flagged: no frame"
    placed = faint.copy()
    placed[20:40, 20:40] = 3.0
    assert not (np.asarray(overlay(_grey(), placed, scale, flagged=True))[0, 0] == REGION_COLOUR).all(), "its region says where"


def test_an_overlay_drawn_in_bands_of_rows_is_the_one_drawn_whole(monkeypatch):
    """Bands keep a large image's overlay in bounded memory (24 megapixels peaked at 2.9 GB whole);
    every mark that crosses a band's edge (outlines, the frame, the don't-care region) is the same."""
    from anomalycli.views import heatmaps

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (101, 77, 3), dtype=np.uint8))
    anomaly_map = rng.normal(1.5, 0.6, (20, 20)).astype(np.float32)
    truth = np.zeros((30, 25), dtype=bool)
    truth[8:22, 6:18] = rng.random((14, 12)) > 0.7  # inside: its outline never covers the frame
    ignored = np.zeros((20, 20), dtype=bool)
    ignored[5:12, 3:9] = True
    pictures = {}
    for band in (7, 10_000):
        monkeypatch.setattr(heatmaps, "OVERLAY_BAND", band)
        for flagged, level in ((False, None), (True, 99.0)):  # outlined regions; none, so framed
            scale = MapScale(floor=1.0, threshold=2.0, top=3.0, ignored=ignored, region_level=level)
            pictures[band, flagged] = np.asarray(overlay(image, anomaly_map, scale, truth=truth, flagged=flagged))
    for flagged in (False, True):
        assert (pictures[7, flagged] == pictures[10_000, flagged]).all()
    assert (pictures[7, True][:, 0] == REGION_COLOUR).all(), "the frame runs through every band"


def test_ground_truth_outlined_and_panel_puts_the_image_first():
    truth = np.zeros((16, 16), dtype=bool)
    truth[4:12, 4:12] = True  # at another size than the image: scaled to it
    image = _grey()
    out = overlay(image, np.zeros((64, 64), dtype=np.float32), MapScale(1.0, 2.0, 3.0), truth=truth)
    assert (np.asarray(out)[16, 32] == MASK_COLOUR).all()
    both = panel(image, out)
    assert both.size == (64 * 2 + 8, 64) and np.asarray(both)[32, 10].tolist() == [128, 128, 128]


def test_the_scale_comes_from_the_models_calibration(patchcore_model, hybrid_model):
    model = AnomalyModel.load(patchcore_model)
    cal = model.calibration
    scale = map_scale(model)
    good = [s for s, label in zip(cal.scores, cal.labels) if label == 0]
    assert scale.floor == float(np.median(good)) and scale.threshold == cal.threshold
    assert scale.top - scale.floor == 2 * (scale.threshold - scale.floor)
    hybrid = AnomalyModel.load(hybrid_model)
    m0, s0, _, _, alpha = hybrid.config["fusion"]
    assert np.allclose([float(hybrid.net.alpha), *hybrid.net.stats.tolist()[:2]], [alpha, m0, s0])
    # Its maps are made with the pixel head: heat from the goods' 99th percentile pixel, full at the pixel threshold.
    scale = map_scale(hybrid)
    pixel = hybrid.config["pixel_threshold"]
    assert hybrid.config["pixel_head"] and scale.floor == pixel["good_level"] and scale.threshold == pixel["value"]
    assert 0.0 < pixel["good_level"] < pixel["value"]
    # Without one, the maps are the one-class distances: the fused threshold in their units.
    scale = map_scale(dataclasses.replace(hybrid, config={**hybrid.config, "pixel_head": False}))
    assert scale.floor == m0 and np.isclose(scale.threshold, m0 + s0 * hybrid.calibration.threshold / alpha)
