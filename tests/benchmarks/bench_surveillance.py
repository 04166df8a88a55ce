"""Surveillance throughput on a generated day of trades, with peak memory.

    python -m tests.benchmarks.bench_surveillance [TRADES]      # default 1,000,000

A day of swaps over 2,000 pools (each created with a mint and a sync; a sync after every
swap, as v2 pools emit; 1 % of pools rugged at the end), measured twice on the same events:

- ``rug_pull_core``: the pure rules (``RugPoolState.observe``), one process;
- ``rug_pull_beam``: ``DetectRugPulls`` in batch on the FnApiRunner (events generated inside the
  pipeline, so ``beam.Create`` does not dominate), with the ratio to the core.

- ``wash_trade_beam``: ``DetectWashTrades`` (1 h, 1 d and 1 w windows) on the same swaps.

Prints one JSON line each: events, trades, seconds, trades/s and peak RSS. (The wash-trading
core alone: ``bench_wash_trade``.)
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

import apache_beam as beam

from runners.direct import local_pipeline_options
from schemas.events import DexTrade, LiquidityEvent
from tests.benchmarks.common import emit, peak_rss_mb
from transforms.common.dead_letter import MAIN_TAG
from transforms.surveillance.rug_pull import RugPoolState, event_order
from transforms.surveillance.transform import DetectRugPulls, DetectWashTrades

T0 = datetime(2025, 3, 1, tzinfo=UTC)
POOLS = 2_000
E18 = 10**18


def pool_events(pool: int, trades: int) -> list[LiquidityEvent | DexTrade]:
    """One pool's day: create, mint, sync, then ``trades`` swaps each followed by its sync."""
    addr = f"0xpool{pool:06d}"
    base, quote = 10**6 * E18, 100 * E18

    def liq(kind, t, log, b, q, lp=None, tx=None):
        return LiquidityEvent(
            event_id=f"{addr}:{kind}:{t}:{log}", pool_address=addr, kind=kind,
            tx_hash=tx or f"{addr}:{t}", block_number=t, log_index=log, sender="0xdeployer",
            token0=f"T{pool}", token1="WETH", amount0_raw=str(b), amount1_raw=str(q),
            decimals0=18, decimals1=18, liquidity_raw=None if lp is None else str(lp),
            event_time=T0 + timedelta(seconds=t),
        )  # fmt: skip

    out: list = [liq("create", 0, 0, 0, 0), liq("mint", 0, 1, base, quote, lp=10**21),
                 liq("sync", 0, 2, base, quote)]  # fmt: skip
    step = max(1, 86_000 // max(trades, 1))
    for k in range(trades):
        t = 1 + k * step
        buy = k % 2 == 0
        q = E18 // 10
        b = base * q // quote
        base, quote = (base - b, quote + q) if buy else (base + b, quote - q)
        who = f"0xtrader{(pool * 7 + k) % 5000:05d}"
        out.append(
            DexTrade(
                event_id=f"{addr}:swap:{k}",
                venue="uniswap_v2",
                pool_address=addr,
                tx_hash=f"{addr}:{t}",
                block_number=t,
                log_index=0,
                trader=who,
                recipient=who,
                token_in="WETH" if buy else f"T{pool}",
                token_out=f"T{pool}" if buy else "WETH",
                amount_in_raw=str(q if buy else b),
                amount_out_raw=str(b if buy else q),
                decimals_in=18,
                decimals_out=18,
                amount_usd="300",
                event_time=T0 + timedelta(seconds=t),
            )  # fmt: skip
        )
        out.append(liq("sync", t, 1, base, quote))
    if pool % 100 == 0:  # rugged at the end of the day
        out += [liq("burn", 86_300, 0, base, quote - 10**12, lp=10**21, tx=f"{addr}:pull"),
                liq("sync", 86_300, 1, 10**9, 10**12, tx=f"{addr}:pull")]  # fmt: skip
    return out


def main(n_trades: int = 1_000_000) -> int:
    per_pool = max(1, n_trades // POOLS)
    n_trades = per_pool * POOLS

    findings = events = 0
    core_s = 0.0
    for pool in range(POOLS):  # generate one pool at a time (bounded memory), time the rules only
        evs = sorted(pool_events(pool, per_pool), key=event_order)
        events += len(evs)
        state = RugPoolState(f"0xpool{pool:06d}")
        start = time.perf_counter()
        for e in evs:
            findings += state.observe(e) is not None
        core_s += time.perf_counter() - start
    start = time.perf_counter()
    for pool in range(POOLS):
        pool_events(pool, per_pool)
    gen_s = time.perf_counter() - start  # taken out of the Beam times (they generate in-pipeline)
    emit(
        "rug_pull_core",
        trades=n_trades,
        events=events,
        findings=findings,
        seconds=round(core_s, 2),
        trades_per_s=round(n_trades / core_s),
        events_per_s=round(events / core_s),
        peak_rss_mb=peak_rss_mb(),
    )

    start = time.perf_counter()
    with beam.Pipeline(options=local_pipeline_options()) as p:
        evs = (
            p
            | "Pools" >> beam.Create(list(range(POOLS)))
            | "Generate" >> beam.FlatMap(lambda i: pool_events(i, per_pool))
        )
        liquidity = evs | "Liq" >> beam.Filter(lambda e: isinstance(e, LiquidityEvent))
        trades = evs | "Trades" >> beam.Filter(lambda e: isinstance(e, DexTrade))
        out = (liquidity, trades) | DetectRugPulls()
        counted = out[MAIN_TAG] | beam.combiners.Count.Globally()
        counted | beam.Map(lambda n: print(f"# beam findings: {n}", file=sys.stderr))
    beam_s = time.perf_counter() - start - gen_s
    emit(
        "rug_pull_beam",
        runner="FnApiRunner",
        trades=n_trades,
        events=events,
        seconds=round(beam_s, 2),
        trades_per_s=round(n_trades / beam_s),
        events_per_s=round(events / beam_s),
        ratio_beam_to_core=round(core_s / beam_s, 3),
        peak_rss_mb=peak_rss_mb(),
    )

    start = time.perf_counter()
    with beam.Pipeline(options=local_pipeline_options()) as p:
        trades = (
            p
            | "Pools" >> beam.Create(list(range(POOLS)))
            | "Generate" >> beam.FlatMap(lambda i: pool_events(i, per_pool))
            | "Trades" >> beam.Filter(lambda e: isinstance(e, DexTrade))
            | "Stamp"
            >> beam.Map(lambda e: beam.window.TimestampedValue(e, e.event_time.timestamp()))
        )
        transfers = p | "NoTransfers" >> beam.Create([])
        findings = ((trades, transfers) | DetectWashTrades())[MAIN_TAG]
        (
            findings
            | beam.combiners.Count.Globally()
            | beam.Map(lambda n: print(f"# wash findings: {n}", file=sys.stderr))
        )
    wash_s = time.perf_counter() - start - gen_s
    emit(
        "wash_trade_beam",
        runner="FnApiRunner",
        windows="1h,1d,1w",
        trades=n_trades,
        seconds=round(wash_s, 2),
        trades_per_s=round(n_trades / wash_s),
        peak_rss_mb=peak_rss_mb(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))
