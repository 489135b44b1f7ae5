"""Heat maps a person can read: heat only where it matters, the flagged region outlined.

A map is in the method's raw units (a patch's distance to its nearest good patch, or with a
hybrid's pixel head that distance and the head's logit, each z-scored on good patches). One
``MapScale`` per model fixes what the colours mean for every image of a run:

- ``floor``: what good parts usually score; below it the image is shown untouched;
- ``threshold``: the level at which a region alone would flag the image; the region above it
  is outlined, and the colour is fully opaque from there on;
- ``top``: the far end of the colour scale (twice as far above the floor as the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from anomalycli import files
from anomalycli.data.images import HEATMAPS_MARKER
from anomalycli.detection import ignore

COLOURS = "inferno"
REGION_COLOUR = (0, 255, 255)  # cyan: the defect regions (above the pixel threshold)
MASK_COLOUR = (0, 255, 0)  # green: the ground-truth defect, where a mask is known
IGNORED_COLOUR = (128, 128, 128)  # grey: the model's don't-care region
MAX_ALPHA = 0.65
# Rows of an overlay coloured and blended at a time: a 24-megapixel image's overlay peaked at 2.9 GB
# blended whole (its colours as float64 RGBA); in bands the full-size arrays are the map and masks.
OVERLAY_BAND = 256
# Heat maps are written with fast PNG compression: level 6 took 205 ms a 1024 px overlay, level 1
# a third of that for files a fifth larger (BENCHMARKS.md, "Speed").
PNG_LEVEL = 1


@dataclass(frozen=True)
class MapScale:
    floor: float
    threshold: float
    top: float
    ignored: np.ndarray | None = field(default=None, compare=False)  # the model's don't-care mask (S x S), drawn greyed
    region_level: float | None = None  # the model's pixel threshold: its regions are outlined (None: the threshold's level)

    def describe(self) -> str:
        outlined = (
            f"outlined: the defect regions, where it exceeds {self.region_level:.3g} (the pixel threshold)"
            if self.region_level is not None
            else f"outlined where it exceeds {self.threshold:.3g}, the level that alone flags an image"
        )
        return f"heat from {self.floor:.3g} (what good parts score) to {self.top:.3g}; {outlined}; a flagged image with no such region is framed whole"


def map_scale(model) -> MapScale:
    """The scale of ``model``'s maps, from its calibration (and, for the hybrid, its fusion, or
    where it has a pixel head, its pixel threshold and good pixels' level).

    A patchcore image scores the largest value of its blurred map, so the image threshold is a
    map level. A hybrid's threshold is on its fused score; in map (one-class) units it is the
    one-class score that crosses the threshold when the supervised head sees nothing unusual.
    """
    cal = model.calibration
    scores, labels = np.asarray(cal.scores, dtype=float), np.asarray(cal.labels, dtype=int)
    good = scores[labels == 0] if len(scores) else np.array([cal.low])
    floor, threshold = float(np.median(good)), float(cal.threshold)
    fusion = _fusion(model)
    if fusion is not None:
        m0, s0, _, _, alpha = fusion
        floor, threshold = m0, m0 + s0 * threshold / max(alpha, 1e-6)
    region_level = (model.config.get("pixel_threshold") or {}).get("value")
    if model.config.get("pixel_head") and region_level is not None:
        # A map made with the pixel head no longer decides the image score: heat from the level
        # 99 % of the training goods' pixels stay under (0, their mean, in files without it),
        # full from the level its regions start at.
        floor, threshold = model.config["pixel_threshold"].get("good_level", 0.0), region_level
    threshold = max(threshold, floor + 1e-6)
    return MapScale(floor, threshold, floor + 2 * (threshold - floor), ignore.mask_of(model.config), region_level)


def _fusion(model) -> list[float] | None:
    """A hybrid's [one-class mean, std, head mean, std, one-class weight]; files from before the
    config kept them have them in the network only."""
    if model.method != "hybrid":
        return None
    if "fusion" in model.config:
        return model.config["fusion"]
    net = getattr(model, "net", None)
    return [*net.stats.tolist(), float(net.alpha)] if net is not None else None


def _outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The boundary pixels of a boolean mask, ``width`` pixels wide."""
    from scipy import ndimage

    # A square minimum filter runs as two 1-D passes: a 1024 px camera image's outline in 11 ms,
    # where Pillow's MinFilter took 195 ms (BENCHMARKS.md, "Speed").
    return mask & ~ndimage.minimum_filter(mask, size=2 * width + 1)


