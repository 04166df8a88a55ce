"""Composite price: the pure engine (ordered checks, carry-forward, outliers, gaps) and the
stateful Beam composite, in batch and under TestStream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from runners.direct import local_pipeline_options
from schemas.events import PriceEvent
from transforms.common.dead_letter import DEAD_LETTER_TAG, MAIN_TAG
from transforms.prices.composite import MICROS, CompositeEngine, Obs, median_with_outliers
from transforms.prices.transform import CompositePrices

D = Decimal
T0 = 1736121600 * MICROS  # 2025-01-06T00:00:00Z, a window boundary
CL = "5f4ec3df9cbd43714fe2740f5e3616155c5b8419"
PY = "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"


def cl(rnd: int, price: str, second: int, hb: int = 3600) -> Obs:
    return Obs("chainlink", CL, D(price), T0 + second * MICROS, rnd, f"cl{rnd}", hb, 0)


def py(price: str, second: int, hb: int = 60) -> Obs:
    return Obs("pyth", PY, D(price), T0 + second * MICROS, None, f"py{second}", hb, 1)


def engine(**kw) -> CompositeEngine:
    return CompositeEngine(window_s=60, grace_s=120, max_dev_bps=100.0, min_sources=2, **kw)


def summary(rows):
    return [
        (
            (r.window_start_us - T0) // MICROS,
            None if r.price is None else str(r.price),
            r.status,
            r.sources,
            r.set_aside,
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------ pure engine
def test_median_of_two_agreeing_sources_is_exact_in_decimal():
    rows, rej, later = engine().compose(
        [cl(1, "3000.12345678", 5), py("3000.12345679", 30)], T0 + 60 * MICROS
    )
    assert summary(rows) == [(0, "3000.123456785", "ok", ("chainlink", "pyth"), ())]
    assert rej == [] and later == []


def test_odd_count_median_is_the_middle_value_and_an_outlier_is_set_aside():
    price, status, used, aside, spread = median_with_outliers(
        {"chainlink": (D("100"), 0), "pyth": (D("101"), 1), "dex": (D("150"), 3)}, 100, 2
    )
    assert (price, status, used, aside) == (D("100.5"), "degraded", ("chainlink", "pyth"), ("dex",))
    assert round(spread, 6) == round(1 / 100.5 * 10_000, 6)


def test_two_disagreeing_sources_keep_the_preferred_one_degraded():
    rows, _, _ = engine().compose([cl(1, "3000", 5), py("3100", 30)], T0 + 60 * MICROS)
    assert summary(rows) == [(0, "3000", "degraded", ("chainlink",), ("pyth",))]


def test_a_quiet_chainlink_feed_is_carried_forward_until_its_heartbeat_plus_grace():
    # Chainlink updates once; Pyth stops after the first minute. Pyth (60 s + 120 s grace) drops out
    # after 3 windows; Chainlink alone is degraded (min_sources=2) but still a price.
    rows, _, _ = engine().compose([cl(1, "3000", 0), py("3001", 0)], T0 + 5 * 60 * MICROS)
    assert [r[2] for r in summary(rows)] == ["ok", "ok", "ok", "degraded", "degraded"]
    assert summary(rows)[3][3] == ("chainlink",)


def test_no_fresh_source_gives_one_unavailable_row_then_silence_until_data_returns():
    eng = engine()
    obs = [py("10", 0, hb=60), py("11", 600, hb=60)]  # a 10-minute Pyth-only gap
    rows, _, _ = eng.compose(obs, T0 + 11 * 60 * MICROS)
    statuses = [(s, st) for s, _, st, _, _ in summary(rows)]
    assert statuses == [
        (0, "degraded"),
        (60, "degraded"),
        (120, "degraded"),
        (180, "price_unavailable"),
        (600, "degraded"),
    ]
    assert rows[3].price is None and rows[3].sources == ()


def test_ordered_checks_reject_duplicates_backwards_rounds_and_late_updates():
    eng = engine()
    rows, rej, _ = eng.compose(
        [cl(2, "3000", 5), cl(2, "3000", 5), cl(3, "3001", 4), py("3000", 10)], T0 + 60 * MICROS
    )
    assert sorted(r.reason for r in rej) == ["duplicate_update", "publish_time_not_increasing"]
    _, rej2, _ = eng.compose([cl(1, "2999", 70), py("3000", 10), py("2990", 30)], T0 + 120 * MICROS)
    assert sorted(r.reason for r in rej2) == ["late_update", "late_update", "round_not_increasing"]


def test_updates_for_windows_not_yet_closed_are_kept_for_later():
    eng = engine()
    rows, _, later = eng.compose(
        [cl(1, "1", 5), py("1", 5), cl(2, "2", 65), py("2", 70)], T0 + 60 * MICROS
    )
    assert len(rows) == 1 and [o.round_id for o in later if o.round_id] == [2] and len(later) == 2
    rows2, _, _ = eng.compose(later, T0 + 120 * MICROS)
    assert summary(rows2) == [(60, "2", "ok", ("chainlink", "pyth"), ())]


# ------------------------------------------------------------------------------- Beam wrapper
def event(
    i: int, source: str, price: str, second: int, asset: str = "ETH", round_id: int | None = None
) -> PriceEvent:
    feeds = {"chainlink": "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419", "pyth": "0x" + PY}
    return PriceEvent(
        event_id=f"e{i}",
        asset=asset,
        source=source,
        price=price,
        feed_id=feeds[source],
        round_id=None if round_id is None else str(round_id),
        publish_time=datetime(2025, 1, 6, tzinfo=UTC) + timedelta(seconds=second),
    )


def test_composite_in_batch_one_row_per_window_and_rejects_as_dead_letters():
    events = [
        event(1, "chainlink", "3000", 5, round_id=1),
        event(2, "pyth", "3002", 30),
        event(3, "chainlink", "3000", 5, round_id=1),
        event(4, "pyth", "3010", 65),
    ]
    opts = local_pipeline_options()
    with beam.Pipeline(options=opts) as p:
        out = (
            p
            | beam.Create(
                [TimestampedValue(e, Timestamp.from_utc_datetime(e.publish_time)) for e in events]
            )
            | CompositePrices()
        )
        assert_that(
            out[MAIN_TAG]
            | beam.Map(lambda r: (r.event_time.isoformat(), str(r.price), r.status, r.n_sources)),
            equal_to(
                [
                    ("2025-01-06T00:01:00+00:00", "3001", "ok", 2),
                    ("2025-01-06T00:02:00+00:00", "3005", "ok", 2),
                ]
            ),
            label="Rows",
        )
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.stage, d.error_reason)),
            equal_to([("CompositePrices", "duplicate_update")]),
            label="Rejects",
        )


def test_streaming_composite_emits_price_unavailable_when_every_feed_falls_silent():
    # Pyth only (heartbeat 60 s + grace 120 s): after the last update the expiry timer fires and a
    # price_unavailable row is emitted although no further element ever arrives.
    stream = TestStream().advance_watermark_to(1736121600)
    for i, second in enumerate((5, 65)):
        e = event(i, "pyth", "3000", second)
        stream = stream.add_elements(
            [TimestampedValue(e, Timestamp.from_utc_datetime(e.publish_time))]
        )
        stream = stream.advance_watermark_to(1736121600 + second + 60)
    stream = stream.advance_watermark_to(1736121600 + 3600).advance_watermark_to_infinity()
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        out = p | stream | CompositePrices(streaming=True)
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.event_time.isoformat(), r.status)),
            equal_to(
                [
                    ("2025-01-06T00:01:00+00:00", "degraded"),
                    ("2025-01-06T00:02:00+00:00", "degraded"),
                    ("2025-01-06T00:03:00+00:00", "degraded"),
                    ("2025-01-06T00:04:00+00:00", "degraded"),
                    ("2025-01-06T00:05:00+00:00", "price_unavailable"),
                ]
            ),
        )
