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

from anomalycli.detection.defaults import DEFAULT_IMAGE_SIZE
from benchmarks import folds
from benchmarks.common import fmt, mean, samples_of, shipped_options

TITLE = "What int8 changes in the scores"
# Relative size of the perturbation control's noise; int8's features differ from fp32's by a few
# hundredths of their norm (median cosine 0.999, "Precision on any CPU").
PERTURBATION = 1e-4
DEFAULT, FP32 = "default (int8 backbone, int8 search)", "fp32 backbone (before)"
REFIT_SEEDS = (1, 2, 3)
REFITS = {f"fp32, refitted with --seed {seed} (control)": seed for seed in REFIT_SEEDS}
PERTURBED = f"fp32, features perturbed by {PERTURBATION:.0e} (control)"
# name -> what differs from the shipped options
PATHS = {
    DEFAULT: {},
    FP32: {"precision": "fp32"},
    **{name: {"precision": "fp32", "seed": seed} for name, seed in REFITS.items()},
    PERTURBED: {"precision": "fp32"},
}
FLOAT32_SEARCH = "default model, float32 search"
# The default fit scored as on a CPU whose int8 kernels do not reproduce its features: the
# fallback predict takes (the same quantised network in float32), and the one it took before.
REFERENCE = "default model, its int8 network in float32 (the fallback where int8 kernels differ)"
OLD_FALLBACK = "default model, fp32 backbone on its int8 bank (the fallback before)"
VARIANTS = (FLOAT32_SEARCH, REFERENCE, OLD_FALLBACK)
# each path's verdicts are compared with these
AGAINST = {DEFAULT: FP32, **dict.fromkeys(REFITS, FP32), PERTURBED: FP32, **dict.fromkeys(VARIANTS, DEFAULT)}
# Images per data set whose features the int8 graphs are judged on (after as many calibration images).
COSINE_IMAGES = 16


def forced_search(kind: str):
    """The bank search's products in ``kind`` (``bank_search.search_kind``) on any CPU, while inside."""
    from anomalycli.detection import bank_search

    return mock.patch.object(bank_search, "search_kind", lambda device: kind)


def float32_search():
    return forced_search("float32")


def reference_kernels():
    """Every int8 backbone's graph on the reference kernels (``onnx_runtime.REFERENCE_KERNELS``), while inside."""
    from anomalycli.deploy import onnx_model
    from anomalycli.detection import int8_backbone

    sessions = {}

    def session(self):
        if id(self) not in sessions:
            sessions[id(self)] = onnx_model.session(self.graph.numpy().tobytes(), onnx_model.REFERENCE_KERNELS)
        return sessions[id(self)]

    return mock.patch.object(int8_backbone.Int8Extractor, "session", property(session))


def fp32_backbone():
    """Every int8 backbone's maps from its fp32 extractor, while inside: what predict fell back to before."""
    from anomalycli.detection import int8_backbone

    return mock.patch.object(int8_backbone.Int8Extractor, "forward", lambda self, x, deep=False: self.fp32(x, deep))


def perturbed_features(size: float = PERTURBATION):
    """Every fp32 feature map times (1 + ``size`` x standard normal noise, the same for the same
    shape), while inside: a backbone imperceptibly different from fp32, to fit and score with."""
    from anomalycli.detection import backbones

    forward = backbones.FeatureExtractor.forward

    def perturbed(self, x, deep=False):
        maps = forward(self, x, deep)
        return [m * (1 + size * torch.randn(m.shape, generator=torch.Generator().manual_seed(0))) for m in maps]

    return mock.patch.object(backbones.FeatureExtractor, "forward", perturbed)


# name -> what each path's fits and scores run inside
AROUND = {PERTURBED: perturbed_features}


def run(data_sets: list[Path], quick: bool, log=print, reused: dict | None = None) -> dict:
    """Fit every path on every set's folds; ``reused`` (a previous result) keeps its fp32 paths'
    fits instead, for a change that touched the int8 path only (the section says which were kept)."""
    runs = []
    for data in data_sets:
        samples = samples_of(data, quick)
        cv = folds.cv_folds(samples, 2 if quick else 5)
        kept = next((r["paths"] for r in (reused or {}).get("runs", []) if r["data"] == data.name), {})
        paths = {name: kept[name] for name in PATHS if name != DEFAULT and name in kept}
        for name, changes in PATHS.items():
            if name in paths:
                continue
            log(f"  {data.name}: {name}")
            variants = {FLOAT32_SEARCH: float32_search, REFERENCE: reference_kernels, OLD_FALLBACK: fp32_backbone} if not changes else None
            with AROUND.get(name, contextlib.nullcontext)():
                paths[name] = [o.to_json() for o in folds.run(shipped_options(data, samples, quick=quick, **changes), cv, variants=variants, log=log)]
        runs.append(
            {
                "data": data.name,
                "method": shipped_options(data, samples).method,
                "paths": paths,
                "reused": sorted(n for n in paths if n != DEFAULT and n in kept),
                "cosines": cosines(samples, shipped_options(data, samples, quick=quick), log),
            }
        )
    return {"runs": runs}


