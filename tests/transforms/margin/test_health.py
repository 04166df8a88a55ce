"""Margin health (project rule) and venue liquidation rules: worked examples, exactly."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.margin.health import (
    DEFAULT_VENUES,
    VenueConfigError,
    aave_health_factor,
    aave_liquidatable,
    aave_liquidation_price,
    aave_weighted_lt,
    compound_liquidatable,
    compound_liquidation_price,
    health_score,
    liquidation_price,
    load_venues,
    maker_liquidation_price,
    margin_call_price,
    to_decimal,
    validate_thresholds,
    zone,
)

D = Decimal
CENT = D("0.01")


# ------------------------------------------------------------------ worked examples


def test_worked_example_project_rule():
    # 10 ETH at $3,000 against 15,000 USDC of debt
    assert health_score(10 * 3000, 15000) == D("100.0")
    assert margin_call_price(10, 15000).quantize(CENT) == D("1950.00")
    assert liquidation_price(10, 15000).quantize(CENT) == D("1725.00")
    # exact, not only after rounding
    assert margin_call_price(10, 15000) == D("1950")
    assert liquidation_price(10, 15000) == D("1725")
    assert zone(health_score(30000, 15000)) == "healthy"


def test_worked_example_aave_single_collateral():
    lts = load_venues()["aave_v3_ethereum"].params
    assert lts["WETH"] == D("0.83")
    hf = aave_health_factor({"WETH": D(30000)}, D(15000), lts)
    assert hf == D("1.66")
    price = aave_liquidation_price(10, 15000, lts["WETH"])
    assert price.quantize(D("0.0000001"), rounding=ROUND_HALF_EVEN) == D("1807.2289157")
    assert not aave_liquidatable({"WETH": 30000}, 15000, lts)
    # just below the liquidation price the position is liquidatable
    assert aave_liquidatable({"WETH": 10 * D("1807.22")}, 15000, lts)


def test_worked_example_aave_multi_collateral():
    lts = {"WETH": D("0.83"), "WBTC": D("0.78")}
    collateral = {"WETH": 10 * D(3000), "WBTC": D("0.5") * 60000}
    assert aave_weighted_lt(collateral, lts) == D("0.805")
    assert aave_health_factor(collateral, 30000, lts) == D("1.61")


def test_worked_example_compound():
    cfs = load_venues()["compound_v3_usdc"].params
    assert cfs["WETH"] == D("0.90")
    price = compound_liquidation_price(10, 15000, cfs["WETH"])
    assert price.quantize(CENT, rounding=ROUND_HALF_UP) == D("1666.67")
    assert not compound_liquidatable({"WETH": 10 * D("1666.67")}, 15000, cfs)
    assert compound_liquidatable({"WETH": 10 * D("1666.66")}, 15000, cfs)
    assert not compound_liquidatable({"WETH": 30000}, 0, cfs)


def test_worked_example_maker():
    lr = load_venues()["maker_eth_a"].params["ETH"]
    assert lr == D("1.45")
    assert maker_liquidation_price(10, 15000, lr).quantize(CENT) == D("2175.00")
    assert maker_liquidation_price(10, 15000, lr) == D("2175")
    assert maker_liquidation_price(10, 0, lr) is None


# ------------------------------------------------------------------ no debt, inputs


def test_no_borrow_is_no_score_not_an_error():
    assert health_score(30000, 0) is None
    assert zone(health_score(30000, 0)) == "no_debt"
    assert zone(None) == "no_debt"
    assert liquidation_price(10, 0) is None
    assert margin_call_price(10, 0) is None
    assert aave_health_factor({"WETH": 30000}, 0, {"WETH": "0.83"}) is None
    assert not aave_liquidatable({"WETH": 30000}, 0, {"WETH": "0.83"})
    assert aave_liquidation_price(10, 0, "0.83") is None
    assert compound_liquidation_price(10, 0, "0.9") is None


def test_zero_collateral_is_minus_100():
    assert health_score(0, 100) == D(-100)
    assert zone(D(-100)) == "liquidation"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "NaN", D("Infinity")])
def test_non_finite_inputs_rejected(bad):
    with pytest.raises(ValueError):
        health_score(bad, 100)
    with pytest.raises(ValueError):
        liquidation_price(10, bad)


def test_negative_inputs_rejected():
    with pytest.raises(ValueError, match="collateral_usd"):
        health_score(-1, 100)
    with pytest.raises(ValueError, match="borrow_usd"):
        health_score(100, "-0.01")
    with pytest.raises(ValueError, match="quantity"):
        liquidation_price(-1, 100)


def test_input_types():
    assert health_score("300", 100) == health_score(D(300), 100) == health_score(300.0, 100)
    assert to_decimal(0.83) == D("0.83")  # a float is taken by its repr, not its binary value
    with pytest.raises(TypeError):
        to_decimal(True)
    with pytest.raises(ValueError):
        to_decimal("abc")


# ------------------------------------------------------------------ zones


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("100", "healthy"),
        ("50", "healthy"),
        ("49.99", "warning"),
        ("30", "warning"),
        ("29.99", "margin_call"),
        ("15", "margin_call"),
        ("14.99", "liquidation"),
        ("-100", "liquidation"),
    ],
)
def test_zone_boundaries(health, expected):
    assert zone(D(health)) == expected


def test_zone_custom_thresholds():
    assert zone(D(45), warning=60, margin_call=45, liquidation=20) == "warning"
    assert zone(D(44), warning=60, margin_call=45, liquidation=20) == "margin_call"
    assert zone(D(55), warning=60, margin_call=45, liquidation=20) == "warning"


@pytest.mark.parametrize(
    ("warning", "margin_call", "liquidation"),
    [(30, 30, 15), (50, 15, 30), (50, 30, 30), (20, 30, 15), (50, float("nan"), 15)],
)
def test_thresholds_validated(warning, margin_call, liquidation):
    with pytest.raises(ValueError):
        validate_thresholds(warning, margin_call, liquidation)
    with pytest.raises(ValueError):
        zone(D(40), warning, margin_call, liquidation)


# ------------------------------------------------------------------ liquidation price


def test_liquidation_price_with_other_collateral():
    # 1.15 * 15000 = 17250; 5000 of other collateral leaves 12250 for 10 units
    assert liquidation_price(10, 15000, other_collateral_usd=5000) == D("1225")


def test_liquidation_price_clamps_at_zero():
    assert liquidation_price(10, 15000, other_collateral_usd=20000) == 0
    assert liquidation_price(10, 15000, other_collateral_usd=17250) == 0  # exactly at threshold
    assert margin_call_price(0, 15000, other_collateral_usd=100000) == 0
    assert aave_liquidation_price(10, 15000, "0.83", other_adjusted_collateral_usd=15000) == 0
    assert compound_liquidation_price(10, 15000, "0.9", other_adjusted_collateral_usd=16000) == 0


def test_liquidation_price_needs_quantity():
    with pytest.raises(ValueError, match="quantity"):
        liquidation_price(0, 15000)


_money = st.decimals(min_value=D("0.01"), max_value=D("1e12"), places=2)
_qty = st.decimals(min_value=D("1e-8"), max_value=D("1e9"), places=8)
_threshold = st.decimals(min_value=D("-99"), max_value=D("500"), places=4)


@settings(max_examples=200, deadline=None)
@given(q=_qty, debt=_money, other=_money, threshold=_threshold)
def test_health_at_liquidation_price_equals_threshold(q, debt, other, threshold):
    price = liquidation_price(q, debt, other, threshold)
    assert price is not None and price >= 0
    with localcontext() as ctx:
        ctx.prec = 50
        collateral = q * price + other
    health = health_score(collateral, debt)
    if price == 0:  # clamped: other collateral alone keeps health at or above the threshold
        assert health >= threshold
    else:
        assert abs(health - threshold) <= D("1e-20") * max(abs(threshold), D(1))


# ------------------------------------------------------------------ venues.toml


def test_venues_load():
    venues = load_venues()
    assert set(venues) == {"aave_v3_ethereum", "compound_v3_usdc", "maker_eth_a"}
    aave = venues["aave_v3_ethereum"]
    assert aave.rule == "aave_health_factor"
    assert aave.params == {
        "WETH": D("0.83"),
        "WBTC": D("0.78"),
        "USDC": D("0.78"),
        "DAI": D("0.77"),
        "USDT": D("0.78"),
    }
    assert venues["compound_v3_usdc"].params == {"WETH": D("0.90"), "WBTC": D("0.85")}
    for venue in venues.values():
        assert isinstance(venue.as_of, date)
        assert venue.source
    assert load_venues(DEFAULT_VENUES) == venues


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_VENUES.read_text()
    assert old in text
    path = tmp_path / "venues.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        (
            "WBTC = { liquidation_threshold = 0.78 }",
            "WBTC = { liquidation_threshold = 1.78 }",
            ["aave_v3_ethereum", "WBTC", "liquidation_threshold"],
        ),
        (
            "WETH = { liquidate_collateral_factor = 0.90 }",
            "WETH = { liquidate_collateral_factor = 'x' }",
            ["compound_v3_usdc", "WETH", "liquidate_collateral_factor"],
        ),
        (
            "ETH = { liquidation_ratio = 1.45 }",
            "ETH = { liquidation_ratoi = 1.45 }",
            ["maker_eth_a", "ETH", "liquidation_ratio"],
        ),
        (
            "ETH = { liquidation_ratio = 1.45 }",
            "ETH = { liquidation_ratio = nan }",
            ["maker_eth_a", "ETH", "liquidation_ratio"],
        ),
        ('rule = "maker_liquidation_ratio"', 'rule = "maker"', ["maker_eth_a", "rule"]),
        ("as_of = 2026-11-22", 'as_of = "yesterday"', ["aave_v3_ethereum", "as_of"]),
    ],
)
def test_broken_venues_name_the_key(tmp_path, old, new, names):
    with pytest.raises(VenueConfigError) as err:
        load_venues(_broken(tmp_path, old, new))
    for name in names:
        assert repr(name) in str(err.value)


def test_unreadable_venues(tmp_path):
    with pytest.raises(VenueConfigError, match="cannot read"):
        load_venues(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[venue.x\n")
    with pytest.raises(VenueConfigError, match="cannot read"):
        load_venues(bad)
