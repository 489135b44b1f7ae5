"""The operating point: does what calibration announces hold on held-out images?

No fits of its own: it reads the held-out scores of the accuracy topic (``folds.run``) and
compares, fold by fold, the recall and false-alarm rate at the model's own threshold with what
the model announced when it was fitted.
"""

from __future__ import annotations

from benchmarks import folds
from benchmarks.common import mean, percent

TITLE = "The operating point: announced against measured"


def consistent(rate: float | None, n: int, expected: float) -> bool | None:
    """Whether a fold's measured rate (of n images) is what the announced rate predicts: two-sided binomial test at 5 %.

    The announced interval is for the rate itself; a fold of 10 defects can only measure 0.8, 0.9
    or 1.0, so 1.0 falls outside an interval of 0.77-0.96 while being what 0.9 predicts.
    """
    from scipy.stats import binomtest

    if rate is None or not n:
        return None
    return bool(binomtest(round(rate * n), n, min(max(expected, 1e-9), 1 - 1e-9)).pvalue >= 0.05)


def summary(outcomes: list[folds.Outcome]) -> dict:
    rows = []
    for o in outcomes:
        m = folds.measured(o)
        rows.append(
            {
                **m,
                "expected_recall": o.expected["recall"],
                "expected_false_alarm_rate": o.expected["false_alarm_rate"],
                "recall_consistent": consistent(m["recall"], m["n_anomaly"], o.expected["recall"]),
                "false_alarms_consistent": consistent(m["false_alarm_rate"], m["n_normal"], o.expected["false_alarm_rate"]),
            }
        )
    count = lambda key: f"{sum(bool(r[key]) for r in rows)}/{sum(r[key] is not None for r in rows)}"  # noqa: E731
    return {
        "expected_recall": mean(r["expected_recall"] for r in rows),
        "recall": mean(r["recall"] for r in rows),
        "expected_false_alarm_rate": mean(r["expected_false_alarm_rate"] for r in rows),
        "false_alarm_rate": mean(r["false_alarm_rate"] for r in rows),
        "recall_consistent": count("recall_consistent"),
        "false_alarms_consistent": count("false_alarms_consistent"),
        "calibration_images": outcomes[0].calibration_images if outcomes else None,
    }


def headline(accuracy: dict, data: str) -> dict:
    from benchmarks.accuracy import default_run

    run = default_run(accuracy, data)
    if run is None:
        return {}
    s = summary(folds.outcomes_from(run["cv"]))
    return {
        "recall at the announced point: announced → measured": f"{percent(s['expected_recall'])} → {percent(s['recall'])} ({s['recall_consistent']} folds consistent)",
        "false alarms: announced → measured": f"{percent(s['expected_false_alarm_rate'])} → {percent(s['false_alarm_rate'])} ({s['false_alarms_consistent']} folds consistent)",
    }


def section(accuracy: dict) -> str:
    lines = [
        "The same fits as the separation table. At each model's own threshold (the default rule), on its held-out fold: "
        "the recall and false-alarm rate calibration announced and those measured (means over folds). Consistent = folds "
        "whose measured counts a two-sided binomial test (5 %) finds in line with the announced rate. Leave-one-type-out "
        "rows: the recall announced is for the defect types the model saw; a type never seen is what it measures.",
        "",
        "| data | method | held out | recall announced | measured | consistent | false alarms announced | measured | consistent | calibrated on (good + defective) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in accuracy["runs"]:
        for what, key in (("5 folds", "cv"), ("each type withheld", "loto")):
            if not run[key]:
                continue
            s = summary(folds.outcomes_from(run[key]))
            good, defective = s["calibration_images"]
            lines.append(
                f"| {run['data']} | {run['method']} | {what} | {percent(s['expected_recall'])} | {percent(s['recall'])} | {s['recall_consistent']} "
                f"| {percent(s['expected_false_alarm_rate'])} | {percent(s['false_alarm_rate'])} | {s['false_alarms_consistent']} | {good} + {defective} |"
            )
    return "\n".join(lines)
