"""The changed line: does the drift check notice, and does ``anomaly adapt`` restore the announced point?

Per data set: the default model is fitted on folds 1-4 of the accuracy topic's 5 folds
(``folds.cv_folds``, ``folds.fit``); fold 0 is the line. Each shift (exposure, gamma, contrast,
blur, sensor noise, JPEG, rotation, scale, crop offset; a mild and a strong level) is applied to
the line's images only, written as PNG files and read by the product's own path
(``scoring.iter_scores``). For each:

- before adapting: the false-alarm rate and recall at the model's threshold, against what it announced;
- the drift check (``scoring.check_drift``) on random batches of 50 with 0, 10 and 30 % defects;
- after ``adapt.adapt`` with 5, 10 and 20 of the shifted good images: the false-alarm rate on the
  other shifted goods (never those used to adapt) against the announced upper bound, and the recall
  on the shifted defects;
- the pixel AUROC of the maps on the shifted line before adapting, and on the images left out of
  each adaptation after it (the masks moved with the image where a shift moves it);
- whether ``adapt`` warned that its good images may hold defects (``Adapted.suspect``).

And the wrong folder: the line's defective images given to ``adapt`` as goods (``DEFECT_DRAWS``
random draws of each of ``ADAPT_SIZES`` that the line has, and all of them): whether it warned.

The in-distribution rate of drift warnings comes from the unshifted line: batches of 20, 50 and
200 with 0, 10 and 30 % defects (drawn with replacement where the fold holds too few images).
"""

from __future__ import annotations

import io
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from anomalycli.data.images import open_image, to_grey_or_rgb
from anomalycli.data.layouts import Sample
from anomalycli.data.tensors import load_mask
from anomalycli.deploy.scoring import check_drift, iter_scores
from anomalycli.judgement.metrics import pixel_auroc
from anomalycli.workflows.adapt import SUSPECT_FLAGGED_SHARE, adapt
from benchmarks import folds
from benchmarks.common import samples_of, shipped_options

TITLE = "The changed line: drift check and `anomaly adapt`"
SHARES = (0.0, 0.1, 0.3)
ADAPT_SIZES = (5, 10, 20)
BATCHES = 50  # random batches per (size, defect share)
DEFECT_DRAWS = 3


def _noise(image: Image.Image, sigma: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + np.random.default_rng(0).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), image.mode)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer).convert(image.mode)


def _gamma(image: Image.Image, gamma: float) -> Image.Image:
    table = [round(255 * (i / 255) ** gamma) for i in range(256)]
    return image.point(table * len(image.getbands()))


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    fill = tuple(int(v) for v in np.median(np.asarray(image).reshape(-1, len(image.getbands())), 0))
    return image.rotate(degrees, resample=Image.BILINEAR, fillcolor=fill if len(fill) > 1 else fill[0])


