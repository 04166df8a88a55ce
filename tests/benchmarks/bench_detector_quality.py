"""Detector quality: precision, recall and counts of the market-abuse detectors per dataset.

    python -m tests.benchmarks.bench_detector_quality           # also run by `make bench`

One JSON line per dataset (``bench`` = ``detector_quality``, ``dataset`` says which):

- ``synthetic_wash_rings``: 10 generated days (seeds 1-10) of 20,000 ordinary traders each with 80
  hidden rings of 2-6 wallets (half with a common funder, 30 % of members camouflaged, price
  noise; see tests/support/wash_scenarios.py). Recall over rings of >= 3 cycles (a ring is found when
  one finding in its pool holds >= 80 % of its wallets), precision over findings, false
  findings (no ring wallet) and false alerts per 10,000 ordinary traders.
- ``pumpdump_pre_pump_benford``: the 12 Binance pairs' pre-pump trades (real, no wash labels:
  all negatives). Pooled Benford MAD and whether it fires; per-pair MADs and the per-pair
  false-alarm rate; findings and alerts of the whole detector on them (must be 0: Benford alone
  never makes a finding).
- ``polygon_round_trips``: 15,079 real Polygon swaps in 637 pools (no wash labels). (pool,
  recipient) pairs flagged by the round-trip rule, out of how many, and the detector's findings
  by signal. Precision and recall are null: nothing is labelled.
- ``polygon_rug_pulls``: the streaming rug-pull detector on the same 637 labelled pools: recall
  over the 181 rug pools with complete histories, false positives over the 338 clean pools, and
  the after-the-fact labeller's agreement with the shipped labels.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import numpy as np

from tests.benchmarks.common import emit
from tests.support import wash_data
from tests.support.wash_scenarios import evaluate, generate
from transforms.surveillance import wash_trade as wt


def synthetic(seeds=range(1, 11), traders: int = 20_000) -> None:
    keys = ("rings", "rings_found", "short_rings", "short_rings_found", "findings")
    keys += ("partial_findings", "false_findings", "ordinary_wallets_in_findings", "trades")
    total: Counter = Counter()
    by_funder = Counter()
    matched = false_alerts = alerts = 0
    for seed in seeds:
        sc = generate(seed=seed, traders=traders, pools=24, rings=80)
        det = wt.detect(sc.frame(), *sc.window, fundings=sc.fundings)
        ev = evaluate(sc, det.findings)
        for k in keys:
            total[k] += ev[k]
        matched += round(ev["precision"] * ev["findings"]) if ev["findings"] else 0
        ring_wallets = {w for r in sc.rings for w in r.wallets}
        alerts += len(det.alerts)
        false_alerts += sum(not set(a.wallet_addresses) & ring_wallets for a in det.alerts)
        for kind in ("common_funder", "no_common_funder"):
            n = sum(
                1 for r in sc.rings if r.cycles >= 3 and bool(r.funder) == (kind == "common_funder")
            )
            by_funder[f"{kind}_rings"] += n
            by_funder[f"{kind}_found"] += round((ev[f"recall_{kind}"] or 0) * n)
    ordinary = traders * len(seeds)
    emit(
        "detector_quality",
        dataset="synthetic_wash_rings",
        seeds=len(seeds),
        ordinary_traders=ordinary,
        trades=total["trades"],
        rings=total["rings"],
        rings_found=total["rings_found"],
        recall=round(total["rings_found"] / total["rings"], 4),
        recall_common_funder=round(
            by_funder["common_funder_found"] / by_funder["common_funder_rings"], 4
        ),
        recall_no_common_funder=round(
            by_funder["no_common_funder_found"] / by_funder["no_common_funder_rings"], 4
        ),
        short_rings=total["short_rings"],
        short_rings_found=total["short_rings_found"],
        findings=total["findings"],
        precision=round(matched / total["findings"], 4),
        partial_findings=total["partial_findings"],
        false_findings=total["false_findings"],
        false_findings_per_10k_traders=round(total["false_findings"] * 10_000 / ordinary, 3),
        ordinary_wallets_in_findings=total["ordinary_wallets_in_findings"],
        alerts=alerts,
        false_alerts=false_alerts,
        false_alerts_per_10k_traders=round(false_alerts * 10_000 / ordinary, 3),
    )


def pumpdump() -> None:
    pairs = wash_data.pumpdump_pre_pump()
    test = wt.BenfordTest()
    pooled = np.concatenate([p.amount for p in pairs])
    mad = wt.benford_mad(pooled)
    per_pair = {p.pair: round(wt.benford_mad(p.amount), 4) for p in pairs}
    testable = [p.pair for p in pairs if len(p.amount) >= test.min_trades]
    alarms = [k for k in testable if per_pair[k] > test.mad_threshold]
    over = [k for k, v in per_pair.items() if v > test.mad_threshold]

    n = len(pooled)
    buy = np.concatenate([p.buy for p in pairs])
    btc = pooled * np.concatenate([p.price for p in pairs])
    ts = np.concatenate([p.timestamp_ms for p in pairs])
    takers = [f"taker{i}" for i in range(n)]
    frame = wt.TradeFrame.from_columns(
        chain_id="binance",
        pool=list(np.concatenate([[p.pair] * len(p.amount) for p in pairs])),
        block=ts // 1000,
        log_index=np.arange(n),
        time_us=ts * 1000,
        trader=takers,
        recipient=takers,
        token_in=list(np.where(buy, "BTC", "COIN")),
        token_out=list(np.where(buy, "COIN", "BTC")),
        amount_in=np.where(buy, btc, pooled),
        amount_out=np.where(buy, pooled, btc),
        usd=btc,
        tx_hash=[f"b{i}" for i in range(n)],
    )
    det = wt.detect(frame, datetime(2020, 1, 1, tzinfo=UTC), datetime(2023, 1, 1, tzinfo=UTC))
    emit(
        "detector_quality",
        dataset="pumpdump_pre_pump_benford",
        trades=n,
        pairs=len(pairs),
        pooled_benford_mad=round(mad, 5),
        pooled_benford_threshold=test.mad_threshold,
        pooled_benford_fires=bool(mad > test.mad_threshold),
        per_pair_benford_mad=per_pair,
        pairs_over_threshold=len(over),
        per_pair_false_alarm_rate_all=round(len(over) / len(pairs), 4),
        pairs_testable=len(testable),
        min_trades=test.min_trades,
        pairs_benford_fired=len(alarms),
        per_pair_false_alarm_rate_testable=round(len(alarms) / len(testable), 4),
        detector_pools_benford_fired=sum(s["benford_fired"] for s in det.pool_stats.values()),
        findings=len(det.findings),
        alerts=len(det.alerts),
        precision=None,
        recall=None,
        note="no wash labels: every finding would be a false positive",
    )


def polygon() -> None:
    frame = wash_data.polygon_swaps()
    pt = wt.parties(frame)
    rt = wt.round_trips(frame, pt, wt.DEFAULT_CONFIG.round_trip)
    det = wt.detect(frame, datetime(2021, 12, 1, tzinfo=UTC), datetime(2022, 5, 1, tzinfo=UTC))
    by_signal: Counter = Counter()
    for row in det.findings:
        for name, s in json.loads(row.evidence_metrics)["signals"].items():
            by_signal[name] += s["fired"]
    emit(
        "detector_quality",
        dataset="polygon_round_trips",
        swaps=len(frame),
        pools=len(frame.pools),
        pool_recipient_pairs=pt.n_nodes,
        round_trip_flagged_pairs=len(rt.node),
        round_trip_limit=10,
        round_trip_counts=sorted(rt.count.tolist()),
        findings=len(det.findings),
        alerts=len(det.alerts),
        findings_by_signal=dict(sorted(by_signal.items())),
        without_usd=det.counters["without_usd"],
        precision=None,
        recall=None,
        note="no wash labels; WMATIC amounts stand in for USD",
    )


def polygon_rug_pulls() -> None:
    """The streaming rug-pull detector on the labelled Polygon pools (Mazorra et al.)."""
    from tests.support.mazorra_data import STUDY_END, complete_pools, pool_events, pools
    from transforms.surveillance.rug_pull import detect_pool, label_rug_pulls

    meta, events, complete = pools(), pool_events(), complete_pools()
    flagged = {p for p, evs in events.items() if detect_pool(evs)}
    rugs = {p for p in meta.index if meta.at[p, "label"] == 1 and p in complete}
    clean = {p for p in meta.index if meta.at[p, "label"] == 0}
    tp, fp = len(flagged & rugs), len(flagged & clean)
    labels = label_rug_pulls((e for evs in events.values() for e in evs), STUDY_END)
    agree = sum(labels[p] == bool(meta.at[p, "label"]) for p in labels)
    emit(
        "detector_quality",
        dataset="polygon_rug_pulls",
        pools=len(meta),
        pools_with_events=len(events),
        complete_rug_pools=len(rugs),
        clean_pools=len(clean),
        flagged_rugs=tp,
        flagged_clean=fp,
        recall=round(tp / len(rugs), 4),
        precision=round(tp / (tp + fp), 4),
        false_positive_rate=round(fp / len(clean), 4),
        labeller_agreement=round(agree / len(labels), 4),
        labeller_pools=len(labels),
        note="recall over the 181 rug pools with complete histories; precision over those and "
        "the 338 clean pools",
    )


def main() -> None:
    synthetic()
    pumpdump()
    polygon()
    polygon_rug_pulls()


if __name__ == "__main__":
    main()
