"""Value at risk and expected shortfall by method: a pure numpy engine (no Beam).

Conventions (DESIGN.md, "Risk conventions"):

- VaR and ES are **positive losses**: a fraction of value when ``returns`` are simple returns and
  ``weights`` are fractions of value, USD when ``returns`` are P&L per unit or ``weights`` are USD
  positions. An exception is a day with loss > VaR.
- ``level`` is the confidence level c (0.99); the tail probability α = 1 − c is computed exactly
  (``fractions.Fraction(str(level))``) because in binary floating point 1 − 0.99 > 0.01, and when
  α·N is a whole number the naive float formula takes the next order statistic.

Shapes. ``returns`` is 1-D (N scenarios of one asset or of a portfolio's P&L) or 2-D (N scenarios
× A assets). ``weights`` is None (only for one column), a vector of A positions (one portfolio:
a float result) or a P × A matrix (P portfolios: an array of P results, from one matmul). Inputs
are never modified; NaN or inf raises ``ValueError``.

Horizon. ``horizon_days`` h: the parametric and Monte Carlo methods treat daily returns as i.i.d.
normal, so the h-day mean is h·μ and the h-day volatility √h·σ. The historical methods scale the
1-day figure by √h, an approximation (exact only for i.i.d. zero-mean normal returns).
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
from scipy import signal, special

HS_METHODS = ("inverted_cdf", "linear")


COMPONENT_METHODS = ("parametric", "historical")


def tail_probability(level: Any) -> Fraction:
    """α = 1 − level as an exact fraction (level 0.99 gives exactly 1/100)."""
    if isinstance(level, bool):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    if isinstance(level, Fraction):
        c = level
    elif isinstance(level, (int, Decimal)):
        c = Fraction(level)
    else:
        # str() of a float is its shortest round-trip decimal: 0.99 -> "0.99" -> 99/100.
        try:
            c = Fraction(str(float(level)) if not isinstance(level, str) else level)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"level must be a number in (0, 1), got {level!r}") from exc
    if not 0 < c < 1:
        raise ValueError(f"level must be in (0, 1) (e.g. 0.99), got {level!r}")
    return 1 - c


def _whole(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int >= minimum; bools, fractions, strings and None are refused."""
    try:
        ok = not isinstance(value, (bool, str)) and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _open_unit(value: Any, name: str) -> float:
    """``value`` as a float strictly between 0 and 1."""
    try:
        ok = not isinstance(value, (bool, str)) and 0 < float(value) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def _horizon(horizon_days: Any) -> int:
    return _whole(horizon_days, "horizon_days", 1)


