"""The margin engine fed a day at a time, for the backfill (pure, no Beam): ``price_ticks`` turns
a day's composite rows into the engine's ``TickColumns``, and ``margin_day`` advances a shard's
``MarginShardEngine`` through the day with ``advance_batch`` (the stream's output, account by
account), returning ``margin_health`` and ``margin_events`` tables.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codegen import arrow_schema
from schemas.events import Settlement
from schemas.tables import (
    MarginEventRow,
    MarginHealthRow,
)
from transforms.common.columns import NANO, day_bounds_us, to_micros, to_nano
from transforms.margin.engine import TickColumns

HEALTH_SCHEMA = arrow_schema(MarginHealthRow)


EVENTS_SCHEMA = arrow_schema(MarginEventRow)


# --------------------------------------------------------------------------------- margin
def price_ticks(prices: pa.Table):
    """A day's composite rows as the margin engine's ``TickColumns`` (arrays, no object per
    row; the Decimal price of a row is made only when the engine values an account with it)."""
    price = prices["price"]
    unavailable = pc.is_null(price).to_numpy(zero_copy_only=False)
    nano = to_nano(pc.fill_null(price, pa.scalar(0, price.type))) if len(price) else np.zeros(0)
    return TickColumns(
        t_us=to_micros(prices["event_time"]),
        asset=np.asarray(prices["asset"].to_pylist(), dtype=object),
        status=np.asarray(prices["status"].to_pylist(), dtype=object),
        price_f=np.where(unavailable, np.nan, nano / NANO),
        nano=nano,
    )


def margin_day(engine, settlements: list[Settlement], ticks: list, day: date):
    """Advances a shard's ``MarginShardEngine`` through one day (the streaming engine itself, fed
    the day's composite price ticks and settlements, with ``advance_batch``: the same output as
    ``advance``, account by account); returns (health, events, rejected).
    Closed accounts are purged at the end of the day (the stream purges them as its watermark
    passes their purge time)."""
    _, end = day_bounds_us(day)
    out, later_s, later_t = engine.advance_batch(settlements, ticks, end)
    if later_s or later_t:
        raise ValueError(f"{day}: settlements or prices after the day's end were passed in")
    engine.purge(end)
    dumped = [r if isinstance(r, dict) else r.model_dump() for _, r in out.health]
    health = pa.Table.from_pylist(dumped, schema=HEALTH_SCHEMA)
    events = pa.Table.from_pylist([r.model_dump() for _, r in out.events], schema=EVENTS_SCHEMA)
    return health, events, out.rejected
