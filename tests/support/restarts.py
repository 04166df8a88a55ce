"""The kill-and-restart scenario of the live run on the emulator (tests/reliability and
tests/benchmarks/bench_reliability.py share it).

A publisher sends prices of every registry asset, account openings (a deposit and a borrow of
one instant, hash ids in random order), an ETH drop to a margin call, a further drop to
liquidation and a recovery, and malformed messages, each 2-6 s before its event time. Meanwhile
``defi-risk run risk --source pubsub`` is killed with SIGKILL ``kills`` times, at random points
from its start-up to its steady state, and restarted into the same output directory; the last run
ends after the publisher. The reference is an uninterrupted batch run of the same messages.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq

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

LEAD_S = 4.0  # the first message is published this long before the first event time
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
    return [
        {**r, "event_ts": r["event_ts"].isoformat()}
        for f in sorted((out / "tables" / table).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]


@dataclass
class RestartResult:
    kills: list[float]  # seconds each killed run lived
    published: int
    malformed: int
    parsed: Counter  # event id -> times parsed, across all runs
    expected_ids: Counter  # event id -> 1 for every well-formed published message
    parse_dead_letters: int
    events: Counter
    alerts: Counter
    ref_events: Counter
    ref_alerts: Counter
    negative_balance: int
    final_exit: int
    logs: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Well-formed messages never parsed, plus malformed ones without a dead letter."""
        missing = sum((self.expected_ids - self.parsed).values())
        return missing + max(0, self.malformed - self.parse_dead_letters)

    @property
    def false_alerts(self) -> int:
        return sum((self.alerts - self.ref_alerts).values())


def kill_and_restart(host: str, project: str, root: Path, kills: int, seed: int = 7,
                     seconds: int = 80) -> RestartResult:  # fmt: skip
    """Runs the scenario (module docstring) under ``root``; the caller sets
    PUBSUB_EMULATOR_HOST=host."""
    provision(project, emulator_host=host)
    out = root / "live"
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_S + 20)
    items = workload(start, seconds)
    rate = len(items) / seconds  # about one second of event time per second
    ref_in = root / "ref_in"
    ref_in.mkdir(parents=True, exist_ok=True)
    for topic in ("market.prices.v1", "settlements.v1"):
        with (ref_in / f"{topic}.jsonl").open("wb") as f:
            for t, item in items:
                if t == topic:
                    f.write((item if isinstance(item, bytes) else to_json(item).encode()) + b"\n")
    run_local(ref_in, root / "ref_out", pipeline="risk", extra_args=[WINDOW])
    ref_events, ref_alerts = margin_facts(root / "ref_out")

    published = {}

    def publish():
        wait = (start - timedelta(seconds=LEAD_S) - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, wait))
        published["report"] = publish_records(items, rate, project=project, current_times=False)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    rng = random.Random(seed)
    lives, logs = [], []
    for _ in range(kills):
        run = LiveRun(host, project, out, 600, [WINDOW])
        life = rng.uniform(2.0, 14.0)  # from mid start-up to steady state
        time.sleep(life)
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
        lives.append(round(life, 1))
        logs.append(run.output())
    end = start + timedelta(seconds=seconds + 15)
    final_s = max(20.0, (end - datetime.now(UTC)).total_seconds())
    run = LiveRun(host, project, out, final_s, [WINDOW])
    try:
        code = run.proc.wait(final_s + 120)
    finally:
        run.stop()
        logs.append(run.output())
    publisher.join(60)
    report = published["report"]
    parsed = Counter(
        r["event_id"]
        for t in ("market.prices.v1", "settlements.v1")
        for r in rows(out / "parsed" / f"{t}.jsonl")
    )
    dead = rows(out / "tables" / "dead_letter.jsonl")
    events, alerts = margin_facts(out)
    return RestartResult(
        kills=lives,
        published=report.published if report.failed == 0 else -report.failed,
        malformed=sum(isinstance(item, bytes) for _, item in items),
        parsed=parsed,
        expected_ids=Counter(item.message_id() for _, item in items if not isinstance(item, bytes)),
        parse_dead_letters=sum(d["stage"].startswith("Parse") for d in dead),
        events=events,
        alerts=alerts,
        ref_events=ref_events,
        ref_alerts=ref_alerts,
        negative_balance=sum(d["error_reason"] == "negative_balance" for d in dead),
        final_exit=code,
        logs=logs,
    )
