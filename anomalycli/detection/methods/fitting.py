"""The heads' fits, by scikit-learn on standardised inputs, returned in the inputs' own units: a
head keeps its weights and biases, no scaler (``hybrid``'s image head, ``pixel_head``)."""

from __future__ import annotations

import math
import warnings

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


def fit_mlp(
    x: np.ndarray, y: np.ndarray, hidden: int, alpha: float, epochs: int, min_steps: int, batch_size: int, seed: int, sample_weight=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(hidden weight [D, H], hidden bias [H], weight [H], bias) of a classifier with one hidden
    layer of ``hidden`` ReLU units (Adam, L2 ``alpha``), fitted on ``x`` (N, D) standardised, the
    standardisation folded into the hidden layer: ``relu(x @ W1 + b1) @ w + b`` is its logit.
    It sees the data ``epochs`` times, more where that makes fewer than ``min_steps`` batches."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    epochs = max(epochs, math.ceil(min_steps / math.ceil(len(x) / batch_size)))
    mlp = MLPClassifier((hidden,), alpha=alpha, batch_size=batch_size, max_iter=epochs, random_state=seed)
    with warnings.catch_warnings():  # a fixed number of passes, not a converged fit, is the plan
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(scaler.transform(x), y, sample_weight=sample_weight)
    hidden_weight = mlp.coefs_[0] / scaler.scale_[:, None]
    hidden_bias = mlp.intercepts_[0] - scaler.mean_ @ hidden_weight
    return hidden_weight, hidden_bias, mlp.coefs_[1][:, 0], float(mlp.intercepts_[1][0])
