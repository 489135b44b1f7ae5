from collections import Counter

import pytest

from anomalycli.data.layouts import discover
from anomalycli.data.splits import k_folds, train_val_split
from anomalycli.errors import UserError


def test_val_split_holds_every_defect_type(parts):
    samples = discover(parts).samples
    train, val = train_val_split(samples, 0.1, seed=0)
    assert len(train) + len(val) == len(samples)
    assert not {s.path for s in train} & {s.path for s in val}
    assert {s.defect_type for s in val if s.label} == {"scratch", "spot"}
    assert any(s.label == 0 for s in val)
    assert train_val_split(samples, 0.1, seed=0)[1] == val, "same seed, same split"


def test_folds_are_stratified_by_class_and_type(parts):
    folds = k_folds(discover(parts).samples, 3, seed=1)
    for fold in range(3):
        members = [s for s in folds if s.fold == fold]
        kinds = Counter(s.defect_type or "good" for s in members)
        assert kinds == {"good": 8, "scratch": 2, "spot": 2}


def test_too_few_images_for_folds(parts):
    samples = discover(parts).samples
    with pytest.raises(UserError, match="too few"):
        k_folds(samples, 20)
