"""What the int8 backbone and the int8 (or bfloat16) bank search change in the scores.

On the accuracy topic's cross-validation folds (``folds.run``), the default method fitted six
ways: the default (int8 backbone; the search's products in int8 where the CPU has VNNI, else in
bfloat16 where it has that), ``--precision fp32`` (the backbone every model had before), and
controls: fp32 refitted with ``--seed`` 1, 2 and 3 (other folds and coreset starts: what a refit
alone flips), and fp32 whose every feature map is perturbed by ``PERTURBATION`` (relative, in the
fit and in the scoring), far less than int8 changes them: the verdicts the smallest change of the
features flips. The default model is also scored with the search in float32.

Each path's verdicts are counted against another's twice: at its own threshold, and at the
threshold that best matches the other's verdicts on the held-out scores (``fewest_flips``), which
no rule for choosing a threshold can beat: what the scores alone disagree on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from benchmarks import folds
from benchmarks.common import fmt, mean, samples_of, shipped_options

TITLE = "What int8 changes in the scores"
# Relative size of the perturbation control's noise; int8's features differ from fp32's by about
# 0.25 of their norm (median cosine 0.96-0.97).
PERTURBATION = 1e-4
DEFAULT, FP32 = "default (int8 backbone, int8 search)", "fp32 backbone (before)"
REFIT_SEEDS = (1, 2, 3)
REFITS = {f"fp32, refitted with --seed {seed} (control)": seed for seed in REFIT_SEEDS}
PERTURBED = f"fp32, features perturbed by {PERTURBATION:.0e} (control)"
# name -> what differs from the shipped options
PATHS = {DEFAULT: {}, FP32: {"precision": "fp32"}, **{name: {"precision": "fp32", "seed": seed} for name, seed in REFITS.items()},
         PERTURBED: {"precision": "fp32"}}
FLOAT32_SEARCH = "default model, float32 search"
# each path's verdicts are compared with these
AGAINST = {DEFAULT: FP32, **dict.fromkeys(REFITS, FP32), PERTURBED: FP32, FLOAT32_SEARCH: DEFAULT}


def forced_search(kind: str):
    """The bank search's products in ``kind`` (``coreset.search_kind``) on any CPU, while inside."""
    from anomalycli import coreset

    return mock.patch.object(coreset, "search_kind", lambda device: kind)


def float32_search():
    return forced_search("float32")


def perturbed_features(size: float = PERTURBATION):
    """Every fp32 feature map times (1 + ``size`` x standard normal noise, the same for the same
    shape), while inside: a backbone imperceptibly different from fp32, to fit and score with."""
    from anomalycli import backbones

    forward = backbones.FeatureExtractor.forward

    def perturbed(self, x, deep=False):
        maps = forward(self, x, deep)
        return [m * (1 + size * torch.randn(m.shape, generator=torch.Generator().manual_seed(0))) for m in maps]

    return mock.patch.object(backbones.FeatureExtractor, "forward", perturbed)


# name -> what each path's fits and scores run inside
AROUND = {PERTURBED: perturbed_features}


def run(data_sets: list[Path], quick: bool, log=print) -> dict:
    runs = []
    for data in data_sets:
        samples = samples_of(data, quick)
        cv = folds.cv_folds(samples, 2 if quick else 5)
        paths = {}
        for name, changes in PATHS.items():
            log(f"  {data.name}: {name}")
            variants = {FLOAT32_SEARCH: float32_search} if not changes else None
            with AROUND.get(name, contextlib.nullcontext)():
                paths[name] = [o.to_json() for o in folds.run(shipped_options(data, samples, quick=quick, **changes), cv, variants=variants, log=log)]
        runs.append({"data": data.name, "method": shipped_options(data, samples).method, "paths": paths})
    return {"runs": runs}


def _outcomes(run: dict, name: str) -> tuple[list[folds.Outcome], str | None]:
    """The outcomes behind a path name, and the variant of them it is (the float32-search rescoring)."""
    if name == FLOAT32_SEARCH:
        return folds.outcomes_from(run["paths"][DEFAULT]), FLOAT32_SEARCH
    return folds.outcomes_from(run["paths"][name]), None


