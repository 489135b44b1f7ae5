"""Do new images look like the training data? A check that needs no labels.

A model's verdicts hold for images like the ones it was calibrated on. When the line changes
(lighting, focus, camera, a new batch of material) good parts start scoring higher and are
flagged far more often than the model announced, with no error anywhere. This module notices.

What it compares, for a batch of scored images against what the model file keeps of training:

- **the scores' good-looking part**: the share of the batch scoring below the training goods'
  median out-of-fold score. Half of a batch of good parts would; defects almost never do, so even
  with ``DEFECT_SHARE`` of defects at least about a third must. Far fewer means that the good
  parts themselves now score higher.
- **the share flagged**, against what the announced false-alarm rate and ``DEFECT_SHARE`` of
  defects can explain at most.
- **image statistics** (``STATS``: brightness, contrast, sharpness of the model-size image, cheap
  to compute from the decoded pixels): the share of the batch outside the central
  ``COVERAGE`` range of the training goods, against what the training goods (and, up to
  ``DEFECT_SHARE``, the training defects) put there.

Each comparison is a one-sided binomial test whose null hypothesis allows up to ``DEFECT_SHARE``
of defects, so a batch with many defects is not called drift. Drift is called when a test is
significant at ``ALPHA`` over the number of tests (Bonferroni) and its share is at least
``MIN_EFFECT`` beyond what the null allows (a huge batch should not be stopped for a trifle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import bdtr, bdtrc, betaincinv  # binom.cdf, binom.sf, beta.ppf without scipy.stats' 0.5 s import

STATS = ("brightness", "contrast", "sharpness")
# What a batch outside the training range on the low / high side is, in words.
SIDES = {
    "brightness": ("darker", "brighter"),
    "contrast": ("flatter (less contrast)", "more contrasted"),
    "sharpness": ("blurrier", "sharper or noisier"),
}
DEFECT_SHARE = 0.3  # a batch may hold this share of defects without being called drift
ALPHA = 0.01  # the chance, over all tests together, of calling an in-distribution batch drift
COVERAGE = 0.95  # the training goods' central range of each image statistic
MIN_EFFECT = 0.10  # the least share beyond the null's bound that is called drift: quantile ranges from a few hundred images are themselves uncertain
CONFIDENCE = 0.95  # of the bounds on the training rates (they are estimated from finite samples)


def image_stats(images) -> np.ndarray:
    """(N, len(STATS)) statistics of uint8 images N x 3 x S x S (the model's input, before
    normalising; a numpy array or a CPU tensor).

    Sharpness is the mean absolute Laplacian over the grey level's standard deviation: blur
    lowers it, sensor noise raises it, and a change of contrast alone leaves it unchanged. It runs
    on every predicted image, so it is written for speed: about 0.6 ms an image at 320 px
    (integer channel sums, the Laplacian from shifted slices).
    """
    images = np.asarray(images)
    # Three times the grey level (0..765) in int16, the channels added one by one: numpy's sum over
    # the channel axis took 1.4 ms an image, these adds 0.2. The Laplacian is then exact in int16.
    total = images[:, 0].astype(np.int16)
    total += images[:, 1]
    total += images[:, 2]
    grey = total.astype(np.float32) / np.float32(3 * 255.0)
    brightness = grey.mean((1, 2))
    contrast = grey.std((1, 2), ddof=1)  # as torch.std, which reference statistics of older model files came from
    laplacian = total[:, :-2, 1:-1] + total[:, 2:, 1:-1] + total[:, 1:-1, :-2] + total[:, 1:-1, 2:] - 4 * total[:, 1:-1, 1:-1]
    sharpness = np.abs(laplacian).mean((1, 2), dtype=np.float32) / np.float32(3 * 255.0) / (contrast + 1e-3)
    return np.stack([brightness, contrast, sharpness], 1).astype(np.float64)


def reference(good_stats: np.ndarray, defect_stats: np.ndarray | None = None) -> dict:
    """What the model file keeps for the check: the training images' statistics, rounded (JSON)."""

    def columns(values):
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(STATS))
        return {name: [float(f"{v:.5g}") for v in values[:, i]] for i, name in enumerate(STATS)}

    empty = np.empty((0, len(STATS)))
    return {"good": columns(good_stats), "defect": columns(empty if defect_stats is None else defect_stats)}


@dataclass
class Test:
    what: str  # "score", "flagged" or an image statistic
    share: float  # of the batch on the tested side
    bound: float  # the most (or, for "score", the least) share the null allows
    p_value: float
    side: str  # in words: "darker", "higher", ...
    drift: bool = False

    def sentence(self) -> str:
        percent = f"{100 * self.share:.0f}%"
        if self.what == "score":
            return (
                f"scores sit higher: {percent} of the images score below the training goods' median, "
                f"at least {100 * self.bound:.0f}% would (p={self.p_value:.1g})"
            )
        if self.what == "flagged":
            return (
                f"{percent} flagged, where the announced false-alarm rate and up to {100 * DEFECT_SHARE:.0f}% defects "
                f"explain at most {100 * self.bound:.0f}% (p={self.p_value:.1g})"
            )
        return (
            f"{percent} of the images are {self.side} than {100 * COVERAGE:.0f}% of the training goods, "
            f"at most {100 * self.bound:.0f}% would be (p={self.p_value:.1g})"
        )


@dataclass
class DriftReport:
    checked: bool
    n_images: int = 0
    drift: bool = False
    tests: list[Test] = field(default_factory=list)
    message: str = ""  # one line: 'drift: ...' when drift is called, else why there was no check

    def to_dict(self) -> dict:
        return asdict(self)


