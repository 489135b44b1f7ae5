import numpy as np
import pytest
from sklearn import metrics as skm

from anomalycli.metrics import NO_ANOMALY_FPR, OperatingRule, binary_report, calibrate, operating_point, trade_off


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


def _draw(n_normal, n_anomaly, seed, shift=2.0):
    rng = np.random.default_rng(seed)
    return np.r_[np.zeros(n_normal, int), np.ones(n_anomaly, int)], np.r_[rng.normal(0, 1, n_normal), rng.normal(shift, 1, n_anomaly)]


def test_default_threshold_maximises_balanced_accuracy_and_maps_to_one_half():
    labels, scores = _draw(300, 40, seed=0)
    calibration, warning = calibrate(labels, scores)
    assert warning is None and "balanced accuracy" in calibration.rule
    achieved = skm.balanced_accuracy_score(labels, scores >= calibration.threshold)
    assert achieved == pytest.approx(max(skm.balanced_accuracy_score(labels, scores >= t) for t in scores))
    assert calibration.normalise(calibration.threshold) == pytest.approx(0.5)
    normalised = calibration.normalise(scores)
    assert np.all(np.diff(normalised[np.argsort(scores)]) >= 0) and normalised.min() >= 0 and normalised.max() <= 1
    assert calibration.expected["n_normal"] == 300 and calibration.expected["n_anomaly"] == 40
    assert calibration.scores == pytest.approx(scores.tolist()) and calibration.labels == labels.tolist()


def test_the_default_does_not_depend_on_how_many_defects_were_collected():
    labels, scores = _draw(400, 400, seed=1)
    few = np.r_[np.arange(400), 400 + np.arange(0, 400, 10)]  # the same good parts, a tenth of the defects
    everything, _ = calibrate(labels, scores)
    sampled, _ = calibrate(labels[few], scores[few])
    assert abs(everything.threshold - sampled.threshold) < 0.4
    f1_few = calibrate(labels[few], scores[few], OperatingRule("f1", 40 / 440))[0]
    assert f1_few.threshold > sampled.threshold  # F1 at a low defect share is stricter: what issue 13 saw


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_target_recall_is_met_and_holds_on_held_out_data_within_its_interval(target):
    labels, scores = _draw(300, 100, seed=2)
    calibration, _ = calibrate(labels, scores, OperatingRule("recall", target))
    assert operating_point(labels, scores, calibration.threshold)["recall"] >= target  # on the calibration scores
    low, high = calibration.expected["recall_ci"]
    held_labels, held_scores = _draw(20000, 20000, seed=3)
    held_out = operating_point(held_labels, held_scores, calibration.threshold)
    assert low <= held_out["recall"] <= high
    assert "--target-recall" in calibration.rule


@pytest.mark.parametrize("max_fpr", [0.0, 0.01, 0.05, 0.1])
def test_max_false_alarm_rate_is_met_with_the_most_recall_it_allows(max_fpr):
    labels, scores = _draw(300, 60, seed=4)
    calibration, _ = calibrate(labels, scores, OperatingRule("fpr", max_fpr))
    flagged = scores >= calibration.threshold
    assert flagged[labels == 0].mean() <= max_fpr
    best = max(flagged_at[labels == 1].mean() for flagged_at in (scores >= t for t in scores) if flagged_at[labels == 0].mean() <= max_fpr)
    assert flagged[labels == 1].mean() == pytest.approx(best)
    held_labels, held_scores = _draw(20000, 10, seed=5)
    if max_fpr:
        low, high = calibration.expected["false_alarm_rate_ci"]
        assert low <= operating_point(held_labels, held_scores, calibration.threshold)["false_alarm_rate"] <= high


def test_no_anomalies_gives_a_percentile_threshold_and_a_warning():
    scores = np.linspace(0, 1, 200)
    for rule in (OperatingRule(), OperatingRule("recall", 0.9)):
        calibration, warning = calibrate(np.zeros(200), scores, rule)
        assert "no anomalous images" in warning
        assert np.mean(scores >= calibration.threshold) <= NO_ANOMALY_FPR
    calibration, _ = calibrate(np.zeros(200), scores, OperatingRule("fpr", 0.05))
    assert 0.04 <= np.mean(scores >= calibration.threshold) <= 0.05


def test_operating_point_counts_and_wilson_intervals():
    point = operating_point([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.6, 0.3, 0.7, 0.4], threshold=0.5)
    assert point["recall"] == 0.5 and point["false_alarm_rate"] == 0.25
    assert point["recall_ci"][0] < 0.5 < point["recall_ci"][1]
    assert point["false_alarm_rate_ci"] == pytest.approx([0.0456, 0.6994], abs=1e-3)  # Wilson, 1 of 4


