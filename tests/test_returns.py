"""Daily closes and aligned returns from composite prices."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from transforms.returns import aligned_returns, daily_closes


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, tzinfo=UTC)


def test_close_is_the_last_non_null_price_of_the_utc_day_and_midnight_belongs_to_the_day_before():
    closes = daily_closes(
        [
            ("ETH", at(6, 12), 3000.0),
            ("ETH", at(6, 23, 59), 3010.0),
            ("ETH", at(7), 3020.0),
            ("ETH", at(7, 0, 1), 3030.0),
            ("ETH", at(7, 23), None),
        ]
    )
    assert closes == {"ETH": {date(2025, 1, 6): 3020.0, date(2025, 1, 7): 3030.0}}


def test_aligned_returns_keep_joint_days_and_span_gaps():
    closes = {
        "BTC": {date(2025, 1, d): p for d, p in [(1, 100.0), (2, 110.0), (3, 99.0), (5, 99.0)]},
        "ETH": {
            date(2025, 1, d): p for d, p in [(1, 10.0), (2, 10.0), (3, 11.0), (4, 12.0), (5, 13.2)]
        },
    }
    days, r = aligned_returns(closes, ["BTC", "ETH"])
    assert days == [date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 5)]
    np.testing.assert_allclose(r, [[0.10, 0.0], [-0.10, 0.10], [0.0, 0.2]])
    days, r = aligned_returns(closes, ["BTC", "ETH"], end=date(2025, 1, 3), window=1)
    assert days == [date(2025, 1, 3)] and r.shape == (1, 2)


def test_bad_prices_and_missing_assets_are_clear_errors():
    with pytest.raises(ValueError, match="not a positive finite price"):
        daily_closes([("ETH", at(6), float("nan"))])
    with pytest.raises(KeyError, match="SOL"):
        aligned_returns({"ETH": {}}, ["ETH", "SOL"])
    assert aligned_returns({"ETH": {date(2025, 1, 1): 1.0}}, ["ETH"])[1].shape == (0, 1)