# The int8 graph's recipes: the shipped one, and the three before it (int8_backbone.quantize's options).
RECIPES = {
    "7-bit weights, the blocks at stride 4 or finer in fp32, percentile ranges (shipped)": {},
    "the same with min-max ranges (before)": {"calibration": "minmax"},
    "7-bit weights, stem and first block in fp32, min-max ranges": {"fp32_leading_convs": 3, "calibration": "minmax"},
    "8-bit weights, every convolution in int8, min-max ranges (the first)": {"seven_bit_weights": False, "fp32_leading_convs": 0, "calibration": "minmax"},
}


def cosines(samples, options, log=print) -> dict:
    """Median cosine of each recipe's int8 patch features to fp32 ones, on good images the graph was
    not calibrated on: on this CPU's kernels, its reference kernels, and an emulated AVX2 CPU's."""
    from anomalycli.data.tensors import load_all
    from anomalycli.detection import backbones, int8_backbone
    from benchmarks import emulated_cpu

    good = [s for s in samples if s.label == 0]
    size = options.image_size or DEFAULT_IMAGE_SIZE[options.method]
    calibration, judged = (load_all(good[:COSINE_IMAGES], size)[0], load_all(good[-COSINE_IMAGES:], size)[0])
    extractor = backbones.FeatureExtractor(options.backbone, backbones.build(options.backbone, options.weights)).eval()
    x = backbones.preprocess(judged, extractor.name)
    with torch.no_grad():
        fp32 = extractor(x)
    out = {"cpu": emulated_cpu_note()}
    for name, recipe in RECIPES.items():
        int8, _ = int8_backbone.quantize(extractor, calibration, deep=False, **recipe)
        row = {}
        with torch.no_grad():
            row["this CPU"] = int8_backbone.median_cosine(int8(x), fp32)
            with reference_kernels():
                row["reference kernels"] = int8_backbone.median_cosine(int8(x), fp32)
        if emulated_cpu.available():
            # two images: the emulator runs about a hundred times slower
            here, there = emulated_cpu.here_and_there(int8.graph.numpy().tobytes(), x[:2].numpy())
            row["emulated AVX2"] = int8_backbone.median_cosine([torch.from_numpy(m) for m in there], [m[:2] for m in fp32])
            row["emulated AVX2 = this CPU, to the bit"] = all(np.array_equal(a, b) for a, b in zip(here, there))
        out[name] = row
        log(f"    {name}: {row}")
    return out


# benchmarks/probes/emulated_avx2.py on both sets, 2026-12-07, Intel Xeon (AVX-512 VNNI, AMX), 2 cores, qemu-x86_64 -cpu Haswell.
EMULATED_SHIPPED = (
    "The percentile ranges (shipped) were measured where no emulator was installed for the topic; on their own "
    "(`python -m benchmarks.probes.emulated_avx2 DATA`, the hybrid's deep graph as train makes it, two goods), the emulated "
    "AVX2 CPU gives all four maps equal to this CPU's to the bit, on screws and on magtiles: the ranges do not touch what "
    "7-bit weights keep from overflowing."
)


def emulated_cpu_note() -> str:
    from anomalycli.deploy.engine_choice import cpu_class
    from benchmarks import emulated_cpu

    there = f"{emulated_cpu.EMULATOR} -cpu {emulated_cpu.EMULATED_CPU} (AVX2, no AVX-512, no VNNI)" if emulated_cpu.available() else "no emulator installed"
    return f"this CPU: {cpu_class()}; emulated: {there}"