UNAVAILABLE = "drift check unavailable: this model file predates it (anomaly adapt or a new anomaly train adds it)"


def _upper(k: int, n: int) -> float:
    """An upper ``CONFIDENCE`` bound on a rate seen k times in n (1 when n is 0)."""
    return 1.0 if n == 0 else float(betaincinv(k + 1, max(n - k, 1), CONFIDENCE))


def _lower(k: int, n: int) -> float:
    return 0.0 if n == 0 or k == 0 else float(betaincinv(k, n - k + 1, 1 - CONFIDENCE))


def _mixture(good: float, defect: float, worst) -> float:
    """The null's bound: up to DEFECT_SHARE defects, whichever share is worse for the test."""
    return worst(good, (1 - DEFECT_SHARE) * good + DEFECT_SHARE * defect)


def score_tests(raw: np.ndarray, calibration) -> list[Test]:
    """The score and flagged-share tests, from the calibration scores the model keeps."""
    scores, labels = np.asarray(calibration.scores, dtype=float), np.asarray(calibration.labels, dtype=int)
    goods, defects = scores[labels == 0], scores[labels == 1]
    n = len(raw)
    median = float(np.median(goods))
    # Good parts below the median: about half (a lower bound, from the finite training sample).
    good_low = _lower(int((goods < median).sum()), len(goods))
    defect_low = _lower(int((defects < median).sum()), len(defects)) if len(defects) else 0.0
    low_bound = _mixture(good_low, defect_low, min)
    k_low = int((raw < median).sum())
    tests = [Test("score", k_low / n, low_bound, float(bdtr(k_low, n, low_bound)), "higher")]
    good_flagged = _upper(int((goods >= calibration.threshold).sum()), len(goods))
    flagged_bound = _mixture(good_flagged, 1.0, max)
    k_flagged = int((raw >= calibration.threshold).sum())
    tests.append(Test("flagged", k_flagged / n, flagged_bound, float(bdtrc(k_flagged - 1, n, flagged_bound)), "more"))
    return tests


def stat_tests(stats: np.ndarray, ref: dict) -> list[Test]:
    """One test per image statistic: the share outside the training goods' central range."""
    tests = []
    tail = (1 - COVERAGE) / 2
    for i, name in enumerate(STATS):
        goods = np.asarray(ref["good"].get(name, []), dtype=float)
        if len(goods) < 10:
            continue
        lo, hi = np.quantile(goods, [tail, 1 - tail])
        defects = np.asarray(ref["defect"].get(name, []), dtype=float)
        good_out = _upper(int(((goods < lo) | (goods > hi)).sum()), len(goods))
        defect_out = _upper(int(((defects < lo) | (defects > hi)).sum()), len(defects))
        bound = _mixture(good_out, defect_out, max)
        values = stats[:, i]
        below, above = int((values < lo).sum()), int((values > hi).sum())
        k = below + above
        side = SIDES[name][0] if below >= above else SIDES[name][1]
        tests.append(Test(name, k / len(values), bound, float(bdtrc(k - 1, len(values), bound)), side))
    return tests


def check(model, raw: np.ndarray, stats: np.ndarray | None, model_name: str = "MODEL") -> DriftReport:
    """Whether the readable images' raw scores (and, where given, their ``image_stats``) look
    like the model's training data. A model file without a reference gets ``UNAVAILABLE``.
    ``model_name`` goes into the adapt command the message suggests."""
    ref = model.config.get("drift")
    raw = np.asarray(raw, dtype=float)
    if ref is None or not model.calibration.scores:
        return DriftReport(False, len(raw), message=UNAVAILABLE)
    if len(raw) == 0:
        return DriftReport(False, 0, message="drift check skipped: no readable images")
    tests = score_tests(raw, model.calibration)
    if stats is not None and len(stats) == len(raw):
        tests += stat_tests(np.asarray(stats, dtype=float), ref)
    level = ALPHA / len(tests)
    for test in tests:
        beyond = test.bound - test.share if test.what == "score" else test.share - test.bound
        test.drift = test.p_value < level and beyond >= MIN_EFFECT
    drifted = [t for t in tests if t.drift]
    report = DriftReport(True, len(raw), bool(drifted), tests)
    if drifted:
        # The two surest differences, then the share flagged (significant or not: the user's cost).
        reasons = sorted((t for t in drifted if t.what != "flagged"), key=lambda t: t.p_value)[:2]
        flagged = next(t for t in tests if t.what == "flagged")
        report.message = (
            f"drift: these {len(raw)} images do not look like the training data: "
            + "; ".join(t.sentence() for t in [*reasons, flagged])
            + f". Verdicts may not hold: adapt the model with 5 to 50 good images of this line: anomaly adapt {model_name} GOOD_IMAGES/"
        )
    return report


def adapted_reference(ref: dict, new_good_stats: np.ndarray) -> dict:
    """The reference after ``anomaly adapt``: the training images' statistics moved by the median
    shift the new good images show (the whole line changed, defects too), and the new goods."""
    new_good_stats = np.asarray(new_good_stats, dtype=float).reshape(-1, len(STATS))

    def table(kind: str) -> np.ndarray:
        return np.stack([np.asarray(ref[kind].get(name, []), dtype=float) for name in STATS], 1)

    goods = table("good")
    shift = np.median(new_good_stats, 0) - np.median(goods, 0)
    return reference(np.concatenate([goods + shift, new_good_stats]), table("defect") + shift)