def overlay(image: Image.Image, anomaly_map: np.ndarray, scale: MapScale, truth: np.ndarray | None = None, flagged: bool = False) -> Image.Image:
    """``image`` with heat where the map is above the floor, the defect regions (the model's
    ``regions``: above its pixel threshold) outlined in cyan, and ``truth`` (a defect mask at any
    size) outlined in green. A ``flagged`` image whose map has no region (the image score flagged
    it; a faint or thin defect) is framed whole in cyan: look at all of it."""
    rgb = np.asarray(image.convert("RGB"))
    size = image.size
    level = np.asarray(Image.fromarray(anomaly_map.astype(np.float32)).resize(size, Image.BILINEAR))
    width = max(1, round(max(size) / 200))
    regions = level >= (scale.threshold if scale.region_level is None else scale.region_level)
    # Each mark in the order it is drawn, as (pixels, colour) full-size masks: the blending below
    # goes band by band, and a mark's outline needs the pixels around it.
    marks = [(_outline(regions, width), REGION_COLOUR)]
    if flagged and not regions.any():
        frame = np.zeros(regions.shape, dtype=bool)
        frame[:width], frame[-width:], frame[:, :width], frame[:, -width:] = True, True, True, True
        marks.append((frame, REGION_COLOUR))
    if truth is not None:
        mask = np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
        marks.append((_outline(mask, width), MASK_COLOUR))
    greyed = None
    if scale.ignored is not None:  # the don't-care region: greyed, outlined in grey
        greyed = np.asarray(Image.fromarray(scale.ignored.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    greyed_outline = None if greyed is None else _outline(greyed, width)
    out = np.empty_like(rgb)
    for top in range(0, rgb.shape[0], OVERLAY_BAND):
        rows = slice(top, top + OVERLAY_BAND)
        band_marks = [(pixels[rows], colour) for pixels, colour in marks]
        band_greyed = None if greyed is None else (greyed[rows], greyed_outline[rows])
        out[rows] = _blended(rgb[rows], level[rows], scale, band_marks, band_greyed)
    return Image.fromarray(out)


def _blended(rgb: np.ndarray, level: np.ndarray, scale: MapScale, marks: list, greyed: tuple | None) -> np.ndarray:
    """A band of ``overlay``'s rows: the heat blended in, the marks drawn, then the don't-care
    region (``greyed``: its pixels, then its outline) greyed and outlined."""
    from matplotlib import colormaps

    alpha = MAX_ALPHA * np.clip((level - scale.floor) / (scale.threshold - scale.floor), 0, 1)
    # Colour and blend only where there is heat: most of a good part's pixels have none.
    heat = alpha > 0
    position = np.clip((level[heat] - scale.floor) / (scale.top - scale.floor), 0, 1)
    colours = colormaps[COLOURS](0.25 + 0.75 * position)[..., :3] * 255
    weight = alpha[heat][:, None]
    blended = rgb.astype(np.float64)
    blended[heat] = rgb[heat].astype(np.float32) * (1 - weight) + colours * weight
    for pixels, colour in marks:
        blended[pixels] = colour
    if greyed is not None:
        pixels, outline = greyed
        blended[pixels] = 0.4 * blended[pixels] + 0.6 * np.array(IGNORED_COLOUR, dtype=np.float32)
        blended[outline] = IGNORED_COLOUR
    return blended.round().astype(np.uint8)


def panel(image: Image.Image, heat: Image.Image, gap: int = 8) -> Image.Image:
    """The image and its overlay side by side."""
    width, height = image.size
    out = Image.new("RGB", (2 * width + gap, height), (255, 255, 255))
    out.paste(image.convert("RGB"), (0, 0))
    out.paste(heat, (width + gap, 0))
    return out


def mark_heatmaps_folder(folder: Path) -> None:
    """Mark ``folder`` as heat maps anomalycli writes: searches for images skip it (``HEATMAPS_MARKER``)."""
    marker = Path(folder) / HEATMAPS_MARKER
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(marker, "Heat maps written by anomalycli: a search for images in a folder above this one skips it.\n")


def save_heatmap(heat: Image.Image, path, overwrite: bool = True) -> None:
    """``heat`` (an ``overlay`` or ``panel``) as a PNG at ``path``, written atomically."""
    with files.atomic_path(path, overwrite) as tmp:
        heat.save(tmp, format="PNG", compress_level=PNG_LEVEL)
