"""The drift check's binomial tails and beta quantiles against SciPy's (the library they stand in for)."""

import numpy as np
import pytest
from scipy import special

from anomalycli.judgement import binomial

SIZES = [1, 2, 7, 50, 333, 2000]
RATES = [1e-6, 0.003, 0.05, 0.3, 0.5, 0.77, 0.999]


@pytest.mark.parametrize("n", SIZES)
def test_the_tails_are_scipys_bdtr_and_bdtrc(n):
    for p in RATES:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            assert binomial.cdf(k, n, p) == pytest.approx(float(special.bdtr(k, n, p)), rel=1e-9, abs=1e-300)
            assert binomial.sf(k, n, p) == pytest.approx(float(special.bdtrc(k, n, p)), rel=1e-9, abs=1e-300)


def test_a_tiny_upper_tail_keeps_its_digits():
    # 1 - cdf would be 0 here: the drift check's p-values of a clear drift are this small.
    assert binomial.sf(150, 200, 0.1) == pytest.approx(float(special.bdtrc(150, 200, 0.1)), rel=1e-9)
    assert 0 < binomial.sf(150, 200, 0.1) < 1e-80


@pytest.mark.parametrize("n", SIZES)
def test_the_beta_quantiles_are_scipys_betaincinv(n):
    for k in sorted({0, 1, n // 2, n - 1, n}):
        for q in [0.05, 0.5, 0.95]:
            a, b = k + 1, max(n - k, 1)
            assert binomial.beta_quantile(a, b, q) == pytest.approx(float(special.betaincinv(a, b, q)), rel=1e-9, abs=1e-15)


def test_edges_and_refusals():
    # SciPy answers nan for k < 0 or k > n (but 1 for bdtrc(-1, ...)); these are the probabilities.
    assert binomial.cdf(-1, 10, 0.3) == 0.0 and binomial.sf(-1, 10, 0.3) == 1.0
    assert binomial.cdf(11, 10, 0.3) == 1.0 and binomial.sf(11, 10, 0.3) == 0.0
    assert binomial.cdf(3, 10, 0.0) == 1.0 and binomial.sf(3, 10, 1.0) == 1.0
    assert binomial.beta_quantile(2, 3, 0.0) == 0.0 and binomial.beta_quantile(2, 3, 1.0) == 1.0
    with pytest.raises(ValueError, match="whole"):
        binomial.beta_quantile(0.5, 3, 0.5)
    assert np.isfinite(binomial.sf(0, 5000, 0.5))