def test_trade_off_rows_and_raw_threshold_round_trip():
    labels, scores = _draw(200, 50, seed=6)
    calibration, _ = calibrate(labels, scores)
    rows = trade_off(labels, scores, calibration)
    assert [r["max_false_alarm_rate"] for r in rows] == [0.0, 0.01, 0.05, 0.1]
    assert all(r["false_alarm_rate"] <= r["max_false_alarm_rate"] for r in rows)
    assert [r["recall"] for r in rows] == sorted(r["recall"] for r in rows)
    for row in rows:
        assert calibration.raw_threshold(row["threshold"]) == pytest.approx(row["raw_threshold"])
        flagged = calibration.normalise(scores) >= row["threshold"]
        assert flagged[labels == 1].mean() == pytest.approx(row["recall"])


def test_scores_far_above_a_recalibrated_threshold_keep_their_resolution():
    # Recalibrated on a few good images only (the 'calibrate MODEL NEW_GOODS'): the
    # threshold sits above them, and new images score far above the calibration range.
    few_goods = np.linspace(0.0, 1.0, 10)
    calibration, _ = calibrate(np.zeros(10, int), few_goods, OperatingRule("fpr", 0.1))
    labels, scores = _draw(200, 50, seed=7, shift=3.0)
    scores = scores + 3.0  # the whole line scores above every calibration score
    calibrated = calibration.normalise(scores)
    assert np.all(np.diff(calibrated[np.argsort(scores)]) > 0) and calibrated.max() < 1 and calibrated.min() > 0
    rows = trade_off(labels, scores, calibration)
    assert len({r["recall"] for r in rows}) > 1
    for a in rows:
        for b in rows:
            if (a["recall"], a["false_alarm_rate"]) != (b["recall"], b["false_alarm_rate"]):
                assert a["threshold_text"] != b["threshold_text"]
    for row in rows:  # the printed value, typed back as --threshold, gives the row's point
        flagged = calibrated >= float(row["threshold_text"])
        assert flagged[labels == 1].mean() == pytest.approx(row["recall"])
        assert flagged[labels == 0].mean() == pytest.approx(row["false_alarm_rate"])


def test_bootstrap_intervals_match_scikit_learn_resample_by_resample():
    from sklearn.metrics import f1_score, roc_auc_score

    from anomalycli.metrics import bootstrap_ci

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


def test_the_announced_recall_pays_for_choosing_the_threshold_on_few_defects():
    # Goods N(0, 1), 20 defects N(2, 1): the true recall at any threshold t is 1 - Phi(t - 2).
    from scipy.stats import norm

    in_sample, announced, true = [], [], []
    for seed in range(60):
        labels, scores = _draw(200, 20, seed=100 + seed)
        calibration, _ = calibrate(labels, scores)
        true.append(norm.sf(calibration.threshold - 2.0))
        in_sample.append(operating_point(labels, scores, calibration.threshold)["recall"])
        announced.append(calibration.expected["recall"])
        assert calibration.expected["cross_validated_folds"] == 5
    optimism = np.mean(in_sample) - np.mean(true)
    assert optimism > 0.02  # the in-sample point is optimistic ...
    assert abs(np.mean(announced) - np.mean(true)) < optimism / 2  # ... the announced one much less


def test_a_measured_point_worse_than_announced_beyond_chance_is_named():
    from anomalycli.metrics import against_announced

    announced = {"recall": 0.92, "false_alarm_rate": 0.071}
    # The two cases: 78.3 % of 69 defects caught at 512 px; 44 % of 54 good tires flagged.
    misses = against_announced(announced, {"recall": 54 / 69, "n_anomaly": 69, "false_alarm_rate": 24 / 54, "n_normal": 54})
    assert len(misses) == 2 and misses[0].startswith("defects caught 78.3% of 69") and "good parts flagged 44.4% of 54" in misses[1]
    # Better than announced, or worse by what chance explains on 10 defects: nothing to say.
    assert against_announced(announced, {"recall": 1.0, "n_anomaly": 10, "false_alarm_rate": 0.0, "n_normal": 40}) == []
    assert against_announced(announced, {"recall": 0.8, "n_anomaly": 10, "false_alarm_rate": 0.1, "n_normal": 40}) == []
    assert against_announced(None, {"recall": 0.1, "n_anomaly": 10}) == []
