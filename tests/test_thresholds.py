import numpy as np
import pytest
from sklearn import metrics as skm

from anomalycli.errors import UserError
from anomalycli.judgement.metrics import operating_point
from anomalycli.judgement.thresholds import NO_ANOMALY_FPR, OperatingRule, calibrate, trade_off


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


def test_no_anomalies_gives_a_threshold_over_the_goods_and_a_warning_with_its_interval():
    scores = np.linspace(0, 1, 200)
    calibration, warning = calibrate(np.zeros(200), scores, OperatingRule())
    assert "no labelled defects: the threshold is set on 200 good images alone" in warning
    assert np.mean(scores >= calibration.threshold) <= NO_ANOMALY_FPR
    calibration, _ = calibrate(np.zeros(200), scores, OperatingRule("fpr", 0.05))
    assert 0.04 <= np.mean(scores >= calibration.threshold) <= 0.05


def test_a_rule_that_measures_defects_is_refused_where_none_are_labelled_not_swapped_for_another():
    scores = np.linspace(0, 1, 200)
    for rule, option in ((OperatingRule("recall", 0.9), "--target-recall"), (OperatingRule("f1", 0.1), "--defect-rate")):
        with pytest.raises(UserError, match=f"{option} needs labelled defective images to measure, and there are none \\(200 good"):
            calibrate(np.zeros(200), scores, rule)
        labels = np.r_[np.zeros(200), np.ones(3)]
        assert calibrate(labels, np.r_[scores, [2.0, 2.1, 2.2]], rule)[0].threshold <= 2.0  # with defects it measures them


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


def test_a_few_goods_threshold_announces_an_interval_that_holds_and_says_how_many_more_goods_would_tighten_it():
    from anomalycli.judgement.thresholds import goods_needed, goods_only_point

    _, warning = calibrate(np.zeros(16), np.linspace(0, 1, 16))
    assert "flags about 5.9% of good parts (95% interval 0.2%-20.6%)" in warning and "83 more good images would bring it to 1.0%" in warning
    assert goods_needed(0.01) == 99 and goods_needed(0.05) == 19
    # Whatever the goods' scores look like, the share of new goods over the threshold lies in the
    # announced interval in about 95 % of fits (its mean at the announced rate).
    rng = np.random.default_rng(0)
    for n, max_fpr in ((4, 0.01), (16, 0.01), (60, 0.05)):
        inside, rates = 0, []
        for _ in range(400):
            goods = rng.lognormal(0, 0.5, n)
            calibration, _ = calibrate(np.zeros(n), goods, OperatingRule("fpr", max_fpr))
            rate = float(np.mean(rng.lognormal(0, 0.5, 4000) >= calibration.threshold))
            low, high = calibration.expected["false_alarm_rate_ci"]
            inside += low <= rate <= high
            rates.append(rate)
        assert 0.92 <= inside / 400 <= 0.98, (n, inside)
        assert abs(np.mean(rates) - goods_only_point(n, max_fpr)["false_alarm_rate"]) < 0.02
