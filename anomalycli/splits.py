"""Stratified train/validation splits and k folds (scikit-learn), by class and defect type."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import replace

from sklearn.model_selection import StratifiedKFold, train_test_split

from anomalycli.data import Sample
from anomalycli.errors import UsageError, UserError


def strata(samples: list[Sample], min_count: int = 2) -> list[str]:
    """One key per sample: class and defect type; a type too rare to split falls back to its class."""
    keys = [f"{s.class_name}/{s.defect_type or ''}" for s in samples]
    counts = Counter(keys)
    return [k if counts[k] >= min_count else k.split("/")[0] for k in keys]


def train_val_split(samples: list[Sample], val_ratio: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split into train and val; every class and defect type with two or more images reaches val."""
    if not 0 < val_ratio < 1:
        raise UsageError(f"--val-ratio must be between 0 and 1 (got {val_ratio})")
    keys = strata(samples)
    n_val = max(math.ceil(val_ratio * len(samples)), len(set(keys)))
    if n_val >= len(samples):
        raise UserError(f"{len(samples)} images are too few to hold out a validation split; add images")
    train, val = train_test_split(samples, test_size=n_val, random_state=seed, stratify=keys)
    return [replace(s, split="train") for s in train], [replace(s, split="val") for s in val]


def k_folds(samples: list[Sample], k: int, seed: int = 0) -> list[Sample]:
    """Assign each sample a fold 0..k-1, stratified by class and defect type."""
    if k < 2:
        raise UsageError(f"--folds must be at least 2 (got {k})")
    keys = strata(samples, min_count=k)
    smallest = min(Counter(s.class_name for s in samples).values())
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
