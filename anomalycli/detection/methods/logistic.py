"""A logistic regression on standardised inputs, returned in the inputs' own units: the heads
(``hybrid``'s image head, ``pixel_head``) keep one weight vector and a bias, no scaler."""

from __future__ import annotations

import numpy as np


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, class_weight=None, sample_weight=None) -> tuple[np.ndarray, float]:
    """(weight [D], bias) of an L2 logistic regression (inverse strength ``c``) fitted on ``x``
    (N, D) standardised, with the standardisation folded in: ``x @ weight + bias`` is its logit."""
    from sklearn.linear_model import LogisticRegression  # fitting only: predict starts without scikit-learn
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(C=c, class_weight=class_weight, max_iter=max_iter).fit(scaler.transform(x), y, sample_weight=sample_weight)
    weight = regression.coef_[0] / scaler.scale_
    return weight, float(regression.intercept_[0] - scaler.mean_ @ weight)
