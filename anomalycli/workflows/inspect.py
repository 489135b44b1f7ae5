"""``anomaly inspect`` without the terminal: the facts about a data set, as a plain dict."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from anomalycli import files
from anomalycli.data.bit_depth import SixteenBit, SixteenBitColour, Spread, Windows, bit_depth_of, measured
from anomalycli.data.confounds import taken_differently
from anomalycli.data.encoding import encoding_of
from anomalycli.data.images import ImageError, binary_mask, load_image
from anomalycli.data.layouts import Dataset
from anomalycli.data.levels import goods_sample, levels
from anomalycli.data.orientation import measured_goods, orientation, readable_images
from anomalycli.data.resolution import plan_for_samples
from anomalycli.detection.defaults import DEFAULT_IMAGE_SIZE

MOST_COMMON_SIZES = 3
# Areas further apart than this count as sizes that "vary a lot" (a 2x difference in each side).
AREA_SPREAD = 4.0


def imbalance_verdict(ratio: float | None) -> str:
    if ratio is None:
        return "only one class: a classifier cannot be trained; patchcore can"
    if ratio < 1.5:
        return "balanced"
    # train's own methods take it as it is (patchcore learns the goods; the hybrid's head weighs the classes evenly).
    how = "moderately" if ratio < 5 else "heavily"
    return f"{how} imbalanced: train's default takes it as it is; with --method classifier add --weighted-loss or --sampler balanced"


def size_summary(sizes: Counter) -> dict | None:
    """What the image sizes come to, in a few numbers: ``sizes`` counts images per (width, height)."""
    if not sizes:
        return None
    widths = [w for (w, _), n in sizes.items() for _ in range(n)]
    heights = [h for (_, h), n in sizes.items() for _ in range(n)]
    aspects = [w / h for w, h in sizes]
    common = sizes.most_common(MOST_COMMON_SIZES)
    return {
        "n_images": len(widths),
        "n_distinct": len(sizes),
        "width": {"min": min(widths), "median": statistics.median(widths), "max": max(widths)},
        "height": {"min": min(heights), "median": statistics.median(heights), "max": max(heights)},
        "aspect": {"min": min(aspects), "max": max(aspects)},
        "square_share": sum(n for (w, h), n in sizes.items() if w == h) / len(widths),
        "most_common": [{"size": f"{w}x{h}", "images": n} for (w, h), n in common],
        "n_other_sizes": len(sizes) - len(common),
    }


def resize_note(summary: dict | None) -> str | None:
    """One line on what training does to these images, when they are not all square and alike."""
    if summary is None:
        return None
    areas = [summary["width"][k] * summary["height"][k] for k in ("min", "max")]
    squashed = summary["square_share"] < 1
    spread = areas[1] / max(areas[0], 1) > AREA_SPREAD
    if not squashed and not spread:
        return None
    size, classifier = DEFAULT_IMAGE_SIZE["patchcore"], DEFAULT_IMAGE_SIZE["classifier"]
    what = []
    if squashed:
        aspect = summary["aspect"]
        what.append(
            f"images that are not square are squashed (width / height {aspect['min']:.2f} to {aspect['max']:.2f} here; --framing letterbox keeps their shape)"
        )
    if spread:
        width = summary["width"]
        what.append(f"widths from {width['min']} to {width['max']} px all come to the same size")
    return (
        f"training resizes every image to one square size ({size} px or the size chosen from the data for patchcore and hybrid; the classifier "
        f"{classifier} px): {' and '.join(what)}; --image-size sets that size"
    )


# A defect's mask marking more of its image than this is likely drawn the other way round.
MOST_OF_THE_IMAGE = 0.5


def inspect_dataset(dataset: Dataset) -> dict:
    counts: dict[str, Counter] = defaultdict(Counter)
    defect_types: Counter = Counter()
    sizes: Counter = Counter()
    modes: Counter = Counter()
    saved_as: Counter = Counter()
    misshapen_masks = []
    mask_shares: dict[str, float] = {}  # the share of its image each defect's mask marks
    # What each 16-bit, float or 32-bit image's values say (data/bit_depth.measured).
    values_found: dict[Path, SixteenBit | Spread | SixteenBitColour] = {}
    unreadable = []
    by_hash: dict[str, list] = defaultdict(list)
    for s in dataset.samples:
        split = s.split or "all"
        counts[split][s.class_name] += 1
        if s.label:
            defect_types[s.defect_type] += 1
        try:
            with Image.open(s.path) as im:
                sizes[(im.width, im.height)] += 1
                modes[im.mode] += 1
                shape, share = _mask_facts(s.mask, im.size) if s.mask else (None, None)
                if shape:
                    misshapen_masks.append({"path": str(s.mask), "mask": shape, "image": f"{im.width}x{im.height}"})
                if share is not None and s.label == 1:
                    mask_shares[str(s.mask)] = share
                if (values := measured(im)) is not None:
                    values_found[s.path] = values
            saved_as[encoding_of(s.path)] += 1
            load_image(s.path)  # a full decode: truncated files fail only here
        except ImageError as exc:
            unreadable.append({"path": str(s.path), "error": str(exc)})
            continue
        except Exception as exc:  # Image.open's own errors carry no path; load_image says it better
            unreadable.append({"path": str(s.path), "error": f"{s.path}: {exc}"})
            continue
        by_hash[files.file_sha256(s.path)].append(s)
    n_normal = sum(1 for s in dataset.samples if s.label == 0)
    n_anomaly = len(dataset.samples) - n_normal
    # train decides from the images it fits on, never a test split's (a data set of test images alone: all of them)
    fitted_on = dataset.fitting_pool() or dataset.samples
    ratio = (max(n_normal, n_anomaly) / min(n_normal, n_anomaly)) if n_normal and n_anomaly else None
    summary = size_summary(sizes)
    depth, windows = _bit_depth(values_found, fitted_on)
    duplicates = []
    for digest, group in by_hash.items():
        if len(group) > 1:
            splits = sorted({s.split or "all" for s in group})
            duplicates.append(
                {
                    "sha256": digest,
                    "paths": [str(s.path) for s in group],
                    "splits": splits,
                    "leak": len(splits) > 1,
                    "conflicting_labels": len({s.label for s in group}) > 1,
                }
            )
    return {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "normal_class": dataset.normal_class,
        "n_images": len(dataset.samples),
        "n_normal": n_normal,
        "n_anomaly": n_anomaly,
        "counts": {split: dict(sorted(c.items())) for split, c in sorted(counts.items())},
        "imbalance_ratio": ratio,
        "imbalance_verdict": imbalance_verdict(ratio),
        "defect_types": dict(sorted(defect_types.items())),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common()},
        "size_summary": summary,
        "resize_note": resize_note(summary),
        # What anomaly train would try for patchcore and hybrid models (data/resolution.py).
        "input_sizes": plan_for_samples(fitted_on, DEFAULT_IMAGE_SIZE["patchcore"]).to_dict(),
        # How train (patchcore) would take the goods' orientation: measured on a few of them (data/orientation.py).
        "orientation": _orientation(fitted_on, windows),
        # Whether train (patchcore, hybrid) would stretch each image's levels (data/levels.py).
        "levels": _levels(fitted_on, windows),
        "image_modes": dict(modes.most_common()),
        # How the images were saved (data/encoding.py): a line that saves lossier than these drifts.
        "saved_as": {str(e): n for e, n in saved_as.most_common() if e is not None},
        "masks": sum(1 for s in dataset.samples if s.mask),
        # Masks are resized onto their image: one of another shape outlines the wrong pixels.
        "misshapen_masks": misshapen_masks,
        # A defect's mask that marks nothing, or most of its image (drawn black on white?): wrong pixels taught and measured.
        "empty_masks": sorted(path for path, share in mask_shares.items() if share == 0),
        "masks_marking_most": sorted(path for path, share in mask_shares.items() if share > MOST_OF_THE_IMAGE),
        # How train would read 16-bit and float files (data/bit_depth.py), and the images beyond that.
        "bit_depth": depth,
        # Goods and defects taken differently: a model can learn that instead of the defect (data/confounds.py).
        "taken_differently": taken_differently([s.path for s in dataset.samples if s.label == 0], [s.path for s in dataset.samples if s.label == 1]),
        "unreadable": unreadable,
        "duplicates": duplicates,
        "skipped_files": [str(p) for p in dataset.skipped],
    }


def _bit_depth(values_found: dict[Path, SixteenBit | Spread | SixteenBitColour], fitted_on) -> tuple[dict | None, Windows]:
    """The windows train would read 16-bit and float files on, from the goods it fits on, with the
    images whose values go beyond them (they saturate); the facts None where no good is such a file."""
    depth = bit_depth_of([values_found[s.path] for s in fitted_on if s.label == 0 and s.path in values_found])
    if not depth.reason:
        return None, depth.windows
    beyond = [path for path, found in values_found.items() if depth.windows.saturates(found)]
    return {**depth.to_dict(), "saturated": sorted(map(str, beyond))}, depth.windows


def _mask_facts(mask: Path, image_size: tuple[int, int]) -> tuple[str | None, float | None]:
    """From one read of a mask: its 'WxH' where its width / height differs from its image's by over
    1 % (else None), and the share of its pixels it marks (``images.binary_mask``). (None, None)
    where it does not open: an unreadable mask is eval's to report, where it is read."""
    try:
        with Image.open(mask) as m:
            width, height = m.size
            share = float(np.mean(np.asarray(binary_mask(m)) > 0))
    except (OSError, ValueError):
        return None, None
    same = abs(width / height - image_size[0] / image_size[1]) <= 0.01 * image_size[0] / image_size[1]
    return (None if same else f"{width}x{height}"), share


def _orientation(samples, windows: Windows) -> dict | None:
    """What ``data/orientation.py`` says of the goods train would measure (None with fewer than 2 readable)."""
    images = measured_goods([s.path for s in samples if s.label == 0], windows)
    return orientation(images).to_dict() if len(images) >= 2 else None


def _levels(samples, windows: Windows) -> dict | None:
    """What ``data/levels.py`` says of the goods train would measure (None with fewer than 2 readable)."""
    images = readable_images(goods_sample([s.path for s in samples if s.label == 0]), windows=windows)
    return levels(images).to_dict() if len(images) >= 2 else None
