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
of defects, so a batch with many defects is not called drift. A test fires when it is
significant at ``ALPHA`` over the number of tests (Bonferroni) and its share is at least
``MIN_EFFECT`` beyond what the null allows (a huge batch should not be stopped for a trifle).

Only the scores decide whether verdicts may not hold, so a monitor that users keep switched on
cries wolf rarely: **drift** is called when the good-looking part of the scores moved, or more
are flagged than the announced rate and ``DEFECT_SHARE`` of defects explain. A change of the
images that the scores do not follow (darker images that still score as the goods did) is a
**note**. Where the labels are known (``eval``), the good images alone are compared with the
training goods, no defect share assumed: a test set full of defects is then no finding.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from anomalycli.data import encoding
from anomalycli.judgement import binomial

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
    on every predicted image, so it is written for speed: about 0.5 ms an image at 320 px
    (integer channel sums, the Laplacian from shifted slices, one image at a time: a whole batch's
    planes at once left the CPU's cache and took twice as long).
    """
    images = np.asarray(images)
    return np.concatenate([_stats_of(images[i : i + 1]) for i in range(len(images))]) if len(images) else np.empty((0, len(STATS)))


def _stats_of(images: np.ndarray) -> np.ndarray:
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
    allowed_defects: float = DEFECT_SHARE  # the share of defects the null allows (0: the images are known goods)

    def sentence(self) -> str:
        percent = f"{100 * self.share:.0f}%"
        if self.what == "score":
            return (
                f"scores sit higher: {percent} of the images score below the training goods' median, "
                f"at least {100 * self.bound:.0f}% would (p={self.p_value:.1g})"
            )
        if self.what == "flagged":
            defects = f" and up to {100 * self.allowed_defects:.0f}% defects" if self.allowed_defects else ""
            return f"{percent} flagged, where the announced false-alarm rate{defects} explain at most {100 * self.bound:.0f}% (p={self.p_value:.1g})"
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


# The bounds on the training rates: the same few (k, n) at every check of a stream, and a quantile's
# search takes 0.25 ms, so each is computed once.
@functools.lru_cache(maxsize=4096)
def _upper(k: int, n: int) -> float:
    """An upper ``CONFIDENCE`` bound on a rate seen k times in n (1 when n is 0)."""
    return 1.0 if n == 0 else binomial.beta_quantile(k + 1, max(n - k, 1), CONFIDENCE)


@functools.lru_cache(maxsize=4096)
def _lower(k: int, n: int) -> float:
    return 0.0 if n == 0 or k == 0 else binomial.beta_quantile(k, n - k + 1, 1 - CONFIDENCE)


def _mixture(good: float, defect: float, worst, defect_share: float = DEFECT_SHARE) -> float:
    """The null's bound: up to ``defect_share`` defects, whichever share is worse for the test."""
    return worst(good, (1 - defect_share) * good + defect_share * defect)


def score_tests(raw: np.ndarray, calibration, defect_share: float = DEFECT_SHARE) -> list[Test]:
    """The score and flagged-share tests, from the calibration scores the model keeps; the null
    allows ``defect_share`` of defects in ``raw`` (0 for scores of images known to be good)."""
    scores, labels = np.asarray(calibration.scores, dtype=float), np.asarray(calibration.labels, dtype=int)
    goods, defects = scores[labels == 0], scores[labels == 1]
    n = len(raw)
    median = float(np.median(goods))
    # Good parts below the median: about half (a lower bound, from the finite training sample).
    good_low = _lower(int((goods < median).sum()), len(goods))
    defect_low = _lower(int((defects < median).sum()), len(defects)) if len(defects) else 0.0
    k_flagged = int((raw >= calibration.threshold).sum())
    low_bound = _mixture(good_low, defect_low, min, defect_share)
    k_low = int((raw < median).sum())
    tests = [Test("score", k_low / n, low_bound, binomial.cdf(k_low, n, low_bound), "higher")]
    good_flagged = _upper(int((goods >= calibration.threshold).sum()), len(goods))
    flagged_bound = _mixture(good_flagged, 1.0, max, defect_share)
    tests.append(Test("flagged", k_flagged / n, flagged_bound, binomial.sf(k_flagged - 1, n, flagged_bound), "more", allowed_defects=defect_share))
    return tests


def stat_tests(stats: np.ndarray, ref: dict, defect_share: float = DEFECT_SHARE) -> list[Test]:
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
        bound = _mixture(good_out, defect_out, max, defect_share)
        values = stats[:, i]
        below, above = int((values < lo).sum()), int((values > hi).sum())
        k = below + above
        side = SIDES[name][0] if below >= above else SIDES[name][1]
        tests.append(Test(name, k / len(values), bound, binomial.sf(k - 1, len(values), bound), side))
    return tests


def check(
    model, raw: np.ndarray, stats: np.ndarray | None, model_name: str = "MODEL", labels: np.ndarray | None = None, alpha: float = ALPHA, name: str = ""
) -> DriftReport:
    """Whether the readable images' raw scores (and, where given, their ``image_stats``) look
    like the model's training data; with ``labels`` (0 for good, one per score), the good images'.
    A model file without a reference gets ``UNAVAILABLE``. ``model_name`` goes into the adapt
    command the message suggests; ``alpha``: the chance of calling drift on a batch like the
    training data (a stream checked again and again wants a smaller one); ``name``: the images'
    in the message (default "these N images")."""
    ref = model.config.get("drift")
    raw = np.asarray(raw, dtype=float)
    defect_share = DEFECT_SHARE
    if labels is not None:
        goods = np.asarray(labels) == 0
        raw, stats, defect_share = raw[goods], None if stats is None else np.asarray(stats)[goods], 0.0
    if ref is None or not model.calibration.scores:
        return DriftReport(False, len(raw), message=UNAVAILABLE)
    if len(raw) == 0:
        return DriftReport(False, 0, message="drift check skipped: no readable " + ("good images" if labels is not None else "images"))
    tests = score_tests(raw, model.calibration, defect_share)
    if stats is not None and len(stats) == len(raw):
        tests += stat_tests(np.asarray(stats, dtype=float), ref, defect_share)
    _judge(tests, alpha)
    fired = [t for t in tests if t.drift]
    grounds = ("score", "flagged")  # what says the verdicts moved; the image statistics alone do not
    report = DriftReport(True, len(raw), any(t.what in grounds for t in fired), tests)
    if not fired:
        return report
    what = name or f"these {len(raw)} {'good images' if labels is not None else 'images'}"
    # The two surest differences, then the share flagged (significant or not: the user's cost).
    reasons = sorted((t for t in fired if t.what != "flagged"), key=lambda t: t.p_value)[:2]
    flagged = next(t for t in tests if t.what == "flagged")
    said = "; ".join(t.sentence() for t in [*reasons, flagged])
    if report.drift:
        report.message = (
            f"drift: {what} do not look like the training data: {said}. "
            f"Verdicts may not hold: adapt the model with 5 to 50 good images of this line: anomaly adapt {model_name} GOOD_IMAGES/"
        )
    else:
        report.message = f"note: {what} differ from the training images ({said}), but their scores do not follow: the verdicts hold"
    return report


def _judge(tests: list[Test], alpha: float) -> None:
    """Set each test's ``drift``: significant at ``alpha`` over the tests (Bonferroni), and beyond the null by ``MIN_EFFECT``."""
    level = alpha / len(tests)
    for test in tests:
        beyond = test.bound - test.share if test.what == "score" else test.share - test.bound
        test.drift = test.p_value < level and beyond >= MIN_EFFECT


def like_training_goods(model, good_stats: np.ndarray, alpha: float = ALPHA) -> bool | None:
    """Whether images known to be good are as bright, contrasted and sharp as the model's training
    goods (none of ``stat_tests`` fires, no defects allowed); None where the model keeps no reference
    to tell by (a file from before the drift check, or fewer than 10 training goods)."""
    ref = model.config.get("drift")
    tests = stat_tests(np.asarray(good_stats, dtype=float), ref, defect_share=0.0) if ref is not None and len(good_stats) else []
    if not tests:
        return None
    _judge(tests, alpha)
    return not any(t.drift for t in tests)


# The live stream's check (``Rolling``): its window, how often it is judged, and its chance of a
# false call per check (smaller than ALPHA: a stream is checked hundreds of times a day).
WINDOW, FIRST_CHECK, CHECK_EVERY, STREAM_ALPHA = 200, 50, 25, ALPHA / 10


class Rolling:
    """The drift check on a stream: the last ``WINDOW`` images, judged every ``CHECK_EVERY``.
    ``add`` returns a line to print when the state changes ("ok", "note", "drift")."""

    def __init__(self, model, model_name: str = "MODEL"):
        self.model, self.model_name = model, model_name
        self.raw: collections.deque = collections.deque(maxlen=WINDOW)
        self.stats: collections.deque = collections.deque(maxlen=WINDOW)
        self.encodings: collections.deque = collections.deque(maxlen=WINDOW)  # how each was saved (data/encoding.py), None unknown
        self.state, self.report, self._unchecked = "ok", DriftReport(False), 0

    def add(self, raw: float, stats: np.ndarray | None, saved_as: str | None = None) -> str:
        self.raw.append(raw)
        self.stats.append(stats)
        self.encodings.append(saved_as)
        self._unchecked += 1
        if len(self.raw) < FIRST_CHECK or self._unchecked < CHECK_EVERY:
            return ""
        self._unchecked = 0
        with_stats = all(s is not None for s in self.stats)
        name = f"the last {len(self.raw)} images"
        report = check(self.model, np.array(self.raw), np.stack(self.stats) if with_stats else None, self.model_name, alpha=STREAM_ALPHA, name=name)
        with_cause(report, self.model, lambda: encoding.counted(self.encodings))
        state = "drift" if report.drift else "note" if report.message.startswith("note:") else "ok"
        before, self.state, self.report = self.state, state, report
        if state == before or not report.checked:
            return ""
        if state == "ok":
            return f"{'drift' if before == 'drift' else 'note'} over: {name} look like the training data again"
        return report.message


def with_cause(report: DriftReport, model, judged: Callable[[], dict[str, int]]) -> DriftReport:
    """``report`` with a likely cause named where drift is called and most images were saved lossier
    than every training image; ``judged`` counts their encodings, asked only then (it may read files)."""
    cause = encoding.lossier_line(model.config.get("encoding"), judged()) if report.drift else None
    report.message += f" Likely {cause}" if cause else ""
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
