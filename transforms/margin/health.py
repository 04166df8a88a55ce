"""Margin health and venue liquidation rules as pure Decimal functions (no Beam).

Project rule (DESIGN.md "Risk conventions"): health = (collateral − borrow) / borrow × 100, a
percentage that is positive while collateral exceeds debt; margin call below 30, liquidation
below 15; no borrow means no health score (``None``), never a division error.

    >>> health_score(30000, 15000), margin_call_price(10, 15000), liquidation_price(10, 15000)
    (Decimal('100'), Decimal('1950.0'), Decimal('1725.00'))

Venue rules (parameters per asset in ``config/venues.toml``) are kept side by side, each named:
Aave v3 health factor (Σ collateral × LT / debt, liquidatable below 1), Compound v3
liquidateCollateralFactor (liquidatable when Σ collateral × liquidateCF < borrow) and the Maker
liquidation ratio (liquidation price = debt × LR / quantity).

Money is Decimal. Inputs may be int, Decimal, str or a finite float (taken by its ``repr``, so
0.83 is 0.83); NaN, infinities, booleans and negative amounts raise. Arithmetic runs at 50
significant digits; results are not quantised (round for display at the call site).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

Number = int | str | float | Decimal

DEFAULT_VENUES = Path(__file__).resolve().parent / "config" / "venues.toml"

WARNING = Decimal(50)
MARGIN_CALL = Decimal(30)
LIQUIDATION = Decimal(15)

_CTX = Context(prec=50, rounding=ROUND_HALF_EVEN)
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


def to_decimal(value: Number, name: str = "value", *, allow_negative: bool = False) -> Decimal:
    """Coerce ``value`` to a finite Decimal; ValueError on NaN/inf/negatives, TypeError on junk."""
    if isinstance(value, bool) or not isinstance(value, int | str | float | Decimal):
        raise TypeError(f"{name} must be int, str, Decimal or float, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        value = repr(value)
    try:
        dec = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"{name} is not a number: {value!r}") from exc
    if not dec.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if dec < 0 and not allow_negative:
        raise ValueError(f"{name} must be non-negative, got {dec}")
    return dec


# --------------------------------------------------------------------------- project rule


def health_score(collateral_usd: Number, borrow_usd: Number) -> Decimal | None:
    """(collateral − borrow) / borrow × 100; positive = over-collateralised, None with no borrow,
    at most ``HEALTH_CAP``."""
    return health_of(
        to_decimal(collateral_usd, "collateral_usd"), to_decimal(borrow_usd, "borrow_usd")
    )


# Dust debt against real collateral gives astronomic scores (1 ETH against 1e-36 ETH: 1e38).
# Beyond this the score says nothing more and would not fit the NUMERIC column: it is capped,
# far above every threshold, so no zone changes.
HEALTH_CAP = Decimal(10**15)


def health_of(collateral: Decimal, borrow: Decimal) -> Decimal | None:
    """``health_score`` of amounts already checked (finite, non-negative Decimals): the margin
    engine's hot path, which values millions of rows in a backfill. Capped at ``HEALTH_CAP``."""
    if borrow == 0:
        return None
    # _CTX's methods, not ``localcontext``: the same operations, without a context switch per row
    health = _CTX.multiply(_CTX.divide(_CTX.subtract(collateral, borrow), borrow), _HUNDRED)
    return min(health, HEALTH_CAP)


def validate_thresholds(
    warning: Number = WARNING, margin_call: Number = MARGIN_CALL, liquidation: Number = LIQUIDATION
) -> tuple[Decimal, Decimal, Decimal]:
    """Return the thresholds as Decimals; ValueError unless liquidation < margin_call < warning."""
    w = to_decimal(warning, "warning", allow_negative=True)
    m = to_decimal(margin_call, "margin_call", allow_negative=True)
    liq = to_decimal(liquidation, "liquidation", allow_negative=True)
    if not liq < m < w:
        raise ValueError(
            f"thresholds must satisfy liquidation < margin_call < warning, got {liq}, {m}, {w}"
        )
    return w, m, liq


def zone(
    health: Number | None,
    warning: Number = WARNING,
    margin_call: Number = MARGIN_CALL,
    liquidation: Number = LIQUIDATION,
) -> str:
    """Zone of a health score: each threshold is strict (health 30 is "warning", 29.99 is not).

    "no_debt" (None) | "healthy" (>= warning) | "warning" | "margin_call" | "liquidation".
    """
    w, m, liq = validate_thresholds(warning, margin_call, liquidation)
    if health is None:
        return "no_debt"
    return zone_of(to_decimal(health, "health", allow_negative=True), w, m, liq)


def zone_of(h: Decimal, w: Decimal, m: Decimal, liq: Decimal) -> str:
    """``zone`` of a checked health and thresholds (the detector's hot path)."""
    if h < liq:
        return "liquidation"
    if h < m:
        return "margin_call"
    if h < w:
        return "warning"
    return "healthy"


