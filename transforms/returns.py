"""Returns from composite prices (pure): daily closes per asset and aligned return matrices.

A day's close is the last non-null composite price at or before the end of that UTC day (a
``price_unavailable`` window never becomes a close). Returns are simple, c_t / c_{t-1} - 1,
between consecutive closes; when a day is missing, the next return spans the gap (as the
Bitstamp series' 13-day gap in 2019 does), and ``aligned_returns`` keeps only the days on which
every asset has a close, so a row of the matrix is one joint scenario.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

import numpy as np


def daily_closes(
    observations: Iterable[tuple[str, datetime, float | None]],
) -> dict[str, dict[date, float]]:
    """(asset, time, price) -> {asset: {day: close}}. Null prices are skipped."""
    latest: dict[tuple[str, date], tuple[datetime, float]] = {}
    for asset, when, price in observations:
        if price is None:
            continue
        if not np.isfinite(price) or price <= 0:
            raise ValueError(
                f"{asset} close at {when.isoformat()} is not a positive finite price: {price}"
            )
        # A window ending exactly at midnight belongs to the day it closes.
        t = when.astimezone(UTC)
        day = (
            (t - _EPS).date()
            if (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0)
            else t.date()
        )
        key = (asset, day)
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, float(price))
    out: dict[str, dict[date, float]] = {}
    for (asset, day), (_, price) in sorted(latest.items()):
        out.setdefault(asset, {})[day] = price
    return out


def aligned_returns(
    closes: dict[str, dict[date, float]],
    assets: list[str],
    end: date | None = None,
    window: int = 730,
) -> tuple[list[date], np.ndarray]:
    """The last ``window`` joint daily returns up to ``end``: (days, days x assets matrix)."""
    missing = [a for a in assets if a not in closes]
    if missing:
        raise KeyError(f"no closes for {', '.join(missing)}")
    common = sorted(set.intersection(*(set(closes[a]) for a in assets))) if assets else []
    if end is not None:
        common = [d for d in common if d <= end]
    common = common[-(window + 1) :]
    if len(common) < 2:
        return [], np.empty((0, len(assets)))
    levels = np.array([[closes[a][d] for a in assets] for d in common])
    return common[1:], levels[1:] / levels[:-1] - 1.0


_EPS = datetime(2000, 1, 1, 0, 0, 0, 1) - datetime(2000, 1, 1)