def _zoom(image: Image.Image, factor: float) -> Image.Image:
    w, h = image.size
    cw, ch = w / factor, h / factor
    return image.crop(((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)).resize((w, h), Image.BILINEAR)


def _offset(image: Image.Image, fraction: float) -> Image.Image:
    pixels = np.asarray(image)
    d = max(1, int(round(fraction * min(image.size))))
    pad = ((d, d), (d, d)) + (((0, 0),) if pixels.ndim == 3 else ())
    return Image.fromarray(np.pad(pixels, pad, mode="reflect")[2 * d :, 2 * d :][: pixels.shape[0], : pixels.shape[1]], image.mode)


# name -> (transform, mild level, strong level)
SHIFTS = {
    "exposure": (lambda im, f: ImageEnhance.Brightness(im).enhance(f), 0.85, 0.65),
    "gamma": (_gamma, 1.3, 1.8),
    "contrast": (lambda im, f: ImageEnhance.Contrast(im).enhance(f), 0.8, 0.6),
    "blur (defocus)": (lambda im, f: im.filter(ImageFilter.GaussianBlur(f * min(im.size))), 0.004, 0.01),
    "sensor noise": (_noise, 4.0, 10.0),
    "JPEG quality": (_jpeg, 60, 25),
    "rotation (deg)": (_rotate, 3.0, 10.0),
    "scale": (_zoom, 1.05, 1.15),
    "crop offset": (_offset, 0.03, 0.08),
}
# The shifts that move the part in the image: its defect masks move with it.
GEOMETRIC = {"rotation (deg)", "scale", "crop offset"}
PIXEL_STEP = 4  # pixel AUROC on every fourth pixel of each map, as eval's
QUICK_SHIFTS = {"exposure": (SHIFTS["exposure"][0], 0.6, None), "sensor noise": (SHIFTS["sensor noise"][0], 12.0, None)}


def shifted_copies(samples: list[Sample], transform, level, folder: Path, geometric: bool = False) -> list[Sample]:
    folder.mkdir(parents=True)
    out = []
    for i, sample in enumerate(samples):
        path = folder / f"{i:04d}.png"
        transform(to_grey_or_rgb(open_image(sample.path)), level).save(path)
        mask = sample.mask
        if mask is not None and geometric:
            mask = folder / f"{i:04d}_mask.png"
            moved = np.asarray(transform(open_image(sample.mask).convert("L"), level)) > 127
            Image.fromarray(moved.astype(np.uint8) * 255).save(mask)
        out.append(Sample(path, sample.class_name, sample.label, sample.defect_type, mask=mask))
    return out


def rates(labels: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    """(false-alarm rate, recall)."""
    return float(flagged[labels == 0].mean()), float(flagged[labels == 1].mean()) if (labels == 1).any() else float("nan")


def score(model, samples: list[Sample], with_maps: bool = False):
    rows = list(iter_scores(model, [s.path for s in samples], with_maps=with_maps, show_progress=False))
    return rows, np.array([s.label for s in samples]), np.array([r.verdict == "anomaly" for r in rows])


def map_auroc(rows, samples: list[Sample]) -> float | None:
    """Pixel AUROC of the rows' maps against the samples' masks (goods: none), on every ``PIXEL_STEP``-th pixel;
    defects without a mask say nothing about their pixels and are left out. The maps are dropped as they are read."""
    truth, scores = [], []
    for row, sample in zip(rows, samples):
        anomaly_map, row.map = row.map, None
        if anomaly_map is None or (sample.label == 1 and sample.mask is None):
            continue
        size = anomaly_map.shape[-1]
        mask = load_mask(sample.mask, size).numpy() if sample.mask is not None else np.zeros((size, size), bool)
        truth.append(mask[::PIXEL_STEP, ::PIXEL_STEP].ravel())
        scores.append(np.asarray(anomaly_map)[::PIXEL_STEP, ::PIXEL_STEP].ravel())
    return pixel_auroc(np.concatenate(truth), np.concatenate(scores)) if truth and any(t.any() for t in truth) else None


def drift_rate(model, rows, labels, size: int, share: float, rng) -> float:
    goods, defects = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    n_defect = int(round(size * share))
    called = 0
    for _ in range(BATCHES):
        pick = np.r_[rng.choice(goods, size - n_defect, replace=size - n_defect > len(goods)), rng.choice(defects, n_defect, replace=n_defect > len(defects))]
        called += check_drift(model, [rows[i] for i in pick]).drift
    return called / BATCHES


def run(data: Path, quick: bool, log=print) -> dict:
    shifts, adapt_sizes = (QUICK_SHIFTS, (5,)) if quick else (SHIFTS, ADAPT_SIZES)
    samples = samples_of(data, quick)
    fold = folds.cv_folds(samples, 5)[0]
    line = fold.held_out
    model, _ = folds.fit(shipped_options(data, fold.training, quick=quick), fold.training)
    expected = model.calibration.expected
    rows, labels, flagged = score(model, line)
    fpr0, recall0 = rates(labels, flagged)
    rng = np.random.default_rng(0)
    out = {
        "data": data.name,
        "method": model.method,
        "announced": folds.plain(expected),
        "line": {"n_good": int((labels == 0).sum()), "n_defect": int((labels == 1).sum())},
        "unshifted": {
            "false_alarm_rate": fpr0,
            "recall": recall0,
            "drift_rate": {f"{size}@{share:g}": drift_rate(model, rows, labels, size, share, rng) for size in (20, 50, 200) for share in SHARES},
        },
        "shifts": [],
    }
    log(
        f"{data.name} ({model.method}): announced fpr {expected['false_alarm_rate']:.3f} ({expected['false_alarm_rate_ci'][1]:.3f} upper), "
        f"unshifted fpr {fpr0:.3f} recall {recall0:.3f}; in-distribution drift rate {out['unshifted']['drift_rate']}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, (transform, *levels) in shifts.items():
            for level_name, level in zip(("mild", "strong"), levels):
                if level is None:
                    continue
                moved = shifted_copies(line, transform, level, Path(tmp) / f"{name}-{level_name}".replace(" ", "_"), name in GEOMETRIC)
                rows, labels, flagged = score(model, moved, with_maps=True)
                fpr, recall = rates(labels, flagged)
                row = {
                    "shift": name,
                    "level": level_name,
                    "value": level,
                    "fpr_before": fpr,
                    "recall_before": recall,
                    "pixel_auroc_before": map_auroc(rows, moved),
                    "drift_rate_50": {f"{share:g}": drift_rate(model, rows, labels, 50, share, rng) for share in SHARES},
                    "adapted": {},
                }
                goods = np.flatnonzero(labels == 0)
                for k in adapt_sizes:
                    # A draw of its own per shift: one unlucky set of look-alike goods must not decide every row.
                    draw = np.random.default_rng(zlib.crc32(f"{name} {level_name} {k}".encode()))
                    chosen = set(draw.choice(goods, k, replace=False).tolist())
                    result = adapt(model, [moved[i] for i in sorted(chosen)])
                    adapted = result.model
                    rest = [s for i, s in enumerate(moved) if i not in chosen]
                    rest_rows, rest_labels, rest_flagged = score(adapted, rest, with_maps=True)
                    fpr_k, recall_k = rates(rest_labels, rest_flagged)
                    point = adapted.calibration.expected
                    row["adapted"][str(k)] = {
                        "fpr": fpr_k,
                        "recall": recall_k,
                        "announced_fpr": point["false_alarm_rate"],
                        "announced_fpr_upper": point["false_alarm_rate_ci"][1],
                        "announced_recall": point["recall"],
                        "pixel_auroc": map_auroc(rest_rows, rest),
                        "suspect": result.suspect,
                    }
                out["shifts"].append(row)
                log(
                    f"  {name} {level_name} ({level}): fpr {fpr:.3f} recall {recall:.3f} pixel AUROC {_auroc_text(row['pixel_auroc_before'])} "
                    f"drift@50 {row['drift_rate_50']} adapted: "
                    + ", ".join(
                        f"{k}: fpr {v['fpr']:.3f}/{v['announced_fpr_upper']:.3f} recall {v['recall']:.3f} pixel AUROC {_auroc_text(v['pixel_auroc'])}"
                        for k, v in row["adapted"].items()
                    )
                )
    out["defects_as_goods"] = defects_as_goods(model, [s for s in line if s.label == 1], adapt_sizes)
    log(f"  the line's defects given to adapt as goods: {out['defects_as_goods']}")
    return out


def defects_as_goods(model, defects: list[Sample], sizes) -> list[dict]:
    """``adapt`` given ``defects`` as good images: random draws of each size the line has, then all of them."""
    rng = np.random.default_rng(0)
    draws = [(k, rng.choice(len(defects), k, replace=False)) for k in sizes if k < len(defects) for _ in range(DEFECT_DRAWS)]
    draws += [(len(defects), np.arange(len(defects)))] if len(defects) >= min(sizes) else []
    out = []
    for k, chosen in draws:
        result = adapt(model, [Sample(defects[i].path, defects[i].class_name, 0) for i in chosen])
        out.append({"k": k, "flagged_before": result.flagged_before, "suspect": result.suspect})
    return out


def _auroc_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def headline(result: dict, data: str) -> dict:
    run = next((r for r in result["runs"] if r["data"] == data), None)
    if run is None:
        return {}
    shifts = run["shifts"]
    k = max(shifts[0]["adapted"], key=int)
    harmful = [row["fpr_before"] > run["announced"]["false_alarm_rate_ci"][1] for row in shifts]
    noticed = [row["drift_rate_50"]["0"] >= 0.5 for row in shifts]
    restored = sum(row["adapted"][k]["fpr"] <= row["adapted"][k]["announced_fpr_upper"] for row in shifts)
    caught = sum(h and n for h, n in zip(harmful, noticed))
    cried = sum(n and not h for h, n in zip(harmful, noticed))
    suspect = _suspect_counts(run)
    return {
        f"a changed line ({len(shifts)} shifts): false alarms over the announced bound / called drift (batches of 50 goods) / "
        f"within it after adapting with {k} good images": f"{sum(harmful)} / {sum(noticed)} / {restored} of {len(shifts)}",
        "the drift call on those shifts: over the bound and called / within it and called anyway": f"{caught} of {sum(harmful)} / {cried} of {len(shifts) - sum(harmful)}",
        **(
            {"adapt given the line's defective images as goods: warned (draws) / given a changed line's goods: warned anyway (shifts)": suspect}
            if suspect
            else {}
        ),
    }


def _suspect_counts(run: dict) -> str:
    """adapt's "defects among the goods?" warning: on the line's defects given as goods, and on
    each shift's goods (adapted with the most); "" for results from before the warning."""
    draws = run.get("defects_as_goods")
    if not draws:
        return ""
    k = max(run["shifts"][0]["adapted"], key=int)
    warned = sum(row["adapted"][k].get("suspect", False) for row in run["shifts"])
    return f"{sum(d['suspect'] for d in draws)} of {len(draws)} / {warned} of {len(run['shifts'])}"


def section(result: dict) -> str:
    parts = []
    for run in result["runs"]:
        ann, un = run["announced"], run["unshifted"]
        sizes = list(run["shifts"][0]["adapted"])
        lines = [
            f"**{run['data']} ({run['method']})**: announced false alarms {100 * ann['false_alarm_rate']:.1f} % (upper {100 * ann['false_alarm_rate_ci'][1]:.1f} %), "
            f"recall {100 * ann['recall']:.1f} %; the unshifted line measured {100 * un['false_alarm_rate']:.1f} % and {100 * un['recall']:.1f} % "
            f"({run['line']['n_good']} good, {run['line']['n_defect']} defective).",
            "",
            "| shift | level | false alarms before | recall before | pixel AUROC before | drift warned @50 (0/10/30 % defects) | "
            + " | ".join(f"after adapt {k}: false alarms / announced upper / recall / pixel AUROC" for k in sizes)
            + " |",
            "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in sizes) + " |",
        ]
        for row in run["shifts"]:
            warned = "/".join(f"{100 * v:.0f}" for v in row["drift_rate_50"].values())
            after = " | ".join(
                f"{100 * v['fpr']:.1f} / {100 * v['announced_fpr_upper']:.1f} / {100 * v['recall']:.1f} / {_auroc_text(v.get('pixel_auroc'))}"
                for v in row["adapted"].values()
            )
            lines.append(
                f"| {row['shift']} | {row['level']} ({row['value']}) | {100 * row['fpr_before']:.1f} % | {100 * row['recall_before']:.1f} % | "
                f"{_auroc_text(row.get('pixel_auroc_before'))} | {warned} % | {after} |"
            )
        if all(row.get("pixel_auroc_before") is not None for row in run["shifts"]):
            means = ", ".join(f"{np.mean([row['adapted'][k]['pixel_auroc'] for row in run['shifts']]):.3f} after adapting with {k}" for k in sizes)
            lines += [
                "",
                f"Pixel AUROC, mean over the {len(run['shifts'])} shifts: {np.mean([row['pixel_auroc_before'] for row in run['shifts']]):.3f} before adapting; {means}.",
            ]
        if run.get("defects_as_goods"):
            k = max(sizes, key=int)
            moved = [f"{row['shift']} {row['level']}" for row in run["shifts"] if row["adapted"][k].get("suspect")]
            draws = ", ".join(
                f"{d['k']} ({'warned' if d['suspect'] else 'not warned'}, {100 * d['flagged_before']:.0f} % flagged)" for d in run["defects_as_goods"]
            )
            lines += [
                "",
                f"`adapt` given the line's defective images as goods (a wrong folder), by the number given: {draws}. "
                f"Its warning (the model flags at least {100 * SUSPECT_FLAGGED_SHARE:.0f} % of the images, yet they are as bright, contrasted and sharp as the training goods) "
                f"on the shifted goods, adapting with {k}: {', '.join(moved) or 'none'} ({len(moved)} of the {len(run['shifts'])} shifts; "
                f"in {sum(row['fpr_before'] >= SUSPECT_FLAGGED_SHARE for row in run['shifts'])} of them the model flagged at least {100 * SUSPECT_FLAGGED_SHARE:.0f} % of all the line's shifted goods).",
            ]
        rates_in = ", ".join(f"{k.replace('@', ' images, ')} defects: {100 * v:.0f} %" for k, v in un["drift_rate"].items())
        lines += ["", f"Drift warnings on the unshifted line (batches of N images, defect share): {rates_in}."]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
