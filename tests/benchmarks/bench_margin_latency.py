"""Margin latency on the real Pub/Sub emulator: publish -> margin_health row, publish -> alert.

    python -m tests.benchmarks.bench_margin_latency [RATE ...] [--seconds S]

For each rate (default 100 and 1,000 events/s) a fresh project on one emulator, and the live
``risk`` pipeline (``defi-risk run risk --source pubsub --streaming``, 1-s price windows) in a
subprocess. Published at a steady rate with current event times (``publish_records``):

- per second of data, a Chainlink round and a Pyth update for every registry asset (10 events);
- the rest are settlements of fresh accounts, three each: deposit 10 ETH (row, no debt), borrow
  15,000 USDC (health 100) and borrow 8,500 more (health 27.7: a margin call and an alert).

Latency is processing time, from the publish call to (a) the moment the ``margin_health`` row of
that settlement is in ``OUT/tables/margin_health.jsonl`` (polled every 10 ms) and (b) the moment
the alert is pulled from ``alerts.margin.v1.sub`` (streaming pull, Avro decoded). Prints one JSON
line per rate: p50/p95/p99/max for both, rows and alerts received vs expected, the publish rate
reached and the sustained rate (settlement rows per second over the run). Skipped (one line
saying why) without the emulator.

Before the measured part, 3 s of prices alone warm the composite (a settlement is only valued
once every asset it holds has a price).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from runners.live.emulator import (
    emulator_unavailable_reason,
    free_host_port,
    provision,
    start_emulator,
)
from runners.live.publish import publish_records
from schemas.events import MarginAlert
from schemas.serde import from_avro
from schemas.topics import subscription_path
from tests.benchmarks.common import emit
from tests.support.factories import settlement
from tests.support.live_scenario import LiveRun, oracle_scenario

PRICES_PER_SECOND = 10  # 5 registry assets x (Chainlink + Pyth)


class FileTail:
    """Records the wall time at which each new line of a file is first seen."""

    def __init__(self, path: Path, every_s: float = 0.01):
        self.path, self.every_s = path, every_s
        self.seen: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        offset, partial = 0, b""
        while not self._stop.is_set():
            try:
                with self.path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                now = time.time()
                offset += len(chunk)
                data = partial + chunk
                *lines, partial = data.split(b"\n")
                self.seen += [(now, json.loads(line)) for line in lines if line]
            self._stop.wait(self.every_s)

    def stop(self):
        self._stop.set()
        self._thread.join()


class AlertPuller:
    """Streaming pull of ``alerts.margin.v1.sub``: receive time per (account, event type)."""

    def __init__(self, project: str):
        from google.cloud import pubsub_v1

        self.received: dict[tuple[str, str], float] = {}
        self.client = pubsub_v1.SubscriberClient()
        self.future = self.client.subscribe(
            subscription_path(project, "alerts.margin.v1"), callback=self._on_message
        )

    def _on_message(self, message):
        now = time.time()
        alert = from_avro(MarginAlert, message.data)
        self.received.setdefault((alert.account_id, alert.event_type), now)
        message.ack()

    def stop(self):
        from concurrent.futures import CancelledError

        self.future.cancel()
        with contextlib.suppress(CancelledError, TimeoutError):  # cancelled on purpose
            self.future.result(timeout=10)
        self.client.close()


def scenario(rate: float, seconds: int, start: datetime, tag: str):
    """(warm-up prices, measured items, settlement ids per account in publish order)."""
    prices = oracle_scenario(start, seconds + 3)
    warm = prices[: 3 * PRICES_PER_SECOND]
    per_second = max(0, int(rate) - PRICES_PER_SECOND)
    items, accounts = [], {}
    n = 0
    for k in range(seconds):
        items += prices[(3 + k) * PRICES_PER_SECOND : (4 + k) * PRICES_PER_SECOND]
        for _ in range(per_second // 3):
            a = f"{tag}-{n:06d}"
            n += 1
            steps = [
                settlement(f"{a}-d", a, "deposit", "ETH", "10", start),
                settlement(f"{a}-b1", a, "borrow", "USDC", "15000", start, decimals=6),
                settlement(f"{a}-b2", a, "borrow", "USDC", "8500", start, decimals=6),
            ]
            accounts[a] = [s.event_id for s in steps]
            items += [("settlements.v1", s) for s in steps]
    return warm, items, accounts


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p95_s": None, "p99_s": None, "max_s": None}
    a = np.array(values)
    return {
        "p50_s": round(float(np.percentile(a, 50)), 3),
        "p95_s": round(float(np.percentile(a, 95)), 3),
        "p99_s": round(float(np.percentile(a, 99)), 3),
        "max_s": round(float(a.max()), 3),
    }


def measure(host: str, tmp: Path, rate: float, seconds: int) -> None:
    project = f"bench-latency-{int(rate)}"
    provision(project, emulator_host=host)
    out = tmp / f"latency-{int(rate)}"
    warm, items, accounts = scenario(rate, seconds, datetime.now(UTC), f"r{int(rate)}")
    run = LiveRun(host, project, out, seconds + 45, ["--price_window_seconds=1"])
    tail = puller = None
    try:
        if not run.started.wait(90):
            raise RuntimeError(run.output())
        tail = FileTail(out / "tables" / "margin_health.jsonl")
        puller = AlertPuller(project)
        publish_records(warm, PRICES_PER_SECOND, project=project)
        t0 = time.time()
        report = publish_records(items, rate, project=project)
        t1 = time.time()
        deadline = time.monotonic() + 30
        wanted = 3 * len(accounts)
        while time.monotonic() < deadline:
            rows = sum(1 for _, r in tail.seen if r["trigger"] == "settlement")
            if rows >= wanted and len(puller.received) >= len(accounts):
                break
            time.sleep(0.1)
    finally:
        if tail:
            tail.stop()
        if puller:
            puller.stop()
        run.stop()
    # settlement rows of an account, in event-time order, are its three settlements in order
    by_account: dict[str, list[tuple[str, float]]] = {}
    for seen, row in tail.seen:
        if row["trigger"] == "settlement" and row["account_id"] in accounts:
            by_account.setdefault(row["account_id"], []).append((row["event_ts"], seen))
    health_lat, alert_lat = [], []
    for account, ids in accounts.items():
        for event_id, (_, seen) in zip(ids, sorted(by_account.get(account, [])), strict=False):
            health_lat.append(seen - report.publish_times[event_id])
        got = puller.received.get((account, "margin_call"))
        if got is not None:
            alert_lat.append(got - report.publish_times[ids[-1]])
    last_row = max((seen for seen, _ in tail.seen), default=t1)
    emit(
        "margin_latency",
        rate_target=rate,
        rate_published=round(report.rate_achieved, 1),
        published=report.published,
        seconds=seconds,
        settlements=3 * len(accounts),
        health_rows=len(health_lat),
        alerts_expected=len(accounts),
        alerts=len(alert_lat),
        health=percentiles(health_lat),
        alert=percentiles(alert_lat),
        sustained_rows_per_s=round(len(health_lat) / max(last_row - t0, 1e-9), 1),
        caught_up_after_last_publish_s=round(last_row - t1, 2),
    )


def main(argv: list[str]) -> int:
    seconds = 15
    if "--seconds" in argv:
        i = argv.index("--seconds")
        seconds = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    rates = [float(a) for a in argv] or [100.0, 1000.0]
    reason = emulator_unavailable_reason()
    if reason:
        emit("margin_latency", skipped=reason)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        emulator = start_emulator(free_host_port(), "bench", Path(tmp) / "emulator.log")
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        try:
            for rate in rates:
                measure(emulator.host, Path(tmp), rate, seconds)
        finally:
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
