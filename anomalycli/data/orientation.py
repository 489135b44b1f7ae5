"""Whether the good parts lie at one orientation or at many, measured from the goods themselves.

A part that comes at any angle (a screw on a tray) needs goods at every angle in the bank: from a
few goods, a good part at an angle none of them showed scores as a defect (16 goods: screws AUROC
0.58; their copies rotated in 30 degree steps: 0.90). A part that always comes aligned must not be
rotated: where a rotated part is itself a defect (a misplaced transistor), rotated goods would
teach the bank that the defect is normal.

``orientation`` reads each good image's part (what differs from the image's border) and its axis
(the part's second moments), and asks whether turning the goods onto their axes makes them alike:
goods at many orientations become alike once turned (screws: correlation 0.91-0.98 turned,
0.01-0.46 as they lie), aligned goods are alike already, and surfaces that fill the image (tiles)
are alike neither way. Free where the turned goods are alike (``ALIKE``) and much more than as they
lie (``GAIN``); else fixed. Where free, whether the goods also show mirror images: each turned good
is compared with the first and its mirror image; mirrored where a clear share match the mirror better.

No PyTorch here: ``anomaly inspect`` says the decision too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from anomalycli.data.bit_depth import OWN_SCALES, Windows
from anomalycli.data.images import ImageError, load_image
from anomalycli.data.levels import goods_sample

FREE, FIXED, AUTO = "free", "fixed", "auto"
ORIENTATIONS = (AUTO, FREE, FIXED)
SIDE = 96  # the goods are measured at this size: enough for a part's outline
# Goods measured at most, spread over them: the pairs compared grow with the square of the goods
# (a fit of 2,000 goods took 507 s comparing them all, 181 s comparing 64; BENCHMARKS.md, "Scale
# and Ray"), and 64 tell the screws from the tiles as clearly as all of them do.
SAMPLE = 64
# Free where the goods turned onto their axes correlate at least ALIKE on average, and by GAIN more
# than as they lie (screws: 0.91-0.98 turned against 0.01-0.46; magnetic tiles: 0.00-0.06 both ways).
ALIKE, GAIN = 0.5, 0.2
MIRROR_SHARE = 1 / 3  # mirrored where at least this share of the goods match the mirror image better
MIRROR_MARGIN = 0.08  # by this much correlation at least
MIRROR_LEAST_GOODS = 4  # fewer goods cannot tell a mirror image from chance


@dataclass(frozen=True)
class Orientation:
    kind: str  # free | fixed
    mirrored: bool
    spread_degrees: float | None  # the goods' axes' circular standard deviation; None where none was measured
    reason: str  # one line: what was measured, and what it means

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mirrored": self.mirrored, "spread_degrees": self.spread_degrees, "reason": self.reason}


def readable_images(paths: list[Path], most: int | None = None, windows: Windows = OWN_SCALES) -> list[Image.Image]:
    """The images at ``paths`` that decode (up to ``most``; 16-bit ones read on ``windows``,
    ``bit_depth.py``), skipping the others: an unreadable good is the fit's to report, not a reason
    to stop measuring."""
    images = []
    for path in paths:
        try:
            images.append(load_image(path, windows))
        except ImageError:
            continue
        if most is not None and len(images) == most:
            break
    return images


def measured_goods(paths: list[Path], windows: Windows = OWN_SCALES) -> list[Image.Image]:
    """The goods the orientation is measured on, for train and inspect alike: the readable ones of
    at most ``SAMPLE`` spread over ``paths``."""
    return readable_images(goods_sample(paths, SAMPLE), windows=windows)


def part_of(image: Image.Image) -> np.ndarray:
    """How far each pixel is from the image's background (the median of its border), grey, SIDE x SIDE,
    the sensor's noise (the border's spread) taken off: the part, as weights."""
    grey = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float64)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background, noise = np.median(border), np.median(np.abs(border - np.median(border))) * 1.4826
    return np.clip(np.abs(grey - background) - 3 * noise - 4, 0, None)


def axis_of(weights: np.ndarray) -> tuple[float, float, float]:
    """(the part's axis in degrees, 0-180; its elongation: long over short axis; its share of the image)."""
    total = weights.sum()
    if total <= 0:
        return 0.0, 1.0, 0.0
    ys, xs = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    cy, cx = (weights * ys).sum() / total, (weights * xs).sum() / total
    mu20, mu02 = (weights * (xs - cx) ** 2).sum() / total, (weights * (ys - cy) ** 2).sum() / total
    mu11 = (weights * (xs - cx) * (ys - cy)).sum() / total
    spread = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    long, short = (mu20 + mu02) / 2 + spread, max((mu20 + mu02) / 2 - spread, 1e-9)
    angle = np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02)) % 180
    share = float((weights > 0).mean())
    return float(angle), float(np.sqrt(long / short)), share


def circular_spread(axes_degrees: np.ndarray) -> float:
    """The circular standard deviation of axes (angles modulo 180), in degrees."""
    doubled = np.radians(2 * np.asarray(axes_degrees))
    resultant = np.hypot(np.cos(doubled).mean(), np.sin(doubled).mean())
    return float(np.degrees(np.sqrt(-2 * np.log(max(resultant, 1e-12)))) / 2)


