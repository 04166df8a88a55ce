"""Kill the live run at random points (SIGKILL) and restart it, 10 times, on the real emulator.

A publisher sends prices of every registry asset, account openings (a deposit and a borrow of
one instant, hash ids in random order), an ETH drop and recovery, and malformed messages, each a
few seconds before its event time. Meanwhile ``defi-risk run risk --source pubsub`` is killed with
SIGKILL 10 times, at random points from its start-up to its steady state, and restarted into the
same output directory; the last run ends after the publisher. Then, across all the runs:

- every published message is accounted for (parsed once, or a parse dead letter);
- margin_events and alerts equal those of an uninterrupted batch run of the same messages;
- there is no false alert (a liquidation at -100 from a lost position, say).

    .venv/bin/pytest tests/reliability/test_live_restarts.py -q -rA     (~3 min)
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from runners.live.emulator import provision
from runners.live.publish import publish_records
from runners.local.run import run_local
from runners.synthetic.assets import CHAINLINK_DECIMALS, CHAINLINK_FEEDS, PYTH_EXPO, PYTH_FEEDS
from runners.synthetic.market import normalise_chainlink, normalise_pyth, round_id
from schemas.events import PriceEvent
from schemas.serde import to_json
from tests.support.factories import settlement
from tests.support.live_scenario import LiveRun
from transforms.prices.oracles import load_registry

pytestmark = pytest.mark.pubsub

PROJECT = "defi-risk-restarts"
KILLS = 10
LEAD_S = 4.0  # each message is published this long before its event time
WINDOW = "--price_window_seconds=5"
PRICES = {"ETH": "3000", "BTC": "98000", "USDC": "1", "USDT": "1", "DAI": "1"}


def price_events(asset: str, usd: Decimal, when: datetime, k: int) -> list[PriceEvent]:
    ts = int(when.timestamp())
    rid = str(round_id(50_000 + k))
    chainlink = {"feed": CHAINLINK_FEEDS[asset], "asset": asset, "round_id": rid,
                 "answer": int(usd * 10**CHAINLINK_DECIMALS), "decimals": CHAINLINK_DECIMALS,
                 "started_at": ts, "updated_at": ts, "answered_in_round": rid}  # fmt: skip
    mantissa = int(usd * 10**-PYTH_EXPO)
    quote = {"price": str(mantissa), "conf": str(mantissa // 5000), "expo": PYTH_EXPO,
             "publish_time": ts}  # fmt: skip
    pyth = {"id": PYTH_FEEDS[asset], "price": quote, "ema_price": dict(quote)}
    return [PriceEvent(**normalise_chainlink(chainlink, when)),
            PriceEvent(**normalise_pyth(pyth, asset, when))]  # fmt: skip


def workload(start: datetime, seconds: int, seed: int = 16) -> list[tuple[str, object]]:
    """Messages in publish order, about 10.3 a second of event time from ``start``."""
    rng = random.Random(seed)
    assets = sorted({f.asset for f in load_registry().feeds})
    items: list[tuple[str, object]] = []
    openings = {5 + 2 * i: i for i in range(12)}  # second -> account
    for k in range(seconds):
        when = start + timedelta(seconds=k)
        for asset in assets:
            usd = PRICES[asset]
            if asset == "ETH" and seconds * 0.45 <= k < seconds * 0.75:
                usd = "1900" if k < seconds * 0.6 else "1700"  # call, then liquidation
            items += [("market.prices.v1", e) for e in price_events(asset, Decimal(usd), when, k)]
        if k in openings:
            i = openings[k]
            account = f"acct-{i:02d}"
            borrow = str(15_000 - 500 * (i % 4))  # health 100..115: all fall into a call
            pair = [
                settlement(f"{rng.getrandbits(128):032x}", account, "deposit", "ETH", "10", when),
                settlement(f"{rng.getrandbits(128):032x}", account, "borrow", "USDC", borrow,
                           when, decimals=6),
            ]  # fmt: skip
            rng.shuffle(pair)
            items += [("settlements.v1", s) for s in pair]
        if k % 20 == 7:
            items.append(("market.prices.v1", b'{"event_id":"bad-%d","asset":"ETH","pri' % k))
    return items


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def margin_facts(out: Path) -> tuple[Counter, Counter]:
    """margin_events and margin alerts, as comparable tuples (JSON and Parquet alike)."""

    def health(x) -> str | None:
        return None if x is None else str(Decimal(str(x)).normalize())

    events = Counter(
        (r["account_id"], r["event_type"], r["zone"], r["previous_zone"], r["event_ts"][:19],
         health(r["health_score"]), r["alerted"])
        for r in rows_of_table(out, "margin_events")
    )  # fmt: skip
    alerts = Counter(
        (r["account_id"], r["event_type"], r["zone"], r["event_ts"][:19], health(r["health_score"]))
        for r in rows(out / "alerts" / "alerts.margin.v1.jsonl")
    )
    return events, alerts


def rows_of_table(out: Path, table: str) -> list[dict]:
    jsonl = out / "tables" / f"{table}.jsonl"
    if jsonl.exists():
        return rows(jsonl)
    import pyarrow.parquet as pq

    return [
        {**r, "event_ts": r["event_ts"].isoformat()}
        for f in sorted((out / "tables" / table).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]


def test_ten_kills_lose_nothing_and_invent_nothing(pubsub_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    provision(PROJECT, emulator_host=pubsub_emulator.host)
    out = tmp_path / "live"
    # About RATE messages per second of event time, published at RATE per second from LEAD_S
    # before the first event time: each message goes out 2-6 s before its event time.
    seconds = 80
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_S + 20)
    items = workload(start, seconds)
    rate = len(items) / seconds
    duration = len(items) / rate

    # the uninterrupted reference: the same messages, as files, through the batch graph
    ref_in = tmp_path / "ref_in"
    ref_in.mkdir()
    for topic in ("market.prices.v1", "settlements.v1"):
        with (ref_in / f"{topic}.jsonl").open("wb") as f:
            for t, item in items:
                if t == topic:
                    f.write((item if isinstance(item, bytes) else to_json(item).encode()) + b"\n")
    run_local(ref_in, tmp_path / "ref_out", pipeline="risk", extra_args=[WINDOW])
    ref_events, ref_alerts = margin_facts(tmp_path / "ref_out")
    assert sum(ref_alerts.values()) >= 12, ref_alerts  # every account called, some liquidated

    rng = random.Random(7)
    import threading

    published = {}

    def publish():
        wait = (start - timedelta(seconds=LEAD_S) - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, wait))
        published["report"] = publish_records(items, rate, project=PROJECT, current_times=False)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    kills, logs = [], []
    for _ in range(KILLS):
        run = LiveRun(pubsub_emulator.host, PROJECT, out, 600, [WINDOW])
        life = rng.uniform(2.0, 14.0)  # from mid start-up to steady state
        time.sleep(life)
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
        kills.append(round(life, 1))
        logs.append(run.output())
    end = start + timedelta(seconds=duration) + timedelta(seconds=15)
    final_s = max(20.0, (end - datetime.now(UTC)).total_seconds())
    run = LiveRun(pubsub_emulator.host, PROJECT, out, final_s, [WINDOW])
    try:
        assert run.proc.wait(final_s + 120) == 0, run.output()
    finally:
        run.stop()
    publisher.join(60)
    report = published["report"]
    assert report.failed == 0 and report.published == len(items)

    # every published message is accounted for: parsed once, or a parse dead letter
    good = {item.message_id() for _, item in items if not isinstance(item, bytes)}
    parsed = [r["event_id"] for t in ("market.prices.v1", "settlements.v1")
              for r in rows(out / "parsed" / f"{t}.jsonl")]  # fmt: skip
    assert Counter(parsed) == Counter(good), (kills, logs[-1])
    dead = rows(out / "tables" / "dead_letter.jsonl")
    bad = [d for d in dead if d["stage"].startswith("Parse")]
    assert len(bad) == sum(isinstance(item, bytes) for _, item in items)

    # margin events and alerts: those of the uninterrupted run, no more, no less
    events, alerts = margin_facts(out)
    assert events == ref_events, (kills, events - ref_events, ref_events - events)
    assert alerts == ref_alerts, (kills, alerts - ref_alerts, ref_alerts - alerts)
    refused = [d for d in dead if d["error_reason"] == "negative_balance"]
    assert refused == []  # positions survived every restart
