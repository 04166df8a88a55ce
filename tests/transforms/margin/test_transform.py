"""MonitorMargins in Beam: TestStream timelines on the streaming runner, and batch runs.

pytest tests/transforms/margin/test_transform.py
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.graph import build
from runners.direct import local_pipeline_options
from schemas.tables import PriceRow
from tests.support.factories import settlement
from transforms.common.dead_letter import ALERTS_TAG, DEAD_LETTER_TAG, MAIN_TAG
from transforms.margin.engine import MarginConfig
from transforms.margin.transform import EVENTS_TAG, STATE_TAG, MonitorMargins

T0 = datetime(2025, 3, 3, 12, tzinfo=UTC)
P, S = "prices", "settlements"
CFG = MarginConfig(snapshot_s=0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def price_row(asset: str, price: str | None, second: float, status: str = "ok") -> PriceRow:
    t = at(second)
    return PriceRow(
        price_id=f"{asset}-{second}",
        asset=asset,
        price=None if price is None else Decimal(price),
        status=status,
        n_sources=0 if price is None else 2,
        sources=[] if price is None else ["chainlink", "pyth"],
        window_start=t - timedelta(minutes=1),
        event_time=t,
    )


def eth_for_health(h: str) -> str:
    """10 ETH against 15,000 USDC: health = p / 15 - 100, so p = (h + 100) * 15."""
    return str((Decimal(h) + 100) * 15)


class Timeline:
    """One TestStream with a tag per input (several TestStreams misbehave on this runner)."""

    def __init__(self):
        self.stream = (
            TestStream(output_tags={P, S})
            .advance_watermark_to(at(-120).timestamp(), tag=P)
            .advance_watermark_to(at(-120).timestamp(), tag=S)
        )

    def price(self, asset, price, second, status="ok"):
        row = price_row(asset, price, second, status)
        # composite rows carry their window end minus 1 µs (inside their window)
        self.stream.add_elements(
            [TimestampedValue(row, Timestamp.from_utc_datetime(row.event_time) - 1e-6)], tag=P
        )
        return self

    def settle(self, *settlements):
        self.stream.add_elements(
            [TimestampedValue(s, Timestamp.from_utc_datetime(s.event_time)) for s in settlements],
            tag=S,
        )
        return self

    def watermark(self, second):
        for tag in (P, S):
            self.stream.advance_watermark_to(at(second).timestamp(), tag=tag)
        return self

    def done(self, second):
        # Up to a finite time first: timer output at +infinity would be dropped downstream.
        self.watermark(second)
        for tag in (P, S):
            self.stream.advance_watermark_to_infinity(tag=tag)
        return self.stream


def opened(account="acct", second=-30):
    return [
        settlement(f"{account}-d", account, "deposit", "ETH", "10", at(second)),
        settlement(f"{account}-b", account, "borrow", "USDC", "15000", at(second + 1), decimals=6),
    ]


def test_zone_transitions_with_hysteresis_under_test_stream():
    tl = Timeline().price("USDC", "1", -60).price("ETH", "3000", -60).settle(*opened()).watermark(0)
    second = 0
    for h in ["29.9", "30.1", "29.9", "30.1", "29.9", "32.5", "14", "16", "17.5"]:
        second += 60
        tl.price("ETH", eth_for_health(h), second).watermark(second + 1)
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        src = p | tl.done(second + 60)
        out = (src[P], src[S]) | MonitorMargins(CFG, shards=2, streaming=True)
        assert_that(
            out[EVENTS_TAG] | beam.Map(lambda e: (e.event_type, e.event_ts, str(e.health_score))),
            equal_to(
                [
                    ("margin_call", at(60), "29.900000000"),
                    ("recovered", at(360), "32.500000000"),
                    ("liquidation", at(420), "14.000000000"),
                    # 16 stays in liquidation (band 2), 17.5 climbs out to margin_call: no event
                ]
            ),
            label="Events",
        )
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.trigger, r.zone)),
            equal_to(
                [
                    ("settlement", "no_debt"),
                    ("settlement", "healthy"),
                    ("price", "margin_call"),
                    ("price", "warning"),  # 32.5 clears 30 + 2
                    ("price", "liquidation"),
                    ("price", "margin_call"),
                ]
            ),
            label="Health",
        )


def test_alert_suppression_timeline_of_the_detector_docstring():
    # 12:00 29.5 -> margin_call ALERT; 12:01 33 -> recovered ALERT; 12:02 29 -> margin_call
    # suppressed; 12:04:30 34 -> recovered suppressed; 12:06 28 -> margin_call ALERT.
    tl = Timeline().price("USDC", "1", -60).price("ETH", "3000", -60).settle(*opened()).watermark(0)
    steps = [(0, "29.5"), (60, "33"), (120, "29"), (270, "34"), (360, "28")]
    for second, h in steps:
        tl.price("ETH", eth_for_health(h), second).watermark(second + 1)
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        src = p | tl.done(400)
        out = (src[P], src[S]) | MonitorMargins(CFG, shards=1, streaming=True)
        assert_that(
            out[EVENTS_TAG] | beam.Map(lambda e: (e.event_ts, e.event_type, e.alerted)),
            equal_to(
                [
                    (at(0), "margin_call", True),
                    (at(60), "recovered", True),
                    (at(120), "margin_call", False),
                    (at(270), "recovered", False),
                    (at(360), "margin_call", True),
                ]
            ),
            label="Events",
        )
        assert_that(
            out[ALERTS_TAG] | beam.Map(lambda a: (a.event_ts, a.event_type, a.alert_id)),
            equal_to(
                [
                    (at(0), "margin_call", _alert_id("acct", "margin_call", at(0))),
                    (at(60), "recovered", _alert_id("acct", "recovered", at(60))),
                    (at(360), "margin_call", _alert_id("acct", "margin_call", at(360))),
                ]
            ),
            label="Alerts",
        )


def _alert_id(account, event_type, when):
    from schemas.base import deterministic_id

    return deterministic_id("margin_event", account, event_type, when)


def test_late_settlement_within_lateness_updates_state_and_beyond_is_a_dead_letter():
    config = MarginConfig(snapshot_s=0, allowed_lateness_s=600)
    tl = Timeline().price("USDC", "1", -60).price("ETH", "3000", -60).settle(*opened())
    tl.price("ETH", "3000", 3600).watermark(3601)
    tl.settle(
        settlement("late-ok", "acct", "deposit", "ETH", "1", at(3600 - 300)),
        settlement("too-late", "acct", "deposit", "ETH", "1", at(3600 - 601)),
    )
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        src = p | tl.done(3700)
        out = (src[P], src[S]) | MonitorMargins(config, shards=1, streaming=True)
        assert_that(
            out[MAIN_TAG]
            | beam.Filter(lambda r: r.trigger == "settlement")
            | beam.Map(lambda r: (r.event_ts, str(r.collateral_usd))),
            equal_to(
                [
                    (at(-30), "30000.000000000"),
                    (at(-29), "30000.000000000"),
                    (at(3600), "33000.000000000"),  # the late deposit, applied at 3600
                ]
            ),
            label="Health",
        )
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.stage, d.error_reason, d.event_time)),
            equal_to([("MonitorMargins", "late_settlement", at(3600 - 601))]),
            label="Dead",
        )


def test_duplicate_redelivery_gives_one_state_change_and_one_alert():
    drag = settlement("drag", "acct", "borrow", "USDC", "1000", at(100), decimals=6)
    tl = Timeline().price("USDC", "1", -60).price("ETH", "2000", -60).settle(*opened())
    tl.settle(drag).watermark(101).settle(drag).watermark(200)  # redelivered after processing
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        src = p | tl.done(300)
        out = (src[P], src[S]) | MonitorMargins(CFG, shards=1, streaming=True)
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.event_ts, str(r.borrow_usd), r.zone)),
            equal_to(
                [
                    (at(-30), "0E-9", "no_debt"),
                    (at(-29), "15000.000000000", "warning"),  # 20,000 vs 15,000: 33.3
                    (at(100), "16000.000000000", "margin_call"),  # 25
                ]
            ),
            label="Health",
        )
        assert_that(
            out[ALERTS_TAG] | beam.Map(lambda a: a.event_type),
            equal_to(["margin_call"]),
            label="Alerts",
        )
        assert_that(
            out[DEAD_LETTER_TAG]
            | beam.Map(lambda d: (d.error_reason, json.loads(d.raw_payload)["event_id"])),
            equal_to([("duplicate", "drag")]),
            label="Dead",
        )


def test_a_degraded_price_produces_no_liquidation():
    tl = Timeline().price("USDC", "1", -60).price("ETH", "3000", -60).settle(*opened()).watermark(0)
    tl.price("ETH", "1500", 60, "degraded").watermark(61)  # health 0 on a doubtful price
    tl.price("ETH", None, 120, "price_unavailable").watermark(121)
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        src = p | tl.done(200)
        out = (src[P], src[S]) | MonitorMargins(CFG, shards=1, streaming=True)
        assert_that(out[EVENTS_TAG], equal_to([]), label="NoEvents")
        assert_that(out[ALERTS_TAG], equal_to([]), label="NoAlerts")
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.trigger, r.zone, r.price_status)),
            equal_to(
                [
                    ("settlement", "no_debt", "ok"),
                    ("settlement", "healthy", "ok"),
                    ("price", "warning", "degraded"),  # held at warning, status recorded
                ]
            ),
            label="Health",
        )


def test_state_for_10000_accounts_stays_bounded_under_test_stream():
    # 10,000 accounts open (deposit) and close (withdraw) within a minute; once the cooldown and
    # the allowed lateness have passed in event time, the purge timer empties every shard.
    config = MarginConfig(snapshot_s=0, allowed_lateness_s=60)
    tl = Timeline().price("USDC", "1", -60).price("ETH", "3000", -60)
    for chunk in range(10):
        ids = range(chunk * 1000, (chunk + 1) * 1000)
        tl.settle(*[settlement(f"d{i}", f"a{i}", "deposit", "ETH", "1", at(chunk)) for i in ids])
        tl.settle(*[settlement(f"w{i}", f"a{i}", "withdraw", "ETH", "1", at(30 + chunk)) for i in ids])  # fmt: skip
        tl.watermark(40 + chunk)
    opts = local_pipeline_options(streaming=True)
    with beam.Pipeline(options=opts) as p:
        src = p | tl.done(1000)
        out = (src[P], src[S]) | MonitorMargins(config, shards=4, streaming=True)
        # the last purge of each shard leaves nothing in state
        last = (
            out[STATE_TAG]
            | beam.Map(lambda kv, ts=beam.DoFn.TimestampParam: (kv[0], (ts.micros, kv[1])))
            | beam.WindowInto(beam.transforms.window.FixedWindows(24 * 3600))
            | beam.CombinePerKey(max)  # the latest purge of each shard
            | beam.Map(lambda kv: (kv[0], kv[1][1]))
        )
        assert_that(last, equal_to([(s, 0) for s in range(4)]), label="Purged")
        assert_that(
            out[MAIN_TAG]
            | "Day" >> beam.WindowInto(beam.transforms.window.FixedWindows(24 * 3600))
            | beam.Map(lambda r: 1)
            | beam.CombineGlobally(sum).without_defaults(),
            equal_to([20_000]),
            label="Rows",
        )


def test_state_for_10000_accounts_is_purged_after_they_close():
    # Batch on the FnApiRunner, whose metrics are exact: every account opened is purged.
    def lifecycle(i):
        a = f"a{i:05d}"
        return [
            TimestampedValue(s, Timestamp.from_utc_datetime(s.event_time))
            for s in (
                settlement(f"d{i}", a, "deposit", "ETH", "1", at(1 + i % 50)),
                settlement(f"b{i}", a, "borrow", "USDC", "100", at(100 + i % 50), decimals=6),
                settlement(f"r{i}", a, "repay", "USDC", "100", at(200 + i % 50), decimals=6),
                settlement(f"w{i}", a, "withdraw", "ETH", "1", at(300 + i % 50)),
            )
        ]

    p = beam.Pipeline(options=local_pipeline_options())
    setts = p | "Ids" >> beam.Create(range(10_000)) | "Lifecycle" >> beam.FlatMap(lifecycle)
    prices = p | "Prices" >> beam.Create(
        [
            TimestampedValue(r, Timestamp.from_utc_datetime(r.event_time) - 1e-6)
            for r in (price_row("USDC", "1", 0), price_row("ETH", "3000", 0))
        ]
    )
    out = (prices, setts) | MonitorMargins(CFG, shards=4)
    counts = out[MAIN_TAG] | beam.Map(lambda r: ("rows", 1)) | beam.CombinePerKey(sum)
    assert_that(counts, equal_to([("rows", 40_000)]))
    result = p.run()
    result.wait_until_finish()
    counters = {
        m.key.metric.name: m.committed
        for m in result.metrics().query(MetricsFilter().with_namespace("margin"))["counters"]
    }
    assert counters["MonitorMargins.accounts_opened"] == 10_000
    assert counters["MonitorMargins.accounts_purged"] == 10_000


def test_risk_graph_writes_margin_tables_and_one_dead_letter_per_refused_settlement():
    T = int(T0.timestamp())

    def price(i, source, value, second, asset):
        return json.dumps(
            {"event_id": f"p{i}", "asset": asset, "source": source, "price": value,
             "publish_time": T + second}
        ).encode()  # fmt: skip

    def settle(event_id, kind, asset, raw, decimals, second):
        return json.dumps(
            {"event_id": event_id, "account_id": "acct", "venue": "aave_v3", "kind": kind,
             "asset": asset, "amount_raw": raw, "decimals": decimals, "event_time": T + second}
        ).encode()  # fmt: skip

    prices = [price(1, "chainlink", "3000", 0, "ETH"), price(2, "pyth", "3000", 1, "ETH"),
              price(3, "chainlink", "1", 0, "USDC"), price(4, "pyth", "1", 1, "USDC"),
              price(5, "chainlink", "1900", 65, "ETH"), price(6, "pyth", "1900", 66, "ETH")]  # fmt: skip
    setts = [settle("d", "deposit", "ETH", "10" + "0" * 18, 18, 10),
             settle("b", "borrow", "USDC", "15000" + "0" * 6, 6, 20),
             settle("b", "borrow", "USDC", "15000" + "0" * 6, 6, 20),  # redelivered
             settle("w", "withdraw", "ETH", "99" + "0" * 18, 18, 30)]  # more than held  # fmt: skip
    opts = local_pipeline_options(extra_args=["--pipeline=risk", "--margin_snapshot_s=0"])
    with beam.Pipeline(options=opts) as p:
        out = build(
            p,
            opts,
            {
                "market.prices.v1": p | "P" >> beam.Create(prices),
                "settlements.v1": p | "S" >> beam.Create(setts),
            },
        )
        assert_that(
            out["dead_letter"] | beam.Map(lambda d: (d.stage, d.error_reason)),
            equal_to([("MonitorMargins", "duplicate"), ("MonitorMargins", "negative_balance")]),
            label="Dead",
        )
        assert_that(
            out["margin_events"] | beam.Map(lambda e: (e.event_type, e.event_ts)),
            equal_to([("margin_call", at(120))]),  # the 12:01-12:02 composite window ends at 120
            label="Events",
        )
        assert_that(
            out["alerts.margin.v1"] | beam.Map(lambda a: (a.event_type, str(a.borrow_usd))),
            equal_to([("margin_call", "15000.000000000")]),
            label="Alerts",
        )
        assert_that(
            out["margin_health"] | beam.Map(lambda r: r.trigger),
            # the settlements precede the first composite window (ends at 60): unpriced, no row;
            # the first USDC price values the account, the 1,900 window moves it to margin_call
            equal_to(["price", "price"]),
            label="Health",
        )
