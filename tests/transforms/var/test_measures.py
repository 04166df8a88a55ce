"""VaR/ES engine: reference values on real BTC/ETH returns, invariants, the α·N trap, bad input.

The reference values were computed independently of this module (sorted returns and an exact
order statistic, numpy's linear quantile, the closed-form normal VaR, the Kupiec formula).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate, stats

from tests.support.paths import DATA
from transforms.var import backtests, measures

PRICES = DATA / "prices" / "bitstamp_BTC_ETH_LTC_USD_daily.csv"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.read_csv(PRICES, index_col=0, parse_dates=True)


@pytest.fixture(scope="module")
def btc(frame) -> pd.Series:
    r = frame["BTC:close"].pct_change().dropna()
    assert len(r) == 1864
    assert (r.index[0], r.index[-1]) == (pd.Timestamp("2014-11-29"), pd.Timestamp("2020-01-17"))
    return r


@pytest.fixture(scope="module")
def pair(frame) -> pd.DataFrame:
    r = frame[["BTC:close", "ETH:close"]].dropna().pct_change().dropna()
    assert len(r) == 787 and r.index[0] == pd.Timestamp("2017-11-10")
    return r


W6040 = np.array([0.6, 0.4])


def test_btc_historical_var99_reference(btc):
    assert measures.historical_var(btc, 0.99) == pytest.approx(0.1110613878, abs=1e-9)
    assert measures.historical_var(btc, 0.99, method="linear") == pytest.approx(
        0.1107433721, abs=1e-9
    )
    # ceil(0.01 · 1864) = 19: the 19th worst loss.
    assert measures.historical_var(btc.to_numpy(), 0.99) == np.sort(-btc.to_numpy())[::-1][18]


def test_btc_eth_6040_references(pair):
    hs = measures.historical_var(pair, 0.99, weights=W6040)
    normal = measures.parametric_var(pair, W6040, 0.99)
    mc = measures.monte_carlo_var(pair, W6040, 0.99, n=100_000, seed=0)
    assert hs == pytest.approx(0.1267649100, abs=1e-9)
    assert normal == pytest.approx(0.1008082317, abs=1e-9)
    assert mc == pytest.approx(normal, rel=0.01)
    # The 2-D path is the daily-rebalanced portfolio series.
    series = 0.6 * pair["BTC:close"] + 0.4 * pair["ETH:close"]
    assert measures.historical_var(series, 0.99) == pytest.approx(hs, abs=1e-15)


@pytest.mark.parametrize(
    ("n", "level", "kth_worst"), [(100, 0.99, 1), (300, 0.99, 3), (200, 0.975, 5)]
)
def test_whole_number_alpha_n_takes_the_exact_order_statistic(n, level, kth_worst):
    rng = np.random.default_rng(n)
    losses = np.arange(1, n + 1) / 1000.0  # distinct losses 0.001 .. n/1000
    returns = rng.permutation(-losses)
    worst = np.sort(losses)[::-1]
    assert measures.historical_var(returns, level) == worst[kth_worst - 1]
    # ES with a whole α·N is the plain mean of the α·N worst losses.
    assert measures.historical_es(returns, level) == pytest.approx(
        worst[:kth_worst].mean(), rel=1e-15
    )
    # The naive float formula: 1 - 0.99 = 0.010000000000000009 > 0.01 takes the next one.
    naive_k = math.ceil((1 - level) * n)
    naive = -np.quantile(returns, 1 - level, method="inverted_cdf")
    assert naive_k == kth_worst + 1
    assert naive == worst[kth_worst] != measures.historical_var(returns, level)


def test_es_fractional_boundary_weight():
    # α·N = 0.05 · 30 = 1.5: the worst loss plus half of the second, over 1.5.
    returns = -np.arange(1, 31) / 100.0
    assert measures.historical_es(returns, 0.95) == pytest.approx(
        (0.30 + 0.5 * 0.29) / 1.5, rel=1e-15
    )
    assert measures.historical_var(returns, 0.95) == pytest.approx(0.29)


def test_parametric_matches_closed_form(pair):
    mu, cov = pair.mean().to_numpy(), np.cov(pair.to_numpy(), rowvar=False, ddof=1)
    m, s = W6040 @ mu, math.sqrt(W6040 @ cov @ W6040)
    z99, z975 = stats.norm.ppf(0.99), stats.norm.ppf(0.975)
    assert measures.parametric_var(pair, W6040, 0.99) == pytest.approx(-m + z99 * s, rel=1e-12)
    es = measures.parametric_es(pair, W6040, 0.975)
    assert es == pytest.approx(-m + s * stats.norm.pdf(z975) / 0.025, rel=1e-12)
    # Acerbi: ES is the mean of VaR over the tail levels.
    tail_mean = integrate.quad(lambda u: -m + s * stats.norm.ppf(u), 0.975, 1)[0] / 0.025
    assert es == pytest.approx(tail_mean, rel=1e-7)
    # Horizon: h·μ and √h·σ.
    assert measures.parametric_var(pair, W6040, 0.99, horizon_days=10) == pytest.approx(
        -10 * m + z99 * s * math.sqrt(10), rel=1e-12
    )


def test_historical_horizon_is_sqrt_h_scaling(btc):
    one = measures.historical_var(btc, 0.99)
    assert measures.historical_var(btc, 0.99, horizon_days=10) == pytest.approx(one * math.sqrt(10))
    assert measures.historical_es(btc, 0.975, horizon_days=4) == pytest.approx(
        2 * measures.historical_es(btc, 0.975)
    )


def _ewma_loop(r: np.ndarray, lam: float) -> np.ndarray:
    var = [float(np.mean(r * r))]
    for x in r:
        var.append(lam * var[-1] + (1 - lam) * x * x)
    return np.sqrt(var)


def test_ewma_matches_the_recursion(btc, pair):
    r = btc.to_numpy()
    sig = measures.ewma_volatility(r)
    assert sig.shape == (r.size + 1,)
    np.testing.assert_allclose(sig, _ewma_loop(r, 0.94), rtol=1e-12)
    two = measures.ewma_volatility(pair.to_numpy(), lam=0.97)
    for j in range(2):
        np.testing.assert_allclose(two[:, j], _ewma_loop(pair.to_numpy()[:, j], 0.97), rtol=1e-12)


def test_filtered_historical_var_matches_hull_white_by_hand(btc):
    r = btc.to_numpy()[-500:]
    sig = _ewma_loop(r, 0.94)
    scenarios = r / sig[:-1] * sig[-1]
    k = math.ceil(0.01 * 500 - 1e-12)  # 5, exact here
    expected = -np.sort(scenarios)[k - 1]
    assert measures.filtered_historical_var(r, 0.99) == pytest.approx(expected, rel=1e-12)
    assert measures.filtered_historical_es(r, 0.99) >= measures.filtered_historical_var(r, 0.99)


def test_monte_carlo_is_reproducible(pair):
    a = measures.monte_carlo_var(pair, W6040, 0.99, n=20_000, seed=7)
    assert a == measures.monte_carlo_var(pair, W6040, 0.99, n=20_000, seed=7)
    assert a != measures.monte_carlo_var(pair, W6040, 0.99, n=20_000, seed=8)
    ten = measures.monte_carlo_var(pair, W6040, 0.99, n=100_000, seed=0, horizon_days=10)
    normal10 = measures.parametric_var(pair, W6040, 0.99, horizon_days=10)
    assert ten == pytest.approx(normal10, rel=0.01)


def test_component_var_sums_to_portfolio_var(pair):
    parts = measures.component_var(pair, W6040, 0.99)
    np.testing.assert_allclose(
        parts.sum(), measures.parametric_var(pair, W6040, 0.99), rtol=1e-12, atol=0
    )
    mu, cov = pair.mean().to_numpy(), np.cov(pair.to_numpy(), rowvar=False)
    s = math.sqrt(W6040 @ cov @ W6040)
    expected = W6040 * (-mu + stats.norm.ppf(0.99) * (cov @ W6040) / s)
    np.testing.assert_allclose(parts, expected, rtol=1e-12)
    hist = measures.component_var(pair, W6040, 0.99, method="historical")
    assert hist.sum() == pytest.approx(0.1267649100, abs=1e-9)


finite = st.floats(-0.5, 0.5, allow_nan=False, allow_infinity=False, width=64)


series = hnp.arrays(np.float64, st.integers(1, 400), elements=finite)


levels = st.sampled_from([0.9, 0.95, 0.975, 0.99, 0.995, 0.999])


@settings(max_examples=150, deadline=None)
@given(series, levels)
def test_es_at_least_var(r, level):
    var, es = measures.historical_var(r, level), measures.historical_es(r, level)
    assert es >= var - 1e-12 * max(1.0, abs(var))


@settings(max_examples=150, deadline=None)
@given(series, levels, levels)
def test_var_monotone_in_level(r, a, b):
    lo, hi = sorted((a, b))
    assert measures.historical_var(r, lo) <= measures.historical_var(r, hi)
    assert measures.historical_es(r, lo) <= measures.historical_es(r, hi) + 1e-12


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(2, 120), st.integers(1, 5)), elements=finite),
    st.floats(0.01, 1e6),
    st.data(),
)
def test_scaling_positions_scales_var(r, scale, data):
    w = data.draw(hnp.arrays(np.float64, r.shape[1], elements=st.floats(-2, 2)))
    for fn in (
        lambda x: measures.historical_var(r, 0.99, weights=x),
        lambda x: measures.historical_es(r, 0.975, weights=x),
        lambda x: measures.parametric_var(r, x, 0.99),
        lambda x: measures.parametric_es(r, x, 0.975),
        lambda x: measures.filtered_historical_var(r, 0.99, weights=x),
        lambda x: measures.monte_carlo_var(r, x, 0.99, n=500),
    ):
        assert fn(w * scale) == pytest.approx(scale * fn(w), rel=1e-9, abs=1e-12 * scale)


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(2, 120), st.integers(1, 5)), elements=finite),
    st.data(),
)
def test_component_var_sums_to_total(r, data):
    w = data.draw(hnp.arrays(np.float64, r.shape[1], elements=st.floats(-2, 2)))
    total = measures.parametric_var(r, w, 0.99)
    assert measures.component_var(r, w, 0.99).sum() == pytest.approx(total, rel=1e-12, abs=1e-15)
    hs = measures.historical_var(r, 0.99, weights=w)
    parts = measures.component_var(r, w, 0.99, method="historical")
    assert parts.sum() == pytest.approx(hs, rel=1e-12, abs=1e-15)


def test_vectorised_weights_equal_the_loop(pair):
    rng = np.random.default_rng(3)
    r = np.column_stack([pair.to_numpy(), rng.normal(0, 0.02, (len(pair), 3))])
    w = rng.normal(0, 1, (40, 5))
    calls = {
        "hs": lambda x: measures.historical_var(r, 0.99, weights=x),
        "hs_linear": lambda x: measures.historical_var(r, 0.99, weights=x, method="linear"),
        "es": lambda x: measures.historical_es(r, 0.975, weights=x),
        "param": lambda x: measures.parametric_var(r, x, 0.99),
        "param_es": lambda x: measures.parametric_es(r, x, 0.975),
        "fhs": lambda x: measures.filtered_historical_var(r, 0.99, weights=x),
        "fhs_es": lambda x: measures.filtered_historical_es(r, 0.975, weights=x),
        "mc": lambda x: measures.monte_carlo_var(r, x, 0.99, n=5_000, seed=1),
        "component": lambda x: measures.component_var(r, x, 0.99),
        "component_hs": lambda x: measures.component_var(r, x, 0.99, method="historical"),
    }
    for name, fn in calls.items():
        many = fn(w)
        assert many.shape[0] == 40, name
        loop = np.array([fn(row) for row in w])
        # A matmul and a loop of mat-vecs may round differently in the last bit.
        np.testing.assert_allclose(many, loop, rtol=1e-12, atol=1e-15, err_msg=name)


def test_inputs_are_not_mutated(pair):
    r = pair.to_numpy().copy()
    w = np.array([[0.6, 0.4], [-1.0, 2.0]])
    r0, w0, frame0 = r.copy(), w.copy(), pair.copy()
    measures.historical_var(r, 0.99, weights=w)
    measures.historical_es(r, 0.975, weights=w)
    measures.parametric_var(r, w)
    measures.parametric_es(r, w)
    measures.filtered_historical_var(r, weights=w)
    measures.monte_carlo_var(r, w, n=1000)
    measures.component_var(r, w)
    measures.component_var(r, w, method="historical")
    measures.ewma_volatility(r)
    measures.historical_var(pair, 0.99, weights=W6040)
    measures.filtered_historical_var(pair["BTC:close"])
    e = np.array([True, False, True])
    backtests.christoffersen(e, 0.01)
    assert np.array_equal(r, r0) and np.array_equal(w, w0) and e.tolist() == [True, False, True]
    pd.testing.assert_frame_equal(pair, frame0)


def test_constant_returns():
    r = np.full(50, -0.02)
    for fn in (measures.historical_var, measures.historical_es, measures.filtered_historical_var):
        assert fn(r, 0.99) == pytest.approx(0.02, rel=1e-12)
    assert measures.parametric_var(r) == pytest.approx(0.02, rel=1e-9)
    assert measures.parametric_es(r) == pytest.approx(0.02, rel=1e-9)
    assert measures.monte_carlo_var(r, None, n=1000) == pytest.approx(0.02, rel=1e-9)
    assert measures.component_var(r, [1.0]).sum() == pytest.approx(0.02, rel=1e-9)
    zeros = np.zeros((30, 2))
    assert measures.filtered_historical_var(zeros, weights=[1.0, 1.0]) == 0.0
    assert measures.component_var(zeros, [1.0, 1.0]).tolist() == [0.0, 0.0]
    assert measures.ewma_volatility(np.zeros(5)).tolist() == [0.0] * 6


def test_single_scenario():
    assert measures.historical_var([-0.03], 0.99) == pytest.approx(0.03)
    assert measures.historical_es([-0.03], 0.975) == pytest.approx(0.03)
    assert measures.historical_var([[0.01, -0.05]], 0.99, weights=[1, 1]) == pytest.approx(0.04)
    for fn in (measures.parametric_var, measures.parametric_es, measures.monte_carlo_var):
        with pytest.raises(ValueError, match="at least 2 scenarios"):
            fn([0.01])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: measures.historical_var([]), "empty"),
        (lambda: measures.historical_var(np.empty((0, 3)), weights=[1, 1, 1]), "empty"),
        (lambda: measures.parametric_var([]), "empty"),
        (lambda: measures.ewma_volatility([]), "empty"),
        (lambda: measures.historical_var([0.01, np.nan]), "NaN or infinite"),
        (lambda: measures.historical_es([0.01, np.inf]), "NaN or infinite"),
        (lambda: measures.parametric_var([[0.01, 0.0], [0.0, -np.inf]], [1, 1]), "NaN or infinite"),
        (lambda: measures.historical_var([0.01, 0.02], weights=[np.nan]), "weights contains"),
        (lambda: measures.historical_var(np.zeros((5, 2)), weights=[1, 1, 1]), "do not match"),
        (
            lambda: measures.historical_var(np.zeros((5, 2)), weights=np.ones((3, 4))),
            "do not match",
        ),
        (lambda: measures.parametric_var(np.zeros((5, 2))), "pass weights"),
        (lambda: measures.historical_var(np.zeros((2, 2, 2))), "1-D or 2-D"),
        (lambda: measures.historical_var([0.01], level=1.0), "level must be in"),
        (lambda: measures.historical_var([0.01], level=0), "level must be in"),
        (lambda: measures.historical_var([0.01], level="high"), "level must be"),
        (lambda: measures.historical_var([0.01], method="nearest"), "method must be one of"),
        (lambda: measures.historical_var([0.01], horizon_days=0), "horizon_days"),
        (
            lambda: measures.ewma_volatility([0.01], lam=1.0),
            "lam \\(RiskMetrics daily: 0.94\\) must be in",
        ),
        (lambda: measures.monte_carlo_var([0.01, 0.02], n=0), "number of simulations"),
        (lambda: measures.component_var([0.01, 0.02], [1], method="mc"), "method must be one of"),
        (lambda: backtests.kupiec_pof(11, 10, 0.01), "exceptions <= n"),
        (lambda: backtests.kupiec_pof(1, 10, 1.5), "p \\(expected exception rate"),
        (lambda: backtests.christoffersen([True], 0.01), "at least 2 days"),
        (lambda: backtests.christoffersen([0, 2, 1], 0.01), "booleans or 0/1"),
        (lambda: backtests.basel_traffic_light(-1), "whole number >= 0"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_exact_levels_from_strings_and_floats():
    from decimal import Decimal
    from fractions import Fraction

    for level in (0.99, "0.99", Decimal("0.99"), Fraction(99, 100), np.float64(0.99)):
        assert measures.tail_probability(level) == Fraction(1, 100)
