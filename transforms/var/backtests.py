"""VaR backtests (pure, no Beam): Kupiec proportion of failures, Christoffersen independence and
conditional coverage, and the Basel traffic light (green 0-4, yellow 5-9, red 10+ exceptions in
250 days at 99 %; other sizes from the binomial CDF). The tail probability is ``measures``' exact
one.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import special, stats

from transforms.var.measures import _open_unit, _whole


class KupiecResult(NamedTuple):
    lr: float
    pvalue: float


class ChristoffersenResult(NamedTuple):
    lr_ind: float
    lr_cc: float
    pvalue_ind: float
    pvalue_cc: float


def _probability(p: Any) -> float:
    return _open_unit(p, "p (expected exception rate, e.g. 0.01)")


def _count(value: Any, name: str) -> int:
    return _whole(value, name, 0)


def _binomial_loglik_ratio(x: int, n: int, p: float) -> float:
    """2·[log L(x/n) − log L(p)] for x successes in n Bernoulli trials (0·log 0 = 0)."""
    phat = x / n
    ll_hat = special.xlogy(n - x, 1 - phat) + special.xlogy(x, phat)
    ll_p = (n - x) * math.log1p(-p) + x * math.log(p)
    return max(0.0, float(2 * (ll_hat - ll_p)))


def kupiec_pof(exceptions: int, n: int, p: float) -> KupiecResult:
    """Kupiec (1995) proportion-of-failures test: (LR, p-value), LR ~ χ²(1) under H0 rate = p."""
    x, n = _count(exceptions, "exceptions"), _count(n, "n")
    p = _probability(p)
    if n == 0 or x > n:
        raise ValueError(f"need 0 <= exceptions <= n and n >= 1, got exceptions={x}, n={n}")
    lr = _binomial_loglik_ratio(x, n, p)
    return KupiecResult(lr, float(stats.chi2.sf(lr, 1)))


def christoffersen(exception_series: Any, p: float) -> ChristoffersenResult:
    """Christoffersen (1998) independence and conditional-coverage tests.

    ``exception_series``: one boolean (or 0/1) per day, in time order. LR_ind compares a
    first-order Markov chain of exceptions with independence (χ²(1)); LR_cc = Kupiec LR over all
    days + LR_ind (χ²(2)), the textbook (Jorion) decomposition.
    """
    p = _probability(p)
    e = np.asarray(exception_series)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"exception_series must be 1-D with at least 2 days, got shape {e.shape}")
    if not np.isin(e, (0, 1)).all():
        raise ValueError("exception_series must hold booleans or 0/1 values")
    e = e.astype(bool)
    prev, cur = e[:-1], e[1:]
    n00 = int(np.sum(~prev & ~cur))
    n01 = int(np.sum(~prev & cur))
    n10 = int(np.sum(prev & ~cur))
    n11 = int(np.sum(prev & cur))
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    xlogy = special.xlogy
    ll_markov = xlogy(n00, 1 - pi01) + xlogy(n01, pi01) + xlogy(n10, 1 - pi11) + xlogy(n11, pi11)
    ll_indep = xlogy(n00 + n10, 1 - pi) + xlogy(n01 + n11, pi)
    lr_ind = max(0.0, float(2 * (ll_markov - ll_indep)))
    lr_cc = kupiec_pof(int(e.sum()), e.size, p).lr + lr_ind
    return ChristoffersenResult(
        lr_ind, lr_cc, float(stats.chi2.sf(lr_ind, 1)), float(stats.chi2.sf(lr_cc, 2))
    )


def traffic_light_bounds(n: int = 250, p: float = 0.01) -> tuple[int, int]:
    """(last green count, last yellow count) of the Basel traffic light for n days at rate p.

    Basel (1996): the yellow zone begins at the fewest exceptions whose binomial cumulative
    probability reaches 95 %, the red zone where it reaches 99.99 %. n=250, p=0.01 gives (4, 9).
    """
    n = _count(n, "n")
    p = _probability(p)
    if n == 0:
        raise ValueError("n must be >= 1")
    cdf = stats.binom.cdf(np.arange(n + 1), n, p)
    yellow_from = int(np.searchsorted(cdf, 0.95, side="left"))
    red_from = int(np.searchsorted(cdf, 0.9999, side="left"))
    return yellow_from - 1, red_from - 1


def basel_traffic_light(exceptions: int, n: int = 250, p: float = 0.01) -> str:
    """Basel traffic-light zone of ``exceptions`` in n days: "green", "yellow" or "red"."""
    x = _count(exceptions, "exceptions")
    if x > n:
        raise ValueError(f"exceptions ({x}) cannot exceed the number of days n ({n})")
    green_max, yellow_max = traffic_light_bounds(n, p)
    if x <= green_max:
        return "green"
    return "yellow" if x <= yellow_max else "red"
