"""VaR backtests: Kupiec, Christoffersen and the Basel traffic light against reference values
(the Kupiec formula, the binomial CDF, hand-computed transition counts).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from transforms.var import backtests


@pytest.mark.parametrize(
    ("x", "lr", "pvalue"),
    [(0, 5.025168, 0.024982), (5, 1.956810, 0.161855), (10, 12.955491, None)],
)
def test_kupiec_references(x, lr, pvalue):
    res = backtests.kupiec_pof(x, 250, 0.01)
    assert res.lr == pytest.approx(lr, abs=1e-6)
    if pvalue is not None:
        assert res.pvalue == pytest.approx(pvalue, abs=1e-6)
    assert res.pvalue == pytest.approx(stats.chi2.sf(res.lr, 1))


@pytest.mark.parametrize(("x", "zone"), [(0, "green"), (4, "green"), (5, "yellow"), (9, "yellow")])
def test_traffic_light_references(x, zone):
    assert backtests.basel_traffic_light(x) == zone
    assert (
        backtests.basel_traffic_light(10) == "red" and backtests.basel_traffic_light(250) == "red"
    )


@pytest.mark.parametrize("n", [100, 250, 500, 1000])
def test_traffic_light_bounds_follow_the_binomial_cdf(n):
    green_max, yellow_max = backtests.traffic_light_bounds(n, 0.01)
    cdf = stats.binom(n, 0.01).cdf
    assert cdf(green_max) < 0.95 <= cdf(green_max + 1)
    assert cdf(yellow_max) < 0.9999 <= cdf(yellow_max + 1)
    if n == 250:
        assert (green_max, yellow_max) == (4, 9)


def test_christoffersen_hand_computed():
    e = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    # Transitions: n00=10, n01=3, n10=3, n11=3.
    n00, n01, n10, n11 = 10, 3, 3, 3
    p01, p11, pi = n01 / 13, n11 / 6, 6 / 19
    ll1 = n00 * math.log(1 - p01) + n01 * math.log(p01) + n10 * math.log(1 - p11)
    ll1 += n11 * math.log(p11)
    ll0 = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    res = backtests.christoffersen(e, 0.05)
    assert res.lr_ind == pytest.approx(2 * (ll1 - ll0), rel=1e-12)
    assert res.lr_cc == pytest.approx(backtests.kupiec_pof(6, 20, 0.05).lr + res.lr_ind, rel=1e-12)
    assert res.pvalue_ind == pytest.approx(stats.chi2.sf(res.lr_ind, 1))
    assert res.pvalue_cc == pytest.approx(stats.chi2.sf(res.lr_cc, 2))
    # No exceptions at all: nothing to cluster.
    none = backtests.christoffersen(np.zeros(250, dtype=bool), 0.01)
    assert none.lr_ind == 0.0 and none.lr_cc == pytest.approx(5.025168, abs=1e-6)
