import numpy as np
import pytest
from sklearn import metrics as skm

from anomalycli.metrics import binary_report, calibrate


def test_report_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(80, int), np.ones(20, int)]
    scores = rng.normal(labels * 1.5, 1.0)
    predicted = (scores > 0.8).astype(int)
    types = ["a" if i % 2 else "b" for i in range(100)]
    report = binary_report(labels, scores, predicted, types, n_boot=200)
    assert report["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    assert report["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert report["average_precision"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, predicted))
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted).ravel()
    assert report["confusion_matrix"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert report["per_defect_type"]["a"]["recall"] == pytest.approx(predicted[(labels == 1) & (np.arange(100) % 2 == 1)].mean())
    low, high = report["auroc_ci"]
    assert low < report["auroc"] < high and high - low < 0.5


def test_threshold_maximises_f1_and_maps_to_one_half():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    calibration, warning = calibrate(labels, scores)
    assert warning is None
    predicted = scores >= calibration.threshold
    assert skm.f1_score(labels, predicted) == pytest.approx(max(skm.f1_score(labels, scores >= t) for t in scores))
    assert calibration.normalise(calibration.threshold) == pytest.approx(0.5)
    normalised = calibration.normalise(scores)
    assert np.all(np.diff(normalised[np.argsort(scores)]) >= 0) and normalised.min() >= 0 and normalised.max() <= 1


def test_no_anomalies_in_validation_uses_a_percentile_and_warns():
    scores = np.linspace(0, 1, 200)
    calibration, warning = calibrate(np.zeros(200), scores, max_fpr=0.05)
    assert "no anomalous images" in warning
    assert np.mean(scores >= calibration.threshold) <= 0.05


def test_prevalence_weighting_makes_the_threshold_stricter_when_anomalies_are_overrepresented():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    scores = np.r_[rng.normal(0, 1, 40), rng.normal(2, 1, 40)]
    plain, _ = calibrate(labels, scores)
    weighted, _ = calibrate(labels, scores, prevalence=0.1)
    assert weighted.threshold > plain.threshold
    assert "weighted to 10% anomalies" in weighted.rule
