"""Binomial tails and the beta quantiles of Clopper-Pearson bounds, in numpy: the drift check's
tests (``judgement.drift``), which run in every predict, watch and serve.

SciPy has them (``scipy.special.bdtr``, ``bdtrc``, ``betaincinv``), but importing
``scipy.special`` took 0.3 s of every process's start, a third of a one-image predict's
(BENCHMARKS.md, "Speed": SciPy 1.17 builds its array-API layer at import). These are exact sums
of the binomial terms, and the tests hold them to SciPy's values.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def _terms(first: int, last: int, n: int, p: float) -> np.ndarray:
    """P(X = i) for i in first..last, X ~ Binomial(n, p), 0 < p < 1, from log C(n, i) as a running sum."""
    i = np.arange(1, last + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log(n - i + 1) - np.log(i))])[first:]
    i = np.arange(first, last + 1, dtype=np.float64)
    return np.exp(log_choose + i * np.log(p) + (n - i) * np.log1p(-p))


def cdf(k: int, n: int, p: float) -> float:
    """P(X <= k), X ~ Binomial(n, p): ``scipy.special.bdtr(k, n, p)``."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return min(1.0, float(_terms(0, k, n, p).sum()))


def sf(k: int, n: int, p: float) -> float:
    """P(X > k), X ~ Binomial(n, p): ``scipy.special.bdtrc(k, n, p)``; the upper tail summed as
    such, so that a tiny p-value keeps its digits."""
    if k < 0:
        return 1.0
    if k >= n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return min(1.0, float(_terms(k + 1, n, n, p).sum()))


def beta_quantile(a: int, b: int, q: float) -> float:
    """The ``q`` quantile of Beta(a, b) for whole a, b >= 1: ``scipy.special.betaincinv(a, b, q)``.
    For whole a and b, I_x(a, b) = P(Binomial(a + b - 1, x) >= a); Newton's steps on it (its
    slope is Beta(a, b)'s density), kept inside the bracket found so far by halving it where a
    step would leave it. A few steps: the drift check takes eight of these every time it runs."""
    if not (a >= 1 and b >= 1 and a == int(a) and b == int(b)):
        raise ValueError(f"beta_quantile needs whole a, b >= 1, got a={a}, b={b}")
    if q <= 0.0 or q >= 1.0:
        return 0.0 if q <= 0.0 else 1.0
    a, b = int(a), int(b)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # The start: Beta(a, b)'s normal approximation, inside (0, 1).
    mean, spread = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    low, high, x = 0.0, 1.0, min(max(mean + NormalDist().inv_cdf(q) * spread, 1e-12), 1 - 1e-12)
    for _ in range(200):
        excess = _at_least(a, a + b - 1, x) - q
        low, high = (x, high) if excess < 0 else (low, x)
        density = math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_beta)
        newton = x - excess / density if density > 0 else low - 1.0
        if abs(newton - x) <= 1e-13 * x:
            return newton
        x = newton if low < newton < high else (low + high) / 2
    return x


def _at_least(a: int, n: int, p: float) -> float:
    """P(X >= a), X ~ Binomial(n, p), from whichever side has fewer terms (its absolute error is
    what a quantile's search needs)."""
    if a <= n - a + 1:
        return max(0.0, 1.0 - cdf(a - 1, n, p))
    return sf(a - 1, n, p)
