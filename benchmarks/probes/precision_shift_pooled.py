"""Probe (a record, not a topic): int8 against fp32 on a changed line, read over every fold.

The precision_shift topic holds out fold 0 alone: on the screws 64 goods and 10 defects a
condition, where one pair of images moves an AUROC 0.0016 and a refit alone 0.0138 on average, so
its per-condition bar (int8 within 0.003 of fp32) sits under what it can resolve. Here each of the
accuracy topic's 5 folds is held out in turn, the default model fitted on the other four in both
precisions (seed 0), and each condition's AUROC is read on all the held-out images together (each
scored by the model that did not see it): every good and defect of the set, once.
With ``--seeds 0 1`` each precision is fitted at both seeds, and the report adds a refit's own
difference (fp32 seed 1 less seed 0) on the same images: what a gap of 0.003 is measured against.
``--calibration`` quantises the int8 models' activation ranges another way than the shipped
recipe's (``int8_backbone.quantize``); ``--conditions near`` reads the unshifted line, the mild
shifts of exposure, gamma, contrast, defocus and noise and strong gamma alone (a third of the time).

    python -m benchmarks.probes.precision_shift_pooled ../shared/data/screws [--seeds 0 1] [--calibration minmax] [--conditions near]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
from pathlib import Path

import numpy as np

from anomalycli.detection import int8_backbone
from anomalycli.judgement.metrics import auroc
from benchmarks import folds, shift
from benchmarks.common import samples_of, shipped_options

PRECISIONS = ("int8", "fp32")


def conditions() -> list[tuple]:
    return [("none", "", None, None)] + [
        (name, level_name, transform, level)
        for name, (transform, *levels) in shift.SHIFTS.items()
        for level_name, level in zip(("mild", "strong"), levels)
        if level is not None
    ]


NEAR = {("none", ""), *((name, "mild") for name in ("exposure", "gamma", "contrast", "blur (defocus)", "sensor noise")), ("gamma", "strong")}


@contextlib.contextmanager
def calibrated(calibration: str | None):
    """While inside, train's int8 graphs take their activation ranges by ``calibration`` (None: the shipped recipe's)."""
    shipped = int8_backbone.quantize
    if calibration is not None:
        int8_backbone.quantize = functools.partial(shipped, calibration=calibration)
    try:
        yield
    finally:
        int8_backbone.quantize = shipped


def main(data: Path, seeds: list[int], calibration: str | None = None, near: bool = False) -> None:
    samples = samples_of(data, False)
    read = [c for c in conditions() if not near or (c[0], c[1]) in NEAR]
    fits = [(p, seed) for seed in seeds for p in PRECISIONS]
    raw = {(c[0], c[1], fit): [] for c in read for fit in fits}
    labels = {(c[0], c[1]): [] for c in read}
    for k, fold in enumerate(folds.cv_folds(samples, 5)):
        with calibrated(calibration):
            models = {(p, seed): folds.fit(shipped_options(data, fold.training, precision=p, seed=seed), fold.training)[0] for p, seed in fits}
        with tempfile.TemporaryDirectory() as tmp:
            for name, level_name, transform, level in read:
                folder = Path(tmp) / f"{name}-{level_name}".replace(" ", "_")
                line = fold.held_out if transform is None else shift.shifted_copies(fold.held_out, transform, level, folder, name in shift.GEOMETRIC)
                labels[(name, level_name)] += [s.label for s in line]
                for fit, model in models.items():
                    scored, _, _ = shift.score(model, line)
                    raw[(name, level_name, fit)] += [r.raw for r in scored]
        print(f"{data.name}: fold {k} done", flush=True)
    print(f"{data.name}: {int((np.array(labels[('none', '')]) == 0).sum())} good and {int(np.array(labels[('none', '')]).sum())} defective images a condition")
    gaps = {f"int8 - fp32, seed {seed}": [] for seed in seeds} | ({f"fp32 seed {seeds[1]} - seed {seeds[0]} (a refit)": []} if len(seeds) > 1 else {})
    for name, level_name, _, level in read:
        y = np.array(labels[(name, level_name)])
        a = {fit: auroc(y, np.array(raw[(name, level_name, fit)])) for fit in fits}
        row = [a[("int8", seed)] - a[("fp32", seed)] for seed in seeds] + ([a[("fp32", seeds[1])] - a[("fp32", seeds[0])]] if len(seeds) > 1 else [])
        for gap, values in zip(row, gaps.values()):
            values.append(gap)
        aurocs = " ".join(f"{p} s{seed} {a[(p, seed)]:.4f}" for p, seed in fits)
        print(f"  {name} {level_name} ({level}): {aurocs}; " + ", ".join(f"{what} {gap:+.4f}" for what, gap in zip(gaps, row)), flush=True)
    for what, values in gaps.items():
        sizes = np.abs(values)
        print(
            f"{data.name}: {what}: within 0.003 on {int((sizes <= 0.003).sum())} of {len(sizes)} conditions; mean {np.mean(values):+.4f}, mean size {np.mean(sizes):.4f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--calibration", choices=("minmax", "percentile"), default=None)
    parser.add_argument("--conditions", choices=("all", "near"), default="all")
    arguments = parser.parse_args()
    main(arguments.data, arguments.seeds, arguments.calibration, arguments.conditions == "near")
