"""PositionBook: idempotent settlements, refused negative balances, valuation, exposure matrix."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from schemas.events import Settlement
from tests.support.factories import settlement
from transforms.common.positions import (
    PositionBook,
    SettlementRecord,
    exposure_matrix,
    settlement_model,
    settlement_order,
    settlement_record,
)

T = datetime(2025, 1, 6, tzinfo=UTC)


def s(
    i: int, kind: str, asset: str, amount: str, decimals: int = 18, account: str = "a"
) -> Settlement:
    return settlement(f"s{i}", account, kind, asset, amount, T, decimals)


def test_the_worked_example_book_values_to_health_100():
    book = PositionBook("a")
    assert book.apply(s(1, "deposit", "ETH", "10")).applied
    assert book.apply(s(2, "borrow", "USDC", "15000", 6)).applied
    coll, debt = book.value_usd({"ETH": Decimal(3000), "USDC": Decimal(1)})
    assert (coll, debt) == (Decimal(30000), Decimal(15000))
    assert (coll - debt) / debt * 100 == 100


def test_redelivery_is_applied_once():
    book = PositionBook("a")
    assert book.apply(s(1, "deposit", "ETH", "1.5")).applied
    out = book.apply(s(1, "deposit", "ETH", "1.5"))
    assert (out.applied, out.reason) == (False, "duplicate") and book.collateral == {
        "ETH": Decimal("1.5")
    }


def test_withdraw_repay_and_liquidation_reduce_and_close_positions():
    book = PositionBook("a")
    for i, (kind, asset, amount) in enumerate(
        [
            ("deposit", "ETH", "2"),
            ("borrow", "DAI", "100"),
            ("withdraw", "ETH", "0.5"),
            ("liquidation", "ETH", "1.5"),
            ("repay", "DAI", "100"),
        ]
    ):
        assert book.apply(s(i, kind, asset, amount)).applied, kind
    assert book.is_closed()


def test_a_balance_below_zero_is_refused_not_clipped():
    book = PositionBook("a")
    book.apply(s(1, "deposit", "ETH", "1"))
    out = book.apply(s(2, "withdraw", "ETH", "2"))
    assert (out.applied, out.reason) == (False, "negative_balance") and book.collateral == {
        "ETH": Decimal(1)
    }
    assert "s2" not in book.seen  # a later, corrected redelivery may still apply


def test_valuation_names_a_missing_price_and_foreign_settlements_are_errors():
    book = PositionBook("a")
    book.apply(s(1, "deposit", "WBTC", "1", 8))
    with pytest.raises(KeyError, match="WBTC"):
        book.value_usd({"ETH": Decimal(1)})
    with pytest.raises(ValueError, match="is for b"):
        book.apply(s(2, "deposit", "ETH", "1", account="b"))


def test_exposure_matrix_is_collateral_minus_debt_in_usd():
    a, b = PositionBook("a"), PositionBook("b")
    a.apply(s(1, "deposit", "ETH", "10"))
    a.apply(s(2, "borrow", "USDC", "15000", 6))
    b.apply(s(3, "deposit", "BTC", "0.5", 8, account="b"))
    m = exposure_matrix(
        [a, b], ["BTC", "ETH", "USDC"], {"BTC": 60000.0, "ETH": 3000.0, "USDC": 1.0}
    )
    np.testing.assert_allclose(m, [[0, 30000, -15000], [30000, 0, 0]])
    # A 10 % ETH drop and a flat dollar: account a loses 3,000, account b nothing.
    np.testing.assert_allclose(m @ np.array([0.0, -0.10, 0.0]), [-3000, 0])


def test_a_settlement_record_is_the_model_as_a_tuple_and_applies_the_same():
    """Stateful stages carry ``SettlementRecord`` tuples: the same fields as the contract (a new
    field fails here), the same book, order and model back."""
    assert SettlementRecord._fields == tuple(Settlement.model_fields)
    models = [
        s(1, "deposit", "ETH", "1.5"),
        s(2, "borrow", "USDC", "100", 6),
        s(3, "withdraw", "ETH", "2"),
    ]
    records = [settlement_record(m) for m in models]
    by_model, by_record = PositionBook("a"), PositionBook("a")
    outcomes = [
        (by_model.apply(m), by_record.apply(r)) for m, r in zip(models, records, strict=True)
    ]
    assert [a == b for a, b in outcomes] == [True, True, True]
    assert outcomes[2][1].reason == "negative_balance"
    assert (by_model.collateral, by_model.debt) == (by_record.collateral, by_record.debt)
    assert [settlement_order(r) for r in records] == [settlement_order(m) for m in models]
    assert [settlement_model(r) for r in records] == models
    assert settlement_model(models[0]) is models[0]
    assert settlement_model(records[0]).model_dump_json() == models[0].model_dump_json()
