"""Wash-trading core throughput on a generated day of 1M trades, with peak memory.

    python -m tests.benchmarks.bench_wash_trade [TRADERS]      # default 172,000 (~1M trades)

The day comes from ``tests.support.wash_scenarios.generate`` (300 USDC pools with Zipf popularity,
casual, regular and active traders, 200 wash rings hidden among them) and goes through the pure
core of ``transforms.surveillance.wash_trade`` as numpy columns. One JSON line each:

- ``wash_trade_core``: ``TradeFrame.from_columns`` (normalise, sort, deduplicate), then each
  stage on its own (round trips, weak statistics, the trade graph and loops), then the whole
  ``detect``; trades/s for each, with peak RSS (and the peak right after generating the day,
  which is the input's share). ``round_trip_vs_python`` is the ratio of a
  plain-Python loop doing the round-trip rule on the same trades to the vectorised rule.
- ``wash_trade_records``: the record path the Beam wrapper takes, ``TradeFrame.from_trades`` on
  validated ``DexTrade``s, on a 100,000-trade slice (records/s).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from tests.benchmarks.common import emit, peak_rss_mb
from tests.support.wash_scenarios import generate
from transforms.surveillance import wash_trade as wt


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def python_round_trips(frame: wt.TradeFrame, rule: wt.RoundTripRule) -> int:
    """The same rule as a plain-Python loop over the trades: the baseline."""
    seq: dict[tuple[int, int], list[int]] = {}
    for t in range(len(frame)):
        if frame.usd[t] != frame.usd[t]:  # NaN
            continue
        for w in {int(frame.trader[t]), int(frame.recipient[t])}:
            seq.setdefault((int(frame.pool[t]), w), []).append(t)
    flagged = 0
    for trades in seq.values():
        trades.sort(key=lambda t: (frame.block[t], frame.log_index[t]))
        count, k = 0, 0
        while k + 1 < len(trades):
            a, b = trades[k], trades[k + 1]
            ua, ub = frame.usd[a], frame.usd[b]
            if (
                frame.side[a] != frame.side[b]
                and frame.block[b] - frame.block[a] <= rule.max_blocks
                and abs(ua - ub) <= (rule.usd_tolerance + 1e-9) * max(ua, ub)
            ):
                count, k = count + 1, k + 2
            else:
                k += 1
        flagged += count >= rule.min_count
    return flagged


def main(traders: int = 172_000) -> None:
    t = time.perf_counter()
    sc = generate(seed=7, traders=traders, pools=300, rings=200)
    gen_s = time.perf_counter() - t
    rss_input = peak_rss_mb()  # the generated day as Python lists: input, not the core
    n = len(sc)
    cfg = wt.DEFAULT_CONFIG

    frame_s, frame = best_of(sc.frame, 2)
    pt = wt.parties(frame)
    rt_s, rt = best_of(lambda: wt.round_trips(frame, pt, cfg.round_trip))
    stats_s, _ = best_of(lambda: wt.pool_statistics(frame, cfg))

    def graph_and_loops():
        g = wt.trade_graph(frame, pt, cfg.closed_loop, cfg.scan_limit)
        return wt.closed_loops(frame, pt, g, cfg.closed_loop)

    loops_s, _ = best_of(graph_and_loops)
    detect_s, det = best_of(lambda: wt.detect(frame, *sc.window, fundings=sc.fundings))

    # The plain-Python baseline on a slice (it takes seconds per 100k trades).
    k = min(n, 200_000)
    part = frame.subset(np.arange(len(frame)) < k)
    py_t = time.perf_counter()
    py_flagged = python_round_trips(part, cfg.round_trip)
    py_s = time.perf_counter() - py_t
    part_rt_s, part_rt = best_of(lambda: wt.round_trips(part, wt.parties(part), cfg.round_trip))
    assert py_flagged == len(part_rt.node), (py_flagged, len(part_rt.node))

    emit(
        "wash_trade_core",
        trades=n,
        pools=len(frame.pools),
        wallets=len(frame.wallets),
        generate_s=round(gen_s, 2),
        frame_s=round(frame_s, 3),
        frame_trades_per_s=round(n / frame_s),
        round_trip_s=round(rt_s, 3),
        round_trip_trades_per_s=round(n / rt_s),
        statistics_s=round(stats_s, 3),
        statistics_trades_per_s=round(n / stats_s),
        graph_and_loops_s=round(loops_s, 3),
        graph_and_loops_trades_per_s=round(n / loops_s),
        detect_s=round(detect_s, 3),
        detect_trades_per_s=round(n / detect_s),
        frame_plus_detect_trades_per_s=round(n / (frame_s + detect_s)),
        findings=len(det.findings),
        alerts=len(det.alerts),
        round_trip_flagged=len(rt.node),
        python_round_trip_trades=k,
        python_round_trip_s=round(py_s, 3),
        round_trip_vs_python=round(py_s / part_rt_s, 1),
        peak_rss_after_generate_mb=rss_input,
        peak_rss_mb=peak_rss_mb(),
    )

    sample = sc.dex_trades(np.arange(min(n, 100_000)))
    rec_s, rec = best_of(lambda: wt.TradeFrame.from_trades(sample), 2)
    emit(
        "wash_trade_records",
        records=len(sample),
        from_trades_s=round(rec_s, 3),
        records_per_s=round(len(sample) / rec_s),
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 172_000)