def _finite_array(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the input first")
    return arr


def _returns_2d(returns: Any) -> np.ndarray:
    """Returns as an N × A float array (a 1-D series becomes one column); validated."""
    r = _finite_array(returns, "returns")
    if r.ndim == 1:
        r = r[:, None]
    elif r.ndim != 2:
        raise ValueError(f"returns must be 1-D or 2-D (scenarios x assets), got shape {r.shape}")
    if r.shape[0] == 0:
        raise ValueError("returns is empty: need at least one scenario")
    if r.shape[1] == 0:
        raise ValueError("returns has no asset columns")
    return r


def _weights_2d(weights: Any, n_assets: int) -> tuple[np.ndarray, bool]:
    """Weights as P × A plus whether the caller passed one portfolio (scalar result)."""
    if weights is None:
        if n_assets != 1:
            raise ValueError(
                f"returns has {n_assets} asset columns: pass weights of shape ({n_assets},) "
                f"or (portfolios, {n_assets})"
            )
        return np.ones((1, 1)), True
    w = _finite_array(weights, "weights")
    if w.ndim == 0 and n_assets == 1:
        return w.reshape(1, 1), True
    if w.ndim == 1 and w.shape[0] == n_assets:
        return w[None, :], True
    if w.ndim == 2 and w.shape[1] == n_assets and w.shape[0] >= 1:
        return w, False
    raise ValueError(
        f"weights of shape {w.shape} do not match {n_assets} asset column(s): expected "
        f"({n_assets},) for one portfolio or (portfolios, {n_assets})"
    )


def _pnl(returns: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(returns N × A, weights P × A, portfolio returns P × N, single-portfolio flag)."""
    r = _returns_2d(returns)
    w, single = _weights_2d(weights, r.shape[1])
    # One matmul for every portfolio; P × N keeps each portfolio's scenarios contiguous, which
    # is what the per-row partition below wants.
    return r, w, w @ r.T, single


def _out(values: np.ndarray, single: bool) -> float | np.ndarray:
    return float(values[0]) if single else values


def _moments(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean vector and covariance (ddof=1) of N × A returns."""
    if r.shape[0] < 2:
        raise ValueError(
            f"need at least 2 scenarios for a sample covariance (ddof=1), got {r.shape[0]}"
        )
    mu = r.mean(axis=0)
    x = r - mu
    return mu, (x.T @ x) / (r.shape[0] - 1)


def _hs_var_rows(pnl: np.ndarray, alpha: Fraction, method: str) -> np.ndarray:
    """VaR per row of a P × N matrix of portfolio returns (positive loss)."""
    n = pnl.shape[1]
    if method == "inverted_cdf":
        k = math.ceil(alpha * n)  # exact: the k-th smallest return is the k-th worst loss
        return -np.partition(pnl, k - 1, axis=1)[:, k - 1]
    if method == "linear":
        return -np.quantile(pnl, float(alpha), axis=1, method="linear")
    raise ValueError(f"method must be one of {HS_METHODS}, got {method!r}")


def _hs_es_rows(pnl: np.ndarray, alpha: Fraction) -> np.ndarray:
    """Acerbi–Tasche ES per row of a P × N matrix of portfolio returns (positive loss)."""
    n = pnl.shape[1]
    tail = alpha * n  # exact rational α·N
    whole = math.floor(tail)  # < N because α < 1
    frac = float(tail - whole)
    part = np.partition(pnl, whole, axis=1)  # [:, :whole] the worst, [:, whole] the boundary
    total = part[:, :whole].sum(axis=1) + frac * part[:, whole]
    return -total / float(tail)


def historical_var(
    returns: Any,
    level: Any = 0.99,
    weights: Any = None,
    method: str = "inverted_cdf",
    horizon_days: int = 1,
) -> float | np.ndarray:
    """Historical-simulation VaR: ``-quantile(portfolio returns, 1 - level)``, a positive loss.

    ``method="inverted_cdf"`` (default): the k-th worst loss with k = ceil(α·N), α exact, as in
    riskfolio. ``method="linear"``: numpy's linear interpolation between order statistics.
    ``horizon_days`` h > 1 multiplies the 1-day VaR by √h (an approximation).
    """
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    _, _, pnl, single = _pnl(returns, weights)
    return _out(_hs_var_rows(pnl, alpha, method) * math.sqrt(h), single)


def historical_es(
    returns: Any, level: Any = 0.975, weights: Any = None, horizon_days: int = 1
) -> float | np.ndarray:
    """Historical expected shortfall (Acerbi–Tasche tail mean), a positive loss.

    ES = (sum of the ⌊αN⌋ worst losses + (αN − ⌊αN⌋) × the next worst) / (αN), with α = 1 − level
    exact. It is >= the inverted-CDF VaR at the same level. h > 1: √h × the 1-day ES (approx.).
    """
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    _, _, pnl, single = _pnl(returns, weights)
    return _out(_hs_es_rows(pnl, alpha) * math.sqrt(h), single)


def _normal_terms(r: np.ndarray, w: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(h-day portfolio mean, h-day portfolio volatility) per portfolio."""
    mu, cov = _moments(r)
    var = np.einsum("pa,pa->p", w @ cov, w)
    # Rounding can leave a tiny negative variance for a (near) riskless portfolio.
    return h * (w @ mu), np.sqrt(np.maximum(var, 0.0) * h)


def parametric_var(
    returns: Any, weights: Any = None, level: Any = 0.99, horizon_days: int = 1
) -> float | np.ndarray:
    """Normal (variance–covariance) VaR: −wᵀμ·h + z·√(wᵀΣw)·√h, a positive loss.

    μ and Σ are the sample mean and covariance (ddof=1) of ``returns``; z = Φ⁻¹(level).
    """
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    r = _returns_2d(returns)
    w, single = _weights_2d(weights, r.shape[1])
    mean, vol = _normal_terms(r, w, h)
    z = -special.ndtri(float(alpha))  # Φ⁻¹(level), accurate deep in the tail
    return _out(-mean + z * vol, single)


def parametric_es(
    returns: Any, weights: Any = None, level: Any = 0.975, horizon_days: int = 1
) -> float | np.ndarray:
    """Normal ES: −wᵀμ·h + σ_p·√h·φ(z)/α, a positive loss (z = Φ⁻¹(level), α = 1 − level)."""
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    r = _returns_2d(returns)
    w, single = _weights_2d(weights, r.shape[1])
    mean, vol = _normal_terms(r, w, h)
    a = float(alpha)
    z = -special.ndtri(a)
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return _out(-mean + vol * pdf / a, single)


def ewma_volatility(returns: Any, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics EWMA volatility forecasts: σ²_t = λ·σ²_{t−1} + (1 − λ)·r²_{t−1}.

    Returns N + 1 values (per column for 2-D input): ``out[t]`` is the forecast for return t made
    from returns 0..t−1, so ``out[-1]`` is the forecast for the next, unobserved day. The seed
    ``out[0]²`` is the zero-mean sample variance mean(r²) of the whole input (RiskMetrics assumes
    zero mean); its weight decays as λ^t (0.94^250 ≈ 2e-7).
    """
    lam = _open_unit(lam, "lam (RiskMetrics daily: 0.94)")
    r = _finite_array(returns, "returns")
    if r.ndim not in (1, 2):
        raise ValueError(f"returns must be 1-D or 2-D, got shape {r.shape}")
    if r.shape[0] == 0:
        raise ValueError("returns is empty: need at least one return for an EWMA volatility")
    sq = r * r
    seed = sq.mean(axis=0)
    # The recursion is a first-order IIR filter; lfilter runs it in C along axis 0.
    zi = (lam * seed)[None, ...] if r.ndim == 2 else np.array([lam * seed])
    tail, _ = signal.lfilter([1 - lam], [1, -lam], sq, axis=0, zi=zi)
    var = np.concatenate([seed[None, ...] if r.ndim == 2 else [seed], tail], axis=0)
    return np.sqrt(np.maximum(var, 0.0))


def _filtered_scenarios(pnl: np.ndarray, lam: float) -> np.ndarray:
    """Hull–White: each return divided by its EWMA forecast, times the latest forecast (P × N)."""
    sigma = ewma_volatility(pnl.T, lam).T  # P × (N + 1)
    past, latest = sigma[:, :-1], sigma[:, -1:]
    # σ_t = 0 only when the seed is 0, i.e. every return is 0: 0/0 is then a standardised 0.
    z = np.divide(pnl, past, out=np.zeros_like(pnl), where=past > 0)
    return z * latest


def filtered_historical_var(
    returns: Any,
    level: Any = 0.99,
    lam: float = 0.94,
    weights: Any = None,
    horizon_days: int = 1,
) -> float | np.ndarray:
    """Filtered historical simulation (Hull–White 1998) VaR, a positive loss.

    The portfolio return series is standardised by its EWMA volatility forecasts
    (``ewma_volatility``), rescaled by the forecast for the next day, and the inverted-CDF HS VaR
    of those scenarios is taken. h > 1: √h × the 1-day figure (approximation).
    """
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    _, _, pnl, single = _pnl(returns, weights)
    scen = _filtered_scenarios(pnl, lam)
    return _out(_hs_var_rows(scen, alpha, "inverted_cdf") * math.sqrt(h), single)


def filtered_historical_es(
    returns: Any,
    level: Any = 0.975,
    lam: float = 0.94,
    weights: Any = None,
    horizon_days: int = 1,
) -> float | np.ndarray:
    """Acerbi–Tasche ES of the filtered-HS scenarios (see ``filtered_historical_var``)."""
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    _, _, pnl, single = _pnl(returns, weights)
    scen = _filtered_scenarios(pnl, lam)
    return _out(_hs_es_rows(scen, alpha) * math.sqrt(h), single)


def monte_carlo_var(
    returns: Any,
    weights: Any = None,
    level: Any = 0.99,
    n: int = 100_000,
    seed: int | None = 0,
    horizon_days: int = 1,
) -> float | np.ndarray:
    """Monte Carlo VaR: n draws from N(h·μ, h·Σ) (sample μ, Σ with ddof=1), inverted-CDF VaR.

    Draws come from ``numpy.random.default_rng(seed)`` through the eigen-decomposition of Σ
    (works for a singular Σ), so a seed reproduces the result exactly. Every portfolio of a 2-D
    ``weights`` sees the same draws (common random numbers), so vectorised equals looped.
    """
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    n = _whole(n, "n (number of simulations)", 1)
    r = _returns_2d(returns)
    w, single = _weights_2d(weights, r.shape[1])
    mu, cov = _moments(r)
    evals, evecs = np.linalg.eigh(cov * h)
    factor = evecs * np.sqrt(np.maximum(evals, 0.0))  # factor @ factor.T == h·Σ
    draws = np.random.default_rng(seed).standard_normal((n, r.shape[1]))
    # Portfolio returns directly: (Z Fᵀ + hμ) wᵀ = Z (F ᵀwᵀ) + h μ·w, never the n × A scenarios.
    pnl = (draws @ (factor.T @ w.T)).T + (h * (w @ mu))[:, None]
    return _out(_hs_var_rows(pnl, alpha, "inverted_cdf"), single)


def component_var(
    returns: Any,
    weights: Any,
    level: Any = 0.99,
    method: str = "parametric",
    horizon_days: int = 1,
) -> np.ndarray:
    """Euler allocation of VaR to positions; the parts sum to the portfolio VaR of ``method``.

    ``parametric``: w_i·(−μ_i·h + z·(Σw)_i·√h/σ_p) (the volatility part is 0 when σ_p = 0).
    ``historical``: −w_i·r_{s,i} on the scenario s whose portfolio loss is the inverted-CDF VaR
    (ties: any one of them), times √h. Shape A for one portfolio, P × A for 2-D weights.
    """
    alpha = tail_probability(level)
    h = _horizon(horizon_days)
    if method not in COMPONENT_METHODS:
        raise ValueError(f"method must be one of {COMPONENT_METHODS}, got {method!r}")
    r = _returns_2d(returns)
    w, single = _weights_2d(weights, r.shape[1])
    if method == "parametric":
        mu, cov = _moments(r)
        sw = w @ cov  # P × A: (Σw)_i per portfolio
        var_p = np.maximum(np.einsum("pa,pa->p", sw, w), 0.0)
        sigma = np.sqrt(var_p)
        z = -special.ndtri(float(alpha))  # Φ⁻¹(level), accurate deep in the tail
        scale = np.divide(z * math.sqrt(h), sigma, out=np.zeros_like(sigma), where=sigma > 0)
        parts = w * (-h * mu[None, :] + scale[:, None] * sw)
    else:
        pnl = w @ r.T
        k = math.ceil(alpha * pnl.shape[1])
        s = np.argpartition(pnl, k - 1, axis=1)[:, k - 1]
        parts = -w * r[s] * math.sqrt(h)
    return parts[0] if single else parts