def liquidation_price(
    quantity: Number,
    debt_usd: Number,
    other_collateral_usd: Number = 0,
    threshold: Number = LIQUIDATION,
) -> Decimal | None:
    """Collateral price p at which health = threshold: p = ((1 + threshold/100)·D − other) / q.

    Health falls as p falls, so the position is in the zone below ``threshold`` at prices under
    the result. None with no debt; 0 (never negative) when ``other_collateral_usd`` alone keeps
    health at or above the threshold.
    """
    q = to_decimal(quantity, "quantity")
    debt = to_decimal(debt_usd, "debt_usd")
    other = to_decimal(other_collateral_usd, "other_collateral_usd")
    t = to_decimal(threshold, "threshold", allow_negative=True)
    if debt == 0:
        return None
    return price_at_factor(q, debt, other, threshold_factor(t))


def threshold_factor(threshold: Decimal) -> Decimal:
    """1 + threshold/100: the collateral-to-debt ratio at which health equals ``threshold``."""
    with localcontext(_CTX):
        return 1 + threshold / _HUNDRED


# A liquidation price above this (dust collateral against real debt) is never reached by any
# feed (their circuit breakers stop at 1e10 USD) and would not fit NUMERIC: it is reported as null.
UNREACHABLE_PRICE = Decimal(10**15)


def reachable(price: Decimal) -> Decimal | None:
    """``price``, or None when no market can reach it (above ``UNREACHABLE_PRICE``)."""
    return None if price > UNREACHABLE_PRICE else price


def price_at_factor(q: Decimal, debt: Decimal, other: Decimal, factor: Decimal) -> Decimal:
    """``liquidation_price`` of checked Decimals (debt > 0) with ``threshold_factor`` precomputed:
    the margin engine's hot path."""
    needed = _CTX.subtract(_CTX.multiply(factor, debt), other)
    if needed <= 0:
        return _ZERO
    if q == 0:
        raise ValueError("quantity must be positive when the debt needs this collateral")
    return _CTX.divide(needed, q)


def margin_call_price(
    quantity: Number, debt_usd: Number, other_collateral_usd: Number = 0
) -> Decimal | None:
    """``liquidation_price`` at the margin-call threshold 30: p = (1.30·D − other) / q."""
    return liquidation_price(quantity, debt_usd, other_collateral_usd, threshold=MARGIN_CALL)


# --------------------------------------------------------------------------- venue rules


def _weighted_sum(collateral: Mapping[str, Number], factors: Mapping[str, Number], what: str):
    total = weighted = _ZERO
    with localcontext(_CTX):
        for asset, usd in collateral.items():
            if asset not in factors:
                raise ValueError(f"no {what} for collateral asset {asset!r}")
            value = to_decimal(usd, f"collateral[{asset}]")
            factor = to_decimal(factors[asset], f"{what}[{asset}]")
            total += value
            weighted += value * factor
    return total, weighted


def aave_health_factor(
    collateral: Mapping[str, Number], debt_usd: Number, lts: Mapping[str, Number]
) -> Decimal | None:
    """Aave v3 health factor Σ collateral_i × LT_i / debt; liquidatable below 1; None with no debt."""
    debt = to_decimal(debt_usd, "debt_usd")
    _, weighted = _weighted_sum(collateral, lts, "liquidation threshold")
    if debt == 0:
        return None
    with localcontext(_CTX):
        return weighted / debt


def aave_weighted_lt(collateral: Mapping[str, Number], lts: Mapping[str, Number]) -> Decimal | None:
    """Aave v3 average liquidation threshold Σ collateral_i × LT_i / Σ collateral_i (None if 0)."""
    total, weighted = _weighted_sum(collateral, lts, "liquidation threshold")
    if total == 0:
        return None
    with localcontext(_CTX):
        return weighted / total


def aave_liquidatable(
    collateral: Mapping[str, Number], debt_usd: Number, lts: Mapping[str, Number]
) -> bool:
    """Aave v3: liquidatable when the health factor is below 1 (never without debt)."""
    hf = aave_health_factor(collateral, debt_usd, lts)
    return hf is not None and hf < 1


def aave_liquidation_price(
    quantity: Number, debt_usd: Number, lt: Number, other_adjusted_collateral_usd: Number = 0
) -> Decimal | None:
    """Aave v3 price at which HF = 1: p = (D − Σ other collateral × LT) / (q × LT); clamped at 0."""
    return _venue_price(quantity, debt_usd, lt, other_adjusted_collateral_usd, "lt")


def compound_liquidatable(
    collateral: Mapping[str, Number], borrow_usd: Number, liquidate_cfs: Mapping[str, Number]
) -> bool:
    """Compound v3 (Comet): liquidatable when Σ collateral_i × liquidateCF_i < borrow."""
    borrow = to_decimal(borrow_usd, "borrow_usd")
    _, weighted = _weighted_sum(collateral, liquidate_cfs, "liquidateCollateralFactor")
    return weighted < borrow


