import numpy as np
import pytest
from sklearn import metrics as skm

from anomalycli.judgement.metrics import against_announced, binary_report, bootstrap_ci, operating_point


def test_report_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(80, int), np.ones(20, int)]
    scores = rng.normal(labels * 1.5, 1.0)
    predicted = (scores > 0.8).astype(int)
    types = ["a" if i % 2 else "b" for i in range(100)]
    report = binary_report(labels, scores, predicted, types, n_boot=200)
    assert report["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    assert report["precision"] == pytest.approx(skm.precision_score(labels, predicted))
    assert report["recall"] == pytest.approx(skm.recall_score(labels, predicted))
    assert report["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert report["average_precision"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, predicted))
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted).ravel()
    assert report["confusion_matrix"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert report["per_defect_type"]["a"]["recall"] == pytest.approx(predicted[(labels == 1) & (np.arange(100) % 2 == 1)].mean())
    low, high = report["auroc_ci"]
    assert low < report["auroc"] < high and high - low < 0.5


def test_on_good_images_alone_recall_and_f1_are_undefined_not_zero():
    scores = np.linspace(0, 1, 30)
    report = binary_report(np.zeros(30, int), scores, (scores > 0.95).astype(int), n_boot=50)
    assert report["recall"] is None and report["f1"] is None and report["f1_ci"] is None and report["auroc"] is None
    assert report["precision"] == 0.0 and report["accuracy"] == pytest.approx(28 / 30)  # 2 flagged, neither a defect
    assert binary_report(np.zeros(30, int), scores, np.zeros(30, int), n_boot=0)["precision"] is None  # nothing flagged


def test_operating_point_counts_and_wilson_intervals():
    point = operating_point([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.6, 0.3, 0.7, 0.4], threshold=0.5)
    assert point["recall"] == 0.5 and point["false_alarm_rate"] == 0.25
    assert point["recall_ci"][0] < 0.5 < point["recall_ci"][1]
    assert point["false_alarm_rate_ci"] == pytest.approx([0.0456, 0.6994], abs=1e-3)  # Wilson, 1 of 4


def test_bootstrap_intervals_match_scikit_learn_resample_by_resample():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(3)
    labels = (rng.random(60) < 0.25).astype(int)
    scores = np.round(rng.random(60) + 0.4 * labels, 1)  # rounded: many ties
    predicted = (scores >= 0.8).astype(int)
    draws = np.random.default_rng(0)
    f1s, aurocs = [], []
    for _ in range(250):
        idx = draws.integers(0, 60, 60)
        f1s.append(f1_score(labels[idx], predicted[idx], zero_division=0))
        if 0 < labels[idx].sum() < 60:
            aurocs.append(roc_auc_score(labels[idx], scores[idx]))
    got = bootstrap_ci(labels, scores, predicted, n_boot=250, seed=0)
    assert np.allclose(got["f1_ci"], np.percentile(f1s, [2.5, 97.5]))
    assert np.allclose(got["auroc_ci"], np.percentile(aurocs, [2.5, 97.5]))


def test_a_measured_point_worse_than_announced_beyond_chance_is_named():
    announced = {"recall": 0.92, "false_alarm_rate": 0.071}
    # The two cases: 78.3 % of 69 defects caught at 512 px; 44 % of 54 good tires flagged.
    misses = against_announced(announced, {"recall": 54 / 69, "n_anomaly": 69, "false_alarm_rate": 24 / 54, "n_normal": 54})
    assert len(misses) == 2 and misses[0].startswith("defects caught 78.3% of 69") and "good parts flagged 44.4% of 54" in misses[1]
    # Better than announced, or worse by what chance explains on 10 defects: nothing to say.
    assert against_announced(announced, {"recall": 1.0, "n_anomaly": 10, "false_alarm_rate": 0.0, "n_normal": 40}) == []
    assert against_announced(announced, {"recall": 0.8, "n_anomaly": 10, "false_alarm_rate": 0.1, "n_normal": 40}) == []
    assert against_announced(None, {"recall": 0.1, "n_anomaly": 10}) == []
