"""CompositePrices: the pure median and the windowed composite, in batch and under TestStream."""

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
from transforms.prices import CompositePrices, composite_price

D = Decimal


def test_median_of_two_sources_is_their_mean_and_exact_in_decimal():
    c = composite_price([("chainlink", D("3000.12345678")), ("pyth", D("3000.12345679"))])
    assert c.price == D("3000.123456785")
    assert c.sources == ("chainlink", "pyth") and c.status == "ok" and c.n == 2


def test_median_of_odd_count_is_the_middle_value_not_the_mean():
    c = composite_price([("a", D("1")), ("b", D("2")), ("c", D("100"))], max_spread_bps=1e9)
    assert c.price == D("2")


def test_single_source_or_wide_spread_is_degraded():
    assert composite_price([("pyth", D("10"))]).status == "degraded"
    wide = composite_price([("chainlink", D("100")), ("pyth", D("102"))], max_spread_bps=100)
    assert wide.status == "degraded" and round(wide.spread_bps, 6) == round(2 / 101 * 10_000, 6)


def test_no_observation_gives_no_price():
    assert composite_price([]) is None


def _event(i: int, source: str, price: str, second: int) -> PriceEvent:
    return PriceEvent(
        event_id=f"e{i}",
        asset="ETH",
        source=source,
        price=price,
        publish_time=datetime(2025, 1, 6, tzinfo=UTC) + timedelta(seconds=second),
    )


def test_composite_per_minute_window_under_test_stream():
    events = [
        _event(1, "chainlink", "3000", 5),
        _event(2, "pyth", "3002", 30),
        _event(3, "pyth", "3010", 65),
    ]
    stream = TestStream().advance_watermark_to(0)
    for e in events:
        stream = stream.add_elements(
            [TimestampedValue(e, Timestamp.from_utc_datetime(e.publish_time))]
        )
    stream = stream.advance_watermark_to_infinity()
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        rows = p | stream | CompositePrices(window_seconds=60)
        assert_that(
            rows
            | beam.Map(lambda r: (r.event_time.isoformat(), str(r.price), r.status, r.n_sources)),
            equal_to(
                [
                    ("2025-01-06T00:01:00+00:00", "3001", "ok", 2),
                    ("2025-01-06T00:02:00+00:00", "3010", "degraded", 1),
                ]
            ),
        )
