"""Probe (a record, not a topic): int8 against fp32 on a changed line, read over every fold.

The precision_shift topic holds out fold 0 alone: on the screws 64 goods and 10 defects a
condition, where one pair of images moves an AUROC 0.0016 and a refit alone 0.0138 on average, so
its per-condition bar (int8 within 0.003 of fp32) sits under what it can resolve. Here each of the
accuracy topic's 5 folds is held out in turn, the default model fitted on the other four in both
precisions (seed 0), and each condition's AUROC is read on all the held-out images together (each
scored by the model that did not see it): every good and defect of the set, once.

    python -m benchmarks.probes.precision_shift_pooled ../shared/data/screws
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

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


def main(data: Path) -> None:
    samples = samples_of(data, False)
    raw = {(c[0], c[1], p): [] for c in conditions() for p in PRECISIONS}
    labels = {(c[0], c[1]): [] for c in conditions()}
    for k, fold in enumerate(folds.cv_folds(samples, 5)):
        models = {p: folds.fit(shipped_options(data, fold.training, precision=p), fold.training)[0] for p in PRECISIONS}
        with tempfile.TemporaryDirectory() as tmp:
            for name, level_name, transform, level in conditions():
                folder = Path(tmp) / f"{name}-{level_name}".replace(" ", "_")
                line = fold.held_out if transform is None else shift.shifted_copies(fold.held_out, transform, level, folder, name in shift.GEOMETRIC)
                labels[(name, level_name)] += [s.label for s in line]
                for p, model in models.items():
                    scored, _, _ = shift.score(model, line)
                    raw[(name, level_name, p)] += [r.raw for r in scored]
        print(f"{data.name}: fold {k} done", flush=True)
    within, sizes = 0, []
    print(f"{data.name}: {int((np.array(labels[('none', '')]) == 0).sum())} good and {int(np.array(labels[('none', '')]).sum())} defective images a condition")
    for name, level_name, _, level in conditions():
        y = np.array(labels[(name, level_name)])
        a = {p: auroc(y, np.array(raw[(name, level_name, p)])) for p in PRECISIONS}
        gap = a["int8"] - a["fp32"]
        within += abs(gap) <= 0.003
        sizes.append(abs(gap))
        print(f"  {name} {level_name} ({level}): int8 {a['int8']:.4f} fp32 {a['fp32']:.4f} int8 - fp32 {gap:+.4f}", flush=True)
    print(f"{data.name}: within 0.003 on {within} of {len(sizes)} conditions; mean size {np.mean(sizes):.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