def fewest_flips(scores, verdicts) -> int:
    """The fewest of ``verdicts`` that flagging ``scores >= t`` disagrees with, over every threshold t."""
    order = np.argsort(scores, kind="stable")
    flagged = np.asarray(verdicts, dtype=bool)[order]
    # Cutting below sorted position i: the flagged ones under it and the unflagged ones from it on disagree.
    flagged_below = np.concatenate([[0], np.cumsum(flagged)])
    unflagged_from = np.concatenate([np.cumsum((~flagged)[::-1])[::-1], [0]])
    # Tied scores cannot be cut apart: only cuts between different scores (and at both ends) count.
    sorted_scores = np.asarray(scores)[order]
    cuts = np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1], [True]])
    return int((flagged_below + unflagged_from)[cuts].min())


def summary(run: dict) -> dict:
    rows = {}
    # Results from before a path was added lack it.
    for name in [*(n for n in PATHS if n in run["paths"]), FLOAT32_SEARCH]:
        outcomes, variant = _outcomes(run, name)
        points = [folds.measured(o, variant) for o in outcomes]
        row = {"auroc": mean(folds.auroc(o, variant) for o in outcomes), "recall": mean(p["recall"] for p in points),
               "false_alarm_rate": mean(p["false_alarm_rate"] for p in points)}
        if name in AGAINST:
            others, other_variant = _outcomes(run, AGAINST[name])
            flips = sum(int((a.flagged(variant) != b.flagged(other_variant)).sum()) for a, b in zip(outcomes, others))
            fewest = sum(fewest_flips(a.scores(variant), b.flagged(other_variant)) for a, b in zip(outcomes, others))
            row["flips"] = (AGAINST[name], flips, sum(len(o.labels) for o in outcomes))
            row["fewest_flips"] = fewest
        rows[name] = row
    return rows


def headline(result: dict, data: str) -> dict:
    run = next((r for r in result["runs"] if r["data"] == data), None)
    if run is None:
        return {}
    rows = summary(run)
    default, before = rows[DEFAULT], rows[FP32]

    def share(row: dict) -> tuple[float, float]:
        _, flips, n = row["flips"]
        return flips / n, row["fewest_flips"] / n

    def shares(names) -> str:
        found = [share(rows[name]) for name in names if name in rows]
        if not found:
            return "-"
        own, best = zip(*found)
        return f"{min(own):.1%}-{max(own):.1%} ({min(best):.1%}-{max(best):.1%})" if len(found) > 1 else f"{own[0]:.1%} ({best[0]:.1%})"

    return {"int8 default against fp32: AUROC change": f"{default['auroc'] - before['auroc']:+.4f}",
            "verdicts flipped against the fp32 fit, each at its own threshold (at the best one): int8 default / fp32 refitted with "
            f"seeds {', '.join(map(str, REFIT_SEEDS))} / fp32 features perturbed by {PERTURBATION:.0e}":
            " / ".join(shares(names) for names in ([DEFAULT], REFITS, [PERTURBED]))}


def section(result: dict) -> str:
    lines = ["Cross-validated as in the separation table, the default method fitted each way on the same folds; each path at its own "
             "threshold. Flipped = held-out images whose verdict differs from the path named, on the same images. At the best "
             "threshold = the fewest flips any threshold on this path's held-out scores gives: what the scores themselves disagree "
             "on, which no rule for choosing a threshold can go under. "
             f"The controls are fp32 fits too: refitted with seeds {', '.join(map(str, REFIT_SEEDS))} (other cross-fitting folds and "
             f"coreset starts), and with every feature map multiplied by 1 + {PERTURBATION:.0e} x normal noise in the fit and the "
             "scoring, a change thousands of times smaller than int8's (whose features are at median cosine 0.96-0.97 of fp32's). "
             "The refits say what a refit alone flips, the perturbation what the smallest change of the features flips (the coreset's "
             "greedy picks and the threshold's best cut follow it). "
             "The fit times of int8 and fp32 are in the speed table.", "",
             "| data | path | AUROC (mean of folds) | recall | false alarms | verdicts flipped | at the best threshold |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in result["runs"]:
        for name, row in summary(run).items():
            flipped = best = ""
            if "flips" in row:
                other, k, n = row["flips"]
                flipped = f"{k} of {n} ({k / n:.1%}) against {other.split(' (')[0]}"
                best = f"{row['fewest_flips']} ({row['fewest_flips'] / n:.1%})"
            lines.append(f"| {run['data']} ({run['method']}) | {name} | {fmt(row['auroc'], 4)} | {fmt(row['recall'])} | "
                         f"{fmt(row['false_alarm_rate'])} | {flipped} | {best} |")
    return "\n".join(lines)
