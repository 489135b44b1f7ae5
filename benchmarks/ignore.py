"""Don't-care regions on real images: a label printed where the mask says ignore.

Per data set, fold 0 of 5 held out. Every held-out image gets a label in its top-left corner (a
white card with black lines, different on every part, a quarter of the image's width and
height), as a line that sticks a date label on each part. Two models are fitted on the other
folds' images as they are: the default, and the default with ``--ignore`` on that corner. Both
judge the labelled held-out images at their own thresholds: the share of good parts flagged
(against the announced rate) and the recall on the defects that lie outside the corner (a defect
under the label is hidden by design), against the default model's recall on the same defects
without labels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from anomalycli.data.layouts import Sample
from anomalycli.deploy.scoring import iter_scores
from benchmarks import folds
from benchmarks.common import percent, samples_of, shipped_options

TITLE = "Don't-care regions: a label where the mask says ignore"
CORNER = 0.25  # of the image's width and height


def labelled_copy(sample: Sample, folder: Path, seed: int) -> Sample:
    """The sample's image with a label in its top-left corner, as a PNG in ``folder``."""
    image = Image.open(sample.path).convert("RGB")
    width, height = image.size
    w, h = int(width * CORNER), int(height * CORNER)
    draw = ImageDraw.Draw(image)
    draw.rectangle([2, 2, w - 3, h - 3], fill=(245, 245, 240))
    rng = np.random.default_rng(seed)
    step = max(3, h // 6)
    for row in range(step, h - step // 2, step):
        draw.line([(step, row), (step + int(rng.integers(w // 4, max(w // 4 + 1, w - 2 * step))), row)], fill=(20, 20, 20), width=max(1, step // 3))
    path = folder / f"{seed:05d}.png"
    image.save(path)
    return Sample(path, sample.class_name, sample.label, sample.defect_type, mask=sample.mask)


def corner_mask(folder: Path) -> Path:
    path = folder / "label-corner.png"
    size = 1000
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).rectangle([0, 0, int(size * CORNER) - 1, int(size * CORNER) - 1], fill=255)
    image.save(path)
    return path


def outside_corner(sample: Sample) -> bool:
    """Whether a defect's mask lies at least partly outside the labelled corner (no mask: yes)."""
    if not sample.mask:
        return True
    mask = np.asarray(Image.open(sample.mask).convert("L")) > 127
    h, w = mask.shape
    mask[: int(h * CORNER), : int(w * CORNER)] = False
    return bool(mask.any())


def rates(model, samples: list[Sample], defects_counted: list[bool]) -> tuple[float, float]:
    rows = list(iter_scores(model, [s.path for s in samples], show_progress=False))
    labels = np.array([s.label for s in samples])
    flagged = np.array([r.verdict == "anomaly" for r in rows])
    counted = np.array(defects_counted)
    return float(flagged[labels == 0].mean()), float(flagged[(labels == 1) & counted].mean())


def run(data_sets: list[Path], quick: bool, log=print) -> dict:
    runs = []
    for data in data_sets:
        samples = samples_of(data, quick)
        fold = folds.cv_folds(samples, 2 if quick else 5)[0]
        with tempfile.TemporaryDirectory(prefix="bench-ignore-") as tmp:
            tmp = Path(tmp)
            labelled = [labelled_copy(s, tmp, i) for i, s in enumerate(fold.held_out)]
            counted = [outside_corner(s) if s.label == 1 else False for s in fold.held_out]
            plain, _ = folds.fit(shipped_options(data, fold.training, quick=quick), fold.training)
            masked, _ = folds.fit(shipped_options(data, fold.training, quick=quick, ignore=[str(corner_mask(tmp))]), fold.training)
            out = {"data": data.name, "method": plain.method, "n_good": sum(s.label == 0 for s in labelled), "n_defects_outside": sum(counted)}
            out["announced_fpr"] = plain.calibration.expected["false_alarm_rate"]
            out["announced_fpr_masked"] = masked.calibration.expected["false_alarm_rate"]
            out["plain_clean_fpr"], out["plain_clean_recall"] = rates(plain, fold.held_out, counted)
            out["plain_labelled_fpr"], out["plain_labelled_recall"] = rates(plain, labelled, counted)
            out["masked_labelled_fpr"], out["masked_labelled_recall"] = rates(masked, labelled, counted)
        log(
            f"  {data.name}: labelled goods flagged {out['plain_labelled_fpr']:.3f} without the mask, {out['masked_labelled_fpr']:.3f} with it "
            f"(announced {out['announced_fpr_masked']:.3f}); recall outside the corner {out['masked_labelled_recall']:.3f} against {out['plain_clean_recall']:.3f}"
        )
        runs.append(out)
    return {"runs": runs}


def headline(result: dict, data: str) -> dict:
    r = next((r for r in result["runs"] if r["data"] == data), None)
    if r is None:
        return {}
    return {
        "a label where the mask says ignore: goods flagged with the mask (announced) / without; recall on defects elsewhere, with / clean": (
            f"{percent(r['masked_labelled_fpr'])} ({percent(r['announced_fpr_masked'])}) / {percent(r['plain_labelled_fpr'])}; "
            f"{percent(r['masked_labelled_recall'])} / {percent(r['plain_clean_recall'])}"
        )
    }


def section(result: dict) -> str:
    lines = [
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
        "",
        "| data | held-out goods / defects outside the corner | announced false alarms (default / with mask) | goods flagged: clean, default | labelled, default | labelled, with mask | recall outside the corner: clean, default | labelled, default | labelled, with mask |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['data']} ({r['method']}) | {r['n_good']} / {r['n_defects_outside']} | {percent(r['announced_fpr'])} / {percent(r['announced_fpr_masked'])} "
            f"| {percent(r['plain_clean_fpr'])} | {percent(r['plain_labelled_fpr'])} | {percent(r['masked_labelled_fpr'])} "
            f"| {percent(r['plain_clean_recall'])} | {percent(r['plain_labelled_recall'])} | {percent(r['masked_labelled_recall'])} |"
        )
    return "\n".join(lines)
