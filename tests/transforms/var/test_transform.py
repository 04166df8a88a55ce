"""ComputeVaR: the shard engine (positions x close history -> VaR rows) and the Beam composite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from runners.direct import local_pipeline_options
from schemas.events import Settlement
from schemas.tables import PriceRow
from tests.support.factories import settlement
from transforms.common.dead_letter import DEAD_LETTER_TAG, MAIN_TAG
from transforms.common.keys import shard_of
from transforms.var import measures
from transforms.var.engine import MICROS, Close, VarConfig, VarShardEngine
from transforms.var.transform import ComputeVaR

DAY = 86_400 * MICROS
T0 = datetime(2025, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp()) * MICROS
RNG = np.random.default_rng(1)
ETH = 3000 * np.cumprod(1 + RNG.normal(0, 0.03, 60))
BTC = 90000 * np.cumprod(1 + RNG.normal(0, 0.02, 60))


def settle(i, account, kind, asset, amount, day, decimals=18) -> Settlement:
    return settlement(
        f"s{i}", account, kind, asset, amount, T0 + timedelta(days=day, hours=1), decimals
    )


def closes(days=60) -> list[Close]:
    out = []
    for d in range(days):
        end = T0_US + (d + 1) * DAY
        out += [
            Close("ETH", end, float(ETH[d])),
            Close("BTC", end, float(BTC[d])),
            Close("USDC", end, 1.0),
        ]
    return out


SETTLEMENTS = [
    settle(1, "a", "deposit", "ETH", "10", 0),
    settle(2, "a", "borrow", "USDC", "15000", 0, 6),
    settle(3, "b", "deposit", "BTC", "1", 0, 8),
    settle(4, "b", "withdraw", "BTC", "1", 45, 8),
]


def test_engine_values_each_open_account_at_each_day_end_from_the_window():
    cfg = VarConfig(methods=("historical", "parametric"), window=30, min_scenarios=30)
    eng = VarShardEngine(cfg)
    rows, rejected, later_s, later_c = eng.advance(SETTLEMENTS, closes(), T0_US + 60 * DAY)
    assert rejected == [] and later_s == [] and later_c == []
    first_day = {
        r.account_id: min(r.as_of for r in rows if r.account_id == r.account_id) for r in rows
    }
    # 30 returns need 31 closes: the first VaR is at the end of day 31.
    assert min(first_day.values()) == T0 + timedelta(days=31)
    b_days = {r.as_of for r in rows if r.account_id == "b"}
    assert max(b_days) == T0 + timedelta(days=45)  # b closed its position on day 45
    # Reference: account a's historical VaR on the last day, from the same 30 returns by hand.
    last = T0 + timedelta(days=60)
    row = next(
        r for r in rows if r.account_id == "a" and r.as_of == last and r.method == "historical"
    )
    eth_r = ETH[30:60] / ETH[29:59] - 1
    pnl = 10 * ETH[59] * eth_r  # USDC debt has zero return
    assert float(row.var_usd) == pytest.approx(measures.historical_var(pnl, 0.99), abs=1e-5)
    assert float(row.es_usd) >= float(row.var_usd) * 0.9  # ES at 97.5% vs VaR at 99%: same tail
    assert float(row.portfolio_value_usd) == pytest.approx(10 * ETH[59] - 15000, abs=1e-5)
    assert (row.n_scenarios, row.n_positions) == (30, 2)


def test_engine_in_two_calls_equals_one_call():
    cfg = VarConfig(window=30, min_scenarios=30)
    one = VarShardEngine(cfg).advance(SETTLEMENTS, closes(), T0_US + 60 * DAY)[0]
    eng = VarShardEngine(cfg)
    first = eng.advance(SETTLEMENTS, closes(), T0_US + 40 * DAY)
    second = eng.advance(first[2], first[3], T0_US + 60 * DAY)
    assert [r.var_id for r in one] == [r.var_id for r in first[0] + second[0]]
    assert one == first[0] + second[0]


def test_redelivered_and_impossible_settlements_are_rejected():
    eng = VarShardEngine(VarConfig(window=30, min_scenarios=30))
    bad = [
        *SETTLEMENTS,
        settle(1, "a", "deposit", "ETH", "10", 0),
        settle(9, "a", "repay", "USDC", "99999", 2, 6),
    ]
    _, rejected, _, _ = eng.advance(bad, closes(), T0_US + 60 * DAY)
    assert sorted(r.outcome.reason for r in rejected) == ["duplicate", "negative_balance"]


def test_hourly_buckets_give_a_horizon_of_24_buckets_and_bad_configs_fail():
    assert VarConfig(bucket_s=3600).horizon_buckets == 24 and VarConfig().horizon_buckets == 1
    with pytest.raises(ValueError, match="methods"):
        VarConfig(methods=("garch",))
    with pytest.raises(ValueError, match="whole number"):
        VarConfig(bucket_s=7 * 3600).horizon_buckets  # noqa: B018


def test_shards_are_stable_and_spread():
    assert shard_of("acct-0001", 16) == shard_of("acct-0001", 16)
    assert len({shard_of(f"acct-{i:04d}", 16) for i in range(200)}) == 16


def price_rows(days=60):
    rows = []
    for d in range(days):
        for minute in (600, 1439):  # two composite windows per day; the later one is the close
            t = T0 + timedelta(days=d, minutes=minute + 1)
            for asset, p in (("ETH", ETH[d]), ("BTC", BTC[d]), ("USDC", 1.0)):
                price = p * (0.99 if minute == 600 else 1.0)
                rows.append(
                    PriceRow(
                        price_id=f"{asset}{d}{minute}",
                        asset=asset,
                        price=Decimal(repr(round(float(price), 9))),
                        status="ok",
                        n_sources=2,
                        sources=["chainlink", "pyth"],
                        window_start=t - timedelta(minutes=1),
                        event_time=t,
                    )
                )
        rows.append(
            PriceRow(
                price_id=f"u{d}",
                asset="ETH",
                price=None,
                status="price_unavailable",
                n_sources=0,
                window_start=T0 + timedelta(days=d, hours=23),
                event_time=T0 + timedelta(days=d, hours=23, minutes=1),
            )
        )
    return rows


def test_compute_var_in_a_pipeline_matches_the_engine():
    cfg = VarConfig(methods=("historical",), window=30, min_scenarios=30)
    expected = VarShardEngine(cfg).advance(SETTLEMENTS, closes(), T0_US + 60 * DAY)[0]
    stamp = lambda x, t: TimestampedValue(x, Timestamp.from_utc_datetime(t))  # noqa: E731
    with beam.Pipeline(options=local_pipeline_options()) as p:
        prices = p | "Prices" >> beam.Create([stamp(r, r.event_time) for r in price_rows()])
        setts = p | "Settlements" >> beam.Create([stamp(s, s.event_time) for s in SETTLEMENTS])
        out = (prices, setts) | ComputeVaR(cfg, shards=4)
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.account_id, r.as_of, r.method, str(r.var_usd))),
            equal_to([(r.account_id, r.as_of, r.method, str(r.var_usd)) for r in expected]),
            label="Rows",
        )
        assert_that(out[DEAD_LETTER_TAG], equal_to([]), label="NoDead")


def test_compute_var_streaming_under_test_stream_values_each_bucket_as_the_watermark_passes():
    from apache_beam.testing.test_stream import TestStream

    cfg = VarConfig(methods=("parametric",), window=3, min_scenarios=2, bucket_s=3600)
    hour = timedelta(hours=1)
    P, S = "prices", "settlements"
    stream = (
        TestStream(output_tags={P, S})
        .advance_watermark_to(T0.timestamp(), tag=P)
        .advance_watermark_to(T0.timestamp(), tag=S)
    )
    s1 = settle(1, "a", "deposit", "ETH", "2", 0)  # at T0 + 1 h
    stream = stream.add_elements(
        [TimestampedValue(s1, Timestamp.from_utc_datetime(s1.event_time))], tag=S
    )
    eth = [3000.0, 3030.0, 2990.0, 3050.0, 3000.0]
    for h, price in enumerate(eth):
        t = T0 + (h + 1) * hour
        row = PriceRow(
            price_id=f"p{h}",
            asset="ETH",
            price=Decimal(repr(price)),
            status="ok",
            n_sources=2,
            sources=["chainlink", "pyth"],
            window_start=t - timedelta(minutes=1),
            event_time=t,
        )
        stream = stream.add_elements(
            [TimestampedValue(row, Timestamp.from_utc_datetime(t) - 1e-6)], tag=P
        )
        stream = stream.advance_watermark_to((t + timedelta(minutes=1)).timestamp(), tag=P)
        stream = stream.advance_watermark_to((t + timedelta(minutes=1)).timestamp(), tag=S)
    stream = stream.advance_watermark_to_infinity(tag=P).advance_watermark_to_infinity(tag=S)
    with beam.Pipeline(options=local_pipeline_options(streaming=True)) as p:
        src = p | stream
        out = (src[P], src[S]) | ComputeVaR(cfg, shards=2, streaming=True)
        # Closes at hours 1..5; the deposit lands in hour 2's bucket; 2 returns are needed: hours 3..5.
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.as_of.hour, r.n_scenarios)),
            equal_to([(3, 2), (4, 3), (5, 3)]),
        )
