"""DetectWashTrades in Beam: the pure core per (pool, window), in batch and under TestStream, with
the first fundings from transfers.v1 as a side input.

    pytest tests/transforms/surveillance/test_transform.py
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from runners.direct import local_pipeline_options
from schemas.events import DexTrade, Transfer
from transforms.common.dead_letter import MAIN_TAG
from transforms.surveillance.transform import DetectWashTrades
from transforms.surveillance.wash_trade import detect_wash_trades

T0 = datetime(2025, 4, 1, 10, tzinfo=UTC)
POOL, A, FUNDER = "0x" + "b0" * 20, "0x" + "a" * 40, "0x" + "f" * 40
E18 = 10**18


def trade(k: int, buy: bool, block: int, who: str = A, usd: str = "1000") -> DexTrade:
    return DexTrade(
        event_id=f"t{k}", venue="uniswap_v2", pool_address=POOL, tx_hash=f"0xtx{k}",
        block_number=block, log_index=0, trader=who, recipient=who,
        token_in="WETH" if buy else "MEME", token_out="MEME" if buy else "WETH",
        amount_in_raw=str(E18 // 3 if buy else 1000 * E18),
        amount_out_raw=str(1000 * E18 if buy else E18 // 3), decimals_in=18, decimals_out=18,
        amount_usd=usd, event_time=T0 + timedelta(seconds=12 * (block - 100)),
    )  # fmt: skip


def round_trips(n: int = 4) -> list[DexTrade]:
    """A buys then sells the same size within 25 blocks, ``n`` times, inside one hour."""
    out = []
    for i in range(n):
        out += [trade(2 * i, True, 100 + 30 * i), trade(2 * i + 1, False, 110 + 30 * i)]
    return out


FUNDING = Transfer(
    event_id="f1", tx_hash="0xf1", block_number=1, log_index=0, from_address=FUNDER,
    to_address=A, asset="ETH", amount_raw=str(E18), decimals=18, event_time=T0 - timedelta(days=1),
)  # fmt: skip


def stamped(x):
    return TimestampedValue(x, Timestamp.from_utc_datetime(x.event_time))


def test_batch_findings_equal_the_pure_core_per_window():
    trades = round_trips()
    hour = T0.replace(minute=0)
    expected = detect_wash_trades(trades, hour, hour + timedelta(hours=1), [FUNDING])
    assert expected and A in expected[0].wallet_addresses
    with beam.Pipeline(options=local_pipeline_options()) as p:
        out = (
            p | "T" >> beam.Create([stamped(t) for t in trades]),
            p | "F" >> beam.Create([stamped(FUNDING)]),
        ) | DetectWashTrades(window_sizes_s=(3600,))
        findings = out[MAIN_TAG]
        assert_that(
            findings | beam.Map(lambda r: (r.activity_id, r.confidence_score)),
            equal_to([(r.activity_id, r.confidence_score) for r in expected]),
        )


def test_streaming_under_test_stream_gives_the_same_ids():
    trades = round_trips()
    hour = T0.replace(minute=0)
    expected = {r.activity_id for r in detect_wash_trades(trades, hour, hour + timedelta(hours=1))}
    TR, TF = "trades", "transfers"
    stream = TestStream(output_tags={TR, TF})
    for tag in (TR, TF):
        stream.advance_watermark_to(hour.timestamp(), tag=tag)
    stream.add_elements([stamped(t) for t in trades], tag=TR)
    for tag in (TR, TF):
        stream.advance_watermark_to((hour + timedelta(hours=2)).timestamp(), tag=tag)
        stream.advance_watermark_to_infinity(tag=tag)
    with beam.Pipeline(options=local_pipeline_options(streaming=True)) as p:
        src = p | stream
        out = (src[TR], src[TF]) | DetectWashTrades(window_sizes_s=(3600,), streaming=True)
        findings = out[MAIN_TAG]
        assert_that(findings | beam.Map(lambda r: r.activity_id), equal_to(sorted(expected)))


def test_bad_window_sizes_fail_loudly():
    with pytest.raises(ValueError, match="positive"):
        DetectWashTrades(window_sizes_s=(0,))
