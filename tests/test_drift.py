import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter

from anomalycli.detection.methods import AnomalyModel
from anomalycli.judgement import drift
from anomalycli.judgement.thresholds import calibrate
from tests.conftest import run_cli


def _model(seed=0, n_good=300, n_defect=50):
    """A model stand-in: out-of-fold scores N(0, 1) for goods and N(3, 1) for defects, image statistics N(0.5, 0.05)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_good, int), np.ones(n_defect, int)]
    calibration, _ = calibrate(labels, rng.normal(3.0 * labels, 1.0))
    stats = rng.normal(0.5, 0.05, (len(labels), len(drift.STATS)))
    return SimpleNamespace(config={"drift": drift.reference(stats[labels == 0], stats[labels == 1])}, calibration=calibration)


def _batch(rng, n, defect_share, score_shift=0.0, brightness_shift=0.0):
    n_defect = int(round(n * defect_share))
    raw = np.r_[rng.normal(score_shift, 1, n - n_defect), rng.normal(3.0 + score_shift, 1, n_defect)]
    stats = rng.normal(0.5, 0.05, (n, len(drift.STATS)))
    stats[:, 0] += brightness_shift
    return raw, stats


@pytest.mark.parametrize("n", [20, 50, 200])
def test_in_distribution_batches_with_up_to_30_percent_defects_are_rarely_called_drift(n):
    model, rng = _model(), np.random.default_rng(1)
    for share in (0.0, 0.1, 0.3):
        called = [drift.check(model, *_batch(rng, n, share)).drift for _ in range(100)]
        assert sum(called) <= 5, (n, share, sum(called))


def test_good_parts_scoring_higher_or_darker_images_are_called_drift():
    model, rng = _model(), np.random.default_rng(2)
    higher = [drift.check(model, *_batch(rng, 50, 0.1, score_shift=1.5)) for _ in range(20)]
    assert sum(r.drift for r in higher) >= 18
    assert "scores sit higher" in higher[0].message and higher[0].message.startswith("drift: ")
    darker_and_higher = drift.check(model, *_batch(rng, 50, 0.0, score_shift=1.5, brightness_shift=-0.2))
    assert darker_and_higher.drift and "darker" in darker_and_higher.message and "anomaly adapt MODEL" in darker_and_higher.message
    assert "\n" not in darker_and_higher.message


def test_a_change_the_scores_do_not_follow_is_a_note_not_drift():
    model, rng = _model(), np.random.default_rng(3)
    darker = drift.check(model, *_batch(rng, 50, 0.0, brightness_shift=-0.2))
    assert not darker.drift and darker.message.startswith("note: ") and "darker" in darker.message
    assert "Verdicts may not hold" not in darker.message and "the verdicts hold" in darker.message


def test_good_images_like_the_training_goods_are_told_from_darker_ones_and_no_reference_says_so():
    model, rng = _model(), np.random.default_rng(5)
    like = [drift.like_training_goods(model, _batch(rng, 10, 0.0)[1]) for _ in range(50)]
    assert sum(like) >= 48  # ALPHA: a batch like the training goods' rarely reads as changed
    assert drift.like_training_goods(model, _batch(rng, 10, 0.0, brightness_shift=-0.2)[1]) is False
    assert drift.like_training_goods(SimpleNamespace(config={}), _batch(rng, 10, 0.0)[1]) is None  # a file from before the check
    assert drift.like_training_goods(_model(n_good=8), _batch(rng, 10, 0.0)[1]) is None  # too few training goods to have a range


def test_with_labels_a_test_set_full_of_defects_is_no_finding():
    """The issue's case: a test set of 63 % defects whose good parts score as in training. Without
    labels the share flagged is more than 30 % defects explain; eval knows which are good."""
    model, rng = _model(), np.random.default_rng(4)
    raw, stats = _batch(rng, 110, 0.63)
    assert drift.check(model, raw, stats).drift
    labels = np.r_[np.zeros(110 - 69, int), np.ones(69, int)]
    labelled = drift.check(model, raw, stats, labels=labels)
    assert labelled.checked and labelled.n_images == 41 and not labelled.drift and labelled.message == ""
    darker = stats.copy()
    darker[:, 0] -= 0.2
    noted = drift.check(model, raw, darker, labels=labels)
    assert not noted.drift and noted.message.startswith("note: these 41 good images differ from the training images")
    raw_higher, _ = _batch(rng, 110, 0.63, score_shift=1.5)
    higher = drift.check(model, raw_higher, stats, labels=labels)
    assert higher.drift and higher.message.startswith("drift: these 41 good images")


def test_the_stream_check_says_drift_once_and_when_it_is_over():
    model, rng = _model(), np.random.default_rng(5)
    stream = drift.Rolling(model)
    said = []
    for shift in (0.0, 2.0, 0.0):
        raw, stats = _batch(rng, 400, 0.05, score_shift=shift)
        said += [line for r, s in zip(raw, stats) if (line := stream.add(float(r), s))]
    assert len(said) == 2, said
    assert said[0].startswith("drift: the last 200 images do not look like the training data")
    assert said[1] == "drift over: the last 200 images look like the training data again"


def test_the_stream_check_names_a_lossier_encoding_as_the_likely_cause():
    model, rng = _model(), np.random.default_rng(6)
    model.config["encoding"] = {"lossless": 300}
    for saved_as, named in (("JPEG q75", True), ("lossless", False), (None, False)):
        stream = drift.Rolling(model)
        raw, stats = _batch(rng, 200, 0.05, score_shift=2.0)
        said = [line for r, s in zip(raw, stats) if (line := stream.add(float(r), s, saved_as))]
        assert said and said[0].startswith("drift: the last")
        assert ("Likely cause: these images are JPEG at quality 75 (" in said[0]) == named, said[0]


def test_image_stats_tell_brightness_contrast_and_blur_apart(parts):
    image = Image.open(next((parts / "good").glob("*.png"))).convert("RGB")

    def stats(picture):
        return drift.image_stats(torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None])[0]

    base = stats(image)
    darker = stats(ImageEnhance.Brightness(image).enhance(0.6))
    blurred = stats(image.filter(ImageFilter.GaussianBlur(2)))
    flatter = stats(ImageEnhance.Contrast(image).enhance(0.5))
    assert darker[0] < base[0] - 0.1
    assert blurred[2] < 0.7 * base[2] and abs(blurred[0] - base[0]) < 0.02
    assert flatter[1] < 0.6 * base[1] and abs(flatter[2] - base[2]) < 0.2 * base[2]


def test_image_stats_of_a_batch_are_each_image_s_own(parts):
    # Computed an image at a time (the speed): a batch's rows are those of its images alone, and an empty batch has none.
    pictures = [np.array(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in sorted((parts / "good").glob("*.png"))[:3]]
    batch = drift.image_stats(np.stack(pictures))
    assert batch.shape == (3, len(drift.STATS)) and len({tuple(row) for row in batch}) == 3
    assert np.array_equal(batch, np.concatenate([drift.image_stats(p[None]) for p in pictures]))
    assert drift.image_stats(np.zeros((0, 3, 8, 8), np.uint8)).shape == (0, len(drift.STATS))


def test_predict_warns_on_a_darker_line_and_not_on_the_training_line(parts, patchcore_model, tmp_path):
    darker = tmp_path / "darker"
    darker.mkdir()
    for path in sorted((parts / "good").glob("*.png")):
        ImageEnhance.Brightness(Image.open(path)).enhance(0.5).save(darker / path.name)
    warned = run_cli("predict", patchcore_model, darker, "--output", tmp_path / "d.json")
    assert "drift: these 24 images do not look like the training data" in warned.output and "darker" in warned.output
    quiet = run_cli("predict", patchcore_model, parts / "good", "--output", tmp_path / "g.json")
    assert "drift" not in quiet.output

    report = json.loads((tmp_path / "d.json").read_text())["drift"]
    assert report["checked"] and report["drift"] and any(t["what"] == "brightness" and t["drift"] for t in report["tests"])
    evaluated = run_cli("eval", patchcore_model, parts, "--json", tmp_path / "e.json")
    assert "drift:" not in evaluated.output and json.loads((tmp_path / "e.json").read_text())["drift"]["checked"]


def test_a_model_file_from_before_the_check_predicts_and_says_it_is_unavailable(parts, patchcore_model, tmp_path):
    old = AnomalyModel.load(patchcore_model)
    del old.config["drift"]
    old.save(tmp_path / "old.safetensors")
    result = run_cli("predict", tmp_path / "old.safetensors", parts / "good")
    assert "of 24 images flagged as anomalies" in result.output
    lines = [line for line in result.output.splitlines() if "drift check unavailable" in line]
    assert len(lines) == 1 and "Traceback" not in result.output


def test_eval_on_a_darker_line_says_so_in_its_json_and_report(parts, patchcore_model, tmp_path):
    darker = tmp_path / "darker"
    for path in sorted(parts.glob("*/*.png")):
        (darker / path.parent.name).mkdir(parents=True, exist_ok=True)
        ImageEnhance.Brightness(Image.open(path)).enhance(0.5).save(darker / path.parent.name / path.name)
    result = run_cli("eval", patchcore_model, darker, "--json", tmp_path / "m.json", "--report", tmp_path / "report")
    # eval knows the labels: the good images alone are judged against the training goods.
    assert "drift: these 24 good images do not look like the training data" in result.output
    assert json.loads((tmp_path / "m.json").read_text())["drift"]["drift"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert '<p class="warning">drift: these 24 good images' in page
