"""Stratified train/validation splits and k folds (scikit-learn), by class and defect type."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from dataclasses import replace

from sklearn.model_selection import StratifiedKFold, train_test_split

from anomalycli.data.layouts import Sample
from anomalycli.errors import UsageError, UserError


def strata(samples: list[Sample], min_count: int = 2) -> list[str]:
    """One key per sample: class and defect type; a type too rare to split falls back to its class."""
    keys = [f"{s.class_name}/{s.defect_type or ''}" for s in samples]
    counts = Counter(keys)
    return [k if counts[k] >= min_count else k.split("/")[0] for k in keys]


def train_val_split(samples: list[Sample], val_ratio: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split into train and val; every class and defect type with two or more images reaches val.

    Each stratum gives round(ratio x its size) images, at least one: a plain stratified
    split rounds a 6-image defect type at ratio 0.1 down to none.
    """
    if not 0 < val_ratio < 1:
        raise UsageError(f"--val-ratio must be between 0 and 1 (got {val_ratio})")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(strata(samples)):
        groups[key].append(i)
    val_index: list[int] = []
    for key, members in sorted(groups.items()):
        if len(members) < 2:
            continue
        n_val = min(max(1, round(val_ratio * len(members))), len(members) - 1)
        val_index += train_test_split(members, test_size=n_val, random_state=seed)[1]
    chosen = set(val_index)
    if not chosen:
        raise UserError(f"{len(samples)} images are too few to hold out a validation split; add images")
    train = [replace(s, split="train") for i, s in enumerate(samples) if i not in chosen]
    val = [replace(samples[i], split="val") for i in sorted(chosen)]
    return train, val


def held_out_split(samples: list[Sample], val_ratio: float, test_ratio: float = 0.0, seed: int = 0) -> list[Sample]:
    """Each sample marked train, val or test: a stratified ``test_ratio`` held out first (none at
    0), then ``val_ratio`` of the rest. ``train`` never reads the test split, and ``eval`` reads it
    by default: figures on images the model has not seen."""
    if not 0 <= test_ratio < 1:
        raise UsageError(f"--test-ratio must be at least 0 and below 1 (got {test_ratio})")
    rest, test = train_val_split(samples, test_ratio, seed) if test_ratio else (samples, [])
    train, val = train_val_split(rest, val_ratio, seed)
    return train + val + [replace(s, split="test") for s in test]


def k_folds(samples: list[Sample], k: int, seed: int = 0, small_classes: bool = False) -> list[Sample]:
    """Assign each sample a fold 0..k-1, stratified by class and defect type.

    With ``small_classes`` a class with fewer than k images is spread over as many folds as it
    has images (cross-fitting needs every image scored, not every fold to hold every class).
    """
    if k < 2:
        raise UsageError(f"--folds must be at least 2 (got {k})")
    keys = strata(samples, min_count=k)
    counts = Counter(s.class_name for s in samples)
    smallest = min(counts.values()) if not small_classes else max(counts.values())
    if smallest < k:
        raise UserError(f"a class has only {smallest} images, too few for {k} folds; use --folds {max(smallest, 2)} or fewer")
    folds = [0] * len(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rare defect types spread as evenly as they can
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for fold, (_, held_out) in enumerate(splitter.split(samples, keys)):
            for i in held_out:
                folds[i] = fold
    return [replace(s, fold=f) for s, f in zip(samples, folds)]