def compound_liquidation_price(
    quantity: Number,
    borrow_usd: Number,
    liquidate_cf: Number,
    other_adjusted_collateral_usd: Number = 0,
) -> Decimal | None:
    """Compound v3: liquidatable below p = (borrow − Σ other × CF) / (q × liquidateCF); clamp 0."""
    return _venue_price(
        quantity, borrow_usd, liquidate_cf, other_adjusted_collateral_usd, "liquidate_cf"
    )


def maker_liquidation_price(
    quantity: Number, debt: Number, liquidation_ratio: Number
) -> Decimal | None:
    """Maker vault: liquidation price = debt × liquidation ratio / quantity; None with no debt."""
    q = to_decimal(quantity, "quantity")
    d = to_decimal(debt, "debt")
    lr = to_decimal(liquidation_ratio, "liquidation_ratio")
    if d == 0:
        return None
    if q == 0:
        raise ValueError("quantity must be positive when the vault has debt")
    with localcontext(_CTX):
        return d * lr / q


def _venue_price(
    quantity: Number, debt_usd: Number, factor: Number, other: Number, name: str
) -> Decimal | None:
    q = to_decimal(quantity, "quantity")
    debt = to_decimal(debt_usd, "debt_usd")
    f = to_decimal(factor, name)
    o = to_decimal(other, "other_adjusted_collateral_usd")
    if debt == 0:
        return None
    with localcontext(_CTX):
        needed = debt - o
        if needed <= 0:
            return _ZERO
        if q == 0 or f == 0:
            raise ValueError(f"quantity and {name} must be positive when the debt needs them")
        return needed / (q * f)


# --------------------------------------------------------------------------- venues.toml

# rule -> (per-asset key, lower bound exclusive, upper bound inclusive or None)
RULES: dict[str, tuple[str, Decimal, Decimal | None]] = {
    "aave_health_factor": ("liquidation_threshold", _ZERO, Decimal(1)),
    "compound_liquidate_cf": ("liquidate_collateral_factor", _ZERO, Decimal(1)),
    "maker_liquidation_ratio": ("liquidation_ratio", Decimal(1), None),
}


class VenueConfigError(ValueError):
    """venues.toml is invalid; the message names the venue, the asset and the key."""


@dataclass(frozen=True)
class Venue:
    name: str
    rule: str
    key: str
    as_of: date
    source: str
    params: Mapping[str, Decimal]  # asset -> the rule's per-asset parameter


def load_venues(path: str | Path | None = None) -> dict[str, Venue]:
    """Read and validate venues.toml (numbers parsed as Decimal, not float)."""
    path = Path(path or DEFAULT_VENUES)
    try:
        data = tomllib.loads(path.read_text(), parse_float=Decimal)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise VenueConfigError(f"cannot read venue config {path}: {exc}") from exc
    raw_venues = data.get("venue")
    if not isinstance(raw_venues, dict) or not raw_venues:
        raise VenueConfigError(f"{path}: no [venue.<name>] tables")
    return {name: _venue(path, name, raw) for name, raw in raw_venues.items()}


def _venue(path: Path, name: str, raw: Any) -> Venue:
    where = f"{path}: venue {name!r}"
    if not isinstance(raw, dict):
        raise VenueConfigError(f"{where}: must be a table")
    for key in ("rule", "as_of", "source", "assets"):
        if key not in raw:
            raise VenueConfigError(f"{where}: missing key {key!r}")
    rule = raw["rule"]
    if rule not in RULES:
        raise VenueConfigError(f"{where}, key 'rule': must be one of {sorted(RULES)}, got {rule!r}")
    if not isinstance(raw["as_of"], date):
        raise VenueConfigError(f"{where}, key 'as_of': must be a TOML date (YYYY-MM-DD)")
    if not isinstance(raw["source"], str) or not raw["source"].strip():
        raise VenueConfigError(f"{where}, key 'source': must be a non-empty string")
    assets = raw["assets"]
    if not isinstance(assets, dict) or not assets:
        raise VenueConfigError(f"{where}, key 'assets': must be a non-empty table")
    key, low, high = RULES[rule]
    params: dict[str, Decimal] = {}
    for asset, table in assets.items():
        at = f"{where}, asset {asset!r}, key {key!r}"
        if not isinstance(table, dict) or key not in table:
            raise VenueConfigError(f"{at}: missing")
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            raise VenueConfigError(f"{at}: must be a number, got {value!r}")
        try:
            dec = to_decimal(value, key)
        except ValueError as exc:
            raise VenueConfigError(f"{at}: {exc}") from exc
        if not (dec > low and (high is None or dec <= high)):
            bound = f"in ({low}, {high}]" if high is not None else f"above {low}"
            raise VenueConfigError(f"{at}: must be {bound}, got {dec}")
        params[asset] = dec
    return Venue(name, rule, key, raw["as_of"], raw["source"].strip(), params)
