"""``MarginShardEngine.advance_batch`` (the backfill's path) against ``advance`` (the stream's):
the same rows, events, alerts, refusals and state, batch after batch, on random markets built
to cross zones, flap inside the hysteresis band, go doubtful or unpriced, tick partially or
stale, and open, close and reopen accounts."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas.tables import MarginHealthRow
from schemas.types import epoch_micros
from tests.support.factories import settlement
from transforms.margin.engine import MarginConfig, MarginShardEngine, PriceTick

T0 = datetime(2025, 3, 1, tzinfo=UTC)
ASSETS = {"ETH": ("3000", 18), "BTC": ("60000", 8), "USDC": ("1", 6), "SOL": ("150", 9)}


def _us(seconds: int) -> int:
    return epoch_micros(T0 + timedelta(seconds=seconds))


def market(rng: random.Random, lo_s: int, hi_s: int, state: dict) -> list[PriceTick]:
    """Minute ticks in [lo_s, hi_s): random walks with jumps (zones are crossed), partial packs,
    doubtful and unavailable prices, a late asset (SOL from the second hour) and stale ticks."""
    ticks = []
    for second in range(lo_s, hi_s, 60):
        for asset in ASSETS:
            if asset == "SOL" and second < 3600:
                continue
            if rng.random() < 0.15:  # this asset does not tick this minute
                continue
            price = state.setdefault(asset, float(ASSETS[asset][0]))
            if asset != "USDC":
                price *= 1 + rng.gauss(0, 0.02) + (rng.random() < 0.03) * rng.choice([-0.2, 0.2])
            state[asset] = price
            roll = rng.random()
            status = "ok" if roll < 0.9 else ("degraded" if roll < 0.96 else "price_unavailable")
            value = None if status == "price_unavailable" else Decimal(f"{price:.9f}")
            ticks.append(PriceTick(asset, _us(second), value, status))
        if rng.random() < 0.05 and second > lo_s + 120:  # a stale tick, older than its asset's
            asset = rng.choice(list(ASSETS))
            ticks.append(PriceTick(asset, _us(second - 120), Decimal("1.5"), "ok"))
    rng.shuffle(ticks)
    return ticks


def flows(rng: random.Random, lo_s: int, hi_s: int, n_accounts: int, serial: list[int]):
    """Settlements in [lo_s, hi_s), some on the minute (the same instant as a price), duplicates,
    over-withdrawals (refused), and a few stamped before ``lo_s`` (late, or too late)."""
    out = []
    for _ in range(n_accounts * 2):
        account = f"a{rng.randrange(n_accounts)}"
        second = rng.randrange(lo_s, hi_s)
        if rng.random() < 0.2:
            second -= second % 60
        if rng.random() < 0.04 and lo_s > 0:
            second = lo_s - rng.choice([30, 300, 5000])
        asset = rng.choice(["ETH", "BTC", "SOL"]) if rng.random() < 0.8 else "USDC"
        kind = rng.choice(["deposit", "deposit", "borrow", "borrow", "repay", "withdraw"])
        if kind in ("borrow", "repay"):
            asset = "USDC" if rng.random() < 0.7 else asset
        price, decimals = ASSETS[asset]
        usd = rng.choice([500, 2000, 8000, 20000])
        amount = Decimal(usd) / Decimal(price) * Decimal(rng.uniform(0.5, 1.5))
        serial[0] += 1
        s = settlement(f"s{serial[0]:06d}", account, kind, asset, f"{amount:.6f}",
                       T0 + timedelta(seconds=second), decimals=decimals)  # fmt: skip
        out.append(s)
        if rng.random() < 0.03:
            out.append(s)  # redelivered
    rng.shuffle(out)
    return out


def _rows(out) -> dict[str, list]:
    return {
        "health": sorted(
            (t, repr(r if isinstance(r, dict) else r.model_dump())) for t, r in out.health
        ),
        "events": sorted((t, e.alert_id, repr(e.model_dump())) for t, e in out.events),
        "alerts": sorted((t, a.alert_id, repr(a.model_dump())) for t, a in out.alerts),
        "rejected": sorted(
            (r.settlement.event_id, r.outcome.reason, r.outcome.message) for r in out.rejected
        ),
        "stale": out.stale_prices,
    }


def _state(eng: MarginShardEngine) -> dict:
    return {
        "books": {a: (b.collateral, b.debt, list(b.seen)) for a, b in eng.books.items()},
        "zones": {a: (s.zone, s.last_alert) for a, s in eng.states.items()},
        "zone_code": {a: int(eng.zone_code[r]) for a, r in eng.row_of.items()},
        "clock": (eng.processed_us, eng.next_snapshot_us),
        "prices": (eng.prices, eng.status, eng.price_us),
        "closed_at": eng.closed_at,
    }


@pytest.mark.parametrize(
    ("seed", "snapshot_s", "hour_batches"),
    [(1, 600, 6), (2, 0, 4), (3, 86_400, 30), (4, 3600, 8), (5, 1200, 5)],
)
def test_advance_batch_equals_advance_batch_after_batch(seed, snapshot_s, hour_batches):
    rng = random.Random(seed)
    cfg = MarginConfig(snapshot_s=snapshot_s, allowed_lateness_s=600)
    # the backfill's engine: rows as dicts, which must be the stream's models dumped
    stream, batch = MarginShardEngine(cfg), MarginShardEngine(cfg, dict_rows=True)
    walk, serial, totals = {}, [0], {"health": 0, "events": 0, "price_rows": 0}
    for h in range(hour_batches):
        lo, hi = h * 3600, (h + 1) * 3600
        ticks, setts = market(rng, lo, hi, walk), flows(rng, lo, hi, 40, serial)
        a = stream.advance(setts, ticks, _us(hi))
        b = batch.advance_batch(setts, ticks, _us(hi))
        assert _rows(a[0]) == _rows(b[0]), f"hour {h}"
        assert a[1] == b[1] and a[2] == b[2]
        assert stream.purge(_us(hi)) == batch.purge(_us(hi))
        assert _state(stream) == _state(batch), f"hour {h}"
        totals["health"] += len(a[0].health)
        totals["events"] += len(a[0].events)
        totals["price_rows"] += sum(r.trigger == "price" for _, r in a[0].health)
    # the market did what the test is for: zone changes on prices, events, and snapshots
    assert totals["price_rows"] > 20 and totals["events"] > 10, totals


def test_advance_batch_of_an_engine_restored_mid_run():
    """The backfill saves an engine at a chunk's end and restores it: batch after restore equals
    the stream that never stopped."""
    rng = random.Random(9)
    cfg = MarginConfig(snapshot_s=1800)
    stream, batch = MarginShardEngine(cfg), MarginShardEngine(cfg)
    walk, serial = {}, [0]
    for h in range(4):
        lo, hi = h * 3600, (h + 1) * 3600
        ticks, setts = market(rng, lo, hi, walk), flows(rng, lo, hi, 30, serial)
        a = stream.advance(setts, ticks, _us(hi))
        b = batch.advance_batch(setts, ticks, _us(hi))
        batch = pickle.loads(pickle.dumps(batch))
        assert _rows(a[0]) == _rows(b[0])


def test_advance_batch_flapping_account_stays_in_margin_call_inside_the_band():
    """Health 29.9 / 30.1 / 31.9 / 32.1: one margin call, recovery only at 32 and above."""
    cfg = MarginConfig(snapshot_s=0)
    eng = MarginShardEngine(cfg)
    opened = [
        settlement("d", "x", "deposit", "ETH", "10", T0, decimals=18),
        settlement("b", "x", "borrow", "USDC", "15000", T0 + timedelta(seconds=1), decimals=6),
    ]
    # health = (10 p - 15000) / 15000 * 100 -> p = 1500 * (1 + h / 100)
    healths = ["60", "29.9", "30.1", "29.9", "31.9", "30.1", "32.1", "29.9"]
    ticks = [PriceTick("USDC", _us(0), Decimal(1), "ok")] + [
        PriceTick("ETH", _us(60 * (i + 1)), Decimal(1500) * (1 + Decimal(h) / 100), "ok")
        for i, h in enumerate(healths)
    ]
    out, _, _ = eng.advance_batch(opened, ticks, _us(3600))
    assert [(e.event_type, e.event_ts) for _, e in out.events] == [
        ("margin_call", T0 + timedelta(seconds=120)),
        ("recovered", T0 + timedelta(seconds=420)),
        ("margin_call", T0 + timedelta(seconds=480)),
    ]


def test_constructed_rows_equal_validated_rows():
    """The engine builds rows without re-validation (speed): they must be what validation
    makes of them."""
    rng = random.Random(11)
    eng = MarginShardEngine(MarginConfig(snapshot_s=600))
    walk, serial, n = {}, [0], 0
    for h in range(3):
        out, _, _ = eng.advance_batch(
            flows(rng, h * 3600, (h + 1) * 3600, 30, serial),
            market(rng, h * 3600, (h + 1) * 3600, walk),
            _us((h + 1) * 3600),
        )
        for _, row in out.health:
            assert MarginHealthRow.model_validate(row.model_dump()).model_dump() == row.model_dump()
            n += 1
    assert n > 100


def test_a_day_of_composite_rows_as_columns_gives_the_ticks_output():
    """The backfill hands ``advance_batch`` a day's prices table as ``TickColumns`` (prices as
    int64 units of 1e-9, no object per row): the same output and state as the ticks."""
    import pyarrow as pa

    from transforms.margin.batch import price_ticks
    from transforms.prices.batch import PRICE_SCHEMA

    rng = random.Random(21)
    cfg = MarginConfig(snapshot_s=900)
    as_list, as_columns = MarginShardEngine(cfg), MarginShardEngine(cfg, dict_rows=True)
    walk, serial = {}, [0]
    for h in range(4):
        lo, hi = h * 3600, (h + 1) * 3600
        ticks, setts = market(rng, lo, hi, walk), flows(rng, lo, hi, 30, serial)
        table = pa.Table.from_pylist(
            [
                {
                    "price_id": str(i),
                    "asset": p.asset,
                    "quote": "USD",
                    "price": p.price,
                    "status": p.status,
                    "n_sources": 2,
                    "sources": [],
                    "sources_set_aside": [],
                    "spread_bps": None,
                    "window_start": T0,
                    "event_time": T0 + timedelta(microseconds=p.t_us - _us(0)),
                }  # fmt: skip
                for i, p in enumerate(ticks)
            ],
            schema=PRICE_SCHEMA,
        )
        a = as_list.advance_batch(setts, ticks, _us(hi))
        b = as_columns.advance_batch(setts, price_ticks(table), _us(hi))
        assert _rows(a[0]) == _rows(b[0]) and _state(as_list) == _state(as_columns)
        assert sum(r.trigger == "price" for _, r in a[0].health) > 0