def _outcomes(run: dict, name: str) -> tuple[list[folds.Outcome], str | None]:
    """The outcomes behind a path name, and the variant of them it is (the float32-search rescoring)."""
    if name in VARIANTS:
        return folds.outcomes_from(run["paths"][DEFAULT]), name
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
    default = folds.outcomes_from(run["paths"][DEFAULT])[0]
    for name in [*(n for n in PATHS if n in run["paths"]), *(v for v in VARIANTS if v in default.variants)]:
        outcomes, variant = _outcomes(run, name)
        points = [folds.measured(o, variant) for o in outcomes]
        row = {
            "auroc": mean(folds.auroc(o, variant) for o in outcomes),
            "recall": mean(p["recall"] for p in points),
            "false_alarm_rate": mean(p["false_alarm_rate"] for p in points),
        }
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

    return {
        "int8 default against fp32: AUROC change": f"{default['auroc'] - before['auroc']:+.4f}",
        "verdicts flipped against the fp32 fit, each at its own threshold (at the best one): int8 default / fp32 refitted with "
        f"seeds {', '.join(map(str, REFIT_SEEDS))} / fp32 features perturbed by {PERTURBATION:.0e}": " / ".join(
            shares(names) for names in ([DEFAULT], REFITS, [PERTURBED])
        ),
        "where a CPU's int8 kernels differ: verdicts flipped against the model on its own machine, by the fallback / by the fallback before": " / ".join(
            shares([name]) for name in (REFERENCE, OLD_FALLBACK)
        ),
    }


def section(result: dict) -> str:
    lines = [
        "Cross-validated as in the separation table, the default method fitted each way on the same folds; each path at its own "
        "threshold. Flipped = held-out images whose verdict differs from the path named, on the same images. At the best "
        "threshold = the fewest flips any threshold on this path's held-out scores gives: what the scores themselves disagree "
        "on, which no rule for choosing a threshold can go under. "
        f"The controls are fp32 fits too: refitted with seeds {', '.join(map(str, REFIT_SEEDS))} (other cross-fitting folds and "
        f"coreset starts), and with every feature map multiplied by 1 + {PERTURBATION:.0e} x normal noise in the fit and the "
        "scoring, a change hundreds of times smaller than int8's (whose features are at median cosine 0.999 of fp32's, table below). "
        "The refits say what a refit alone flips, the perturbation what the smallest change of the features flips (the coreset's "
        "greedy picks and the threshold's best cut follow it). "
        "The fit times of int8 and fp32 are in the speed table.",
        *[
            f"On {run['data']}, the fp32 paths' fits are kept from an earlier run (--reuse-fp32-fits, for a change to the int8 path only): {', '.join(run['reused'])}."
            for run in result["runs"]
            if run.get("reused")
        ],
        "",
        "| data | path | AUROC (mean of folds) | recall | false alarms | verdicts flipped | at the best threshold |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        for name, row in summary(run).items():
            flipped = best = ""
            if "flips" in row:
                other, k, n = row["flips"]
                flipped = f"{k} of {n} ({k / n:.1%}) against {other.split(' (')[0]}"
                best = f"{row['fewest_flips']} ({row['fewest_flips'] / n:.1%})"
            lines.append(
                f"| {run['data']} ({run['method']}) | {name} | {fmt(row['auroc'], 4)} | {fmt(row['recall'])} | "
                f"{fmt(row['false_alarm_rate'])} | {flipped} | {best} |"
            )
    lines += [
        "",
        "### Precision on any CPU",
        "",
        "The int8 graph's recipe decides whether a CPU without VNNI computes the features training did: there, ONNX Runtime's "
        "uint8 x int8 kernels add pairs of products in 16 bits (VPMADDUBSW), which 8-bit weights overflow and 7-bit ones do not. "
        "Median cosine of the patch features to fp32 ones, on good images the graph was not calibrated on; the emulated CPU "
        "runs the same graph and inputs (two images) under QEMU. The reference kernels are predict's fallback where a CPU's "
        "int8 kernels fail the model's probe check: the same quantised network, computed in float32.",
        "",
    ]
    for run in result["runs"]:
        found = run.get("cosines")
        if not found:
            continue
        lines += [
            f"{run['data']} ({found['cpu']}):",
            "",
            "| recipe | this CPU | reference kernels | emulated AVX2 | emulated AVX2 = this CPU, to the bit |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, row in found.items():
            if name != "cpu":
                lines.append(
                    f"| {name} | {fmt(row.get('this CPU'))} | {fmt(row.get('reference kernels'))} | {fmt(row.get('emulated AVX2'))} | "
                    f"{row.get('emulated AVX2 = this CPU, to the bit', 'not run')} |"
                )
        lines.append("")
    recipes = [row for run in result["runs"] for name, row in run.get("cosines", {}).items() if name != "cpu"]
    if any("emulated AVX2 = this CPU, to the bit" not in row for row in recipes):
        lines.append(EMULATED_SHIPPED)
    return "\n".join(lines)