def orientation(images: list[Image.Image], wanted: str = AUTO) -> Orientation:
    """The goods' orientation, measured (``wanted`` auto) or as the user set it (free, fixed: then
    only the mirror images are measured, for free)."""
    if wanted == FIXED:
        return Orientation(FIXED, False, None, "--orientation fixed: the goods are used as they are")
    weights = [part_of(image) for image in images]
    axes = np.array([axis_of(w)[0] for w in weights])
    spread = circular_spread(axes) if len(images) >= 2 else None
    if wanted == FREE:
        mirrored = _mirrored(weights, axes)
        return Orientation(
            FREE, mirrored, spread, "--orientation free: the bank learns the goods at every orientation" + (", and mirrored" if mirrored else "")
        )
    if len(images) < 2:
        return Orientation(FIXED, False, None, "one good image shows one orientation: used as it is (--orientation free rotates it)")
    as_they_lie = _alike([_aligned(w, 0.0) for w in weights])
    turned = _alike([_aligned(w, axis) for w, axis in zip(weights, axes)])
    if turned < ALIKE or turned - as_they_lie < GAIN:
        what = "are aligned already" if as_they_lie >= ALIKE else "show no part with an outline to turn (a surface, or parts unlike in shape)"
        return Orientation(
            FIXED, False, spread, f"the goods {what} (alike {as_they_lie:.2f} as they lie, {turned:.2f} turned onto their axes): used as they are"
        )
    mirrored = _mirrored(weights, axes)
    return Orientation(
        FREE,
        mirrored,
        spread,
        f"the goods lie at many orientations (axes spread {spread:.0f} degrees; alike {as_they_lie:.2f} as they lie, {turned:.2f} turned): "
        "the bank learns them turned" + (" and mirrored" if mirrored else ""),
    )


def _alike(parts: list[np.ndarray]) -> float:
    """The mean correlation of every pair of parts (each pair either way round: an axis has two ends)."""
    pairs = [(a, b) for i, a in enumerate(parts) for b in parts[i + 1 :]]
    return float(np.mean([max(_similarity(a, b), _similarity(a, np.rot90(b, 2))) for a, b in pairs]))


def _aligned(weights: np.ndarray, axis: float) -> np.ndarray:
    """The part turned onto its axis (its axis horizontal), centred on its centre of mass."""
    total = weights.sum() or 1.0
    ys, xs = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    cy, cx = (weights * ys).sum() / total, (weights * xs).sum() / total
    image = Image.fromarray(weights.astype(np.float32), "F")
    turned = image.rotate(axis, resample=Image.BILINEAR, center=(cx, cy), translate=(SIDE / 2 - cx, SIDE / 2 - cy))
    return np.asarray(turned, dtype=np.float64)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def _mirrored(weights: list[np.ndarray], axes: np.ndarray) -> bool:
    """Whether the goods, each turned onto its axis, match the first good's mirror image (across its
    axis) better than the first good itself, either way round, for at least ``MIRROR_SHARE`` of them."""
    if len(weights) < MIRROR_LEAST_GOODS:
        return False
    reference = _aligned(weights[0], axes[0])
    plain = [reference, np.rot90(reference, 2)]
    mirror = [np.flipud(reference), np.fliplr(reference)]
    better = 0
    for w, axis in zip(weights[1:], axes[1:]):
        part = _aligned(w, axis)
        as_is, mirrored = max(_similarity(part, p) for p in plain), max(_similarity(part, m) for m in mirror)
        better += mirrored > as_is + MIRROR_MARGIN
    return better >= MIRROR_SHARE * (len(weights) - 1)


def turns(n_goods: int, orientation_kind: str, most_images: int = 384, most_turns: int = 24) -> int:
    """How many orientations the bank learns each good at (1: as it is): evenly spaced over the full
    turn, as many as keep the goods and their copies within ``most_images`` (16 goods: 12 turns of
    30 degrees; 64: 3; from 96 goods, none: they show the orientations themselves)."""
    if orientation_kind != FREE:
        return 1
    return int(min(most_turns, max(1, most_images // max(1, n_goods))))


def turned_copies(image: Image.Image, count: int, mirrored: bool) -> list[Image.Image]:
    """``image`` at ``count`` orientations over the full turn (the first is itself), each also mirrored
    where ``mirrored``; the corners a turn uncovers are filled with the border's median colour."""
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).reshape(-1, pixels.shape[2] if pixels.ndim == 3 else 1)
    fill = tuple(int(v) for v in np.median(border, 0))
    fill = fill if len(fill) > 1 else fill[0]
    copies = [image if k == 0 else image.rotate(360.0 * k / count, resample=Image.BILINEAR, fillcolor=fill) for k in range(count)]
    if mirrored:
        copies += [c.transpose(Image.FLIP_LEFT_RIGHT) for c in copies]
    return copies
