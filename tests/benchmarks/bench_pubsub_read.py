"""How fast the local live run reads Pub/Sub (the real emulator), with Beam's own pull and with
the batched pull of ``runners.live.run.local_pull``.

    python -m tests.benchmarks.bench_pubsub_read [BACKLOG] [SECONDS]

1. ``pubsub_read_backlog``: BACKLOG / 2 (Beam's pull) or 2 x BACKLOG transfers wait on ``transfers.v1.sub``; the ``compliance``
   pipeline (one subscription, parse only) drains them. Messages read per second, with Beam's
   pull (10 messages per pull) and with 500 per pull.
2. ``pubsub_live_prices``: the ``risk`` pipeline while Chainlink + Pyth prices for every registry
   asset are published with current event times at 50, 100 and 200 msg/s for SECONDS: the rate
   it parses at, how long after the last publish it has parsed everything, and how many prices
   arrived after their window closed (``late_update`` dead letters).

Prints one JSON line per measurement; skipped (one line saying why) without the emulator.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runners.live.emulator import (
    emulator_unavailable_reason,
    free_host_port,
    provision,
    start_emulator,
)
from runners.live.publish import publish_records
from schemas.events import Transfer
from tests.benchmarks.common import emit
from tests.support.live_scenario import LiveRun, oracle_scenario


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


class Counter:
    """Samples the line count of a file every ``every_s`` in a thread."""

    def __init__(self, path: Path, every_s: float = 0.25):
        self.path, self.every_s = path, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), _lines(self.path)))
            self._stop.wait(self.every_s)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), _lines(self.path)))

    def rate(self, upto: int) -> float:
        """Lines per second between the first line and the time ``upto`` lines were there."""
        first = next((t for t, n in self.samples if n > 0), None)
        first_n = next((n for _, n in self.samples if n > 0), 0)
        last = next((t for t, n in self.samples if n >= upto), None)
        if first is None or last is None or last <= first:
            return float("nan")
        return (upto - first_n) / (last - first)

    def reached(self, n: int) -> float | None:
        return next((t for t, c in self.samples if c >= n), None)


def transfers(n: int, start: datetime) -> list[tuple[str, Transfer]]:
    return [
        (
            "transfers.v1",
            Transfer(
                event_id=f"bench-{i}",
                tx_hash=f"0x{i:064x}",
                block_number=20_000_000 + i,
                log_index=0,
                from_address=f"0x{i:040x}",
                to_address=f"0x{i + 1:040x}",
                asset="USDC",
                token_address="0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
                amount_raw="1000000",
                decimals=6,
                event_time=start + timedelta(milliseconds=i),
            ),
        )
        for i in range(n)
    ]


def backlog(host: str, tmp: Path, n: int, pull_max: int) -> None:
    project = f"bench-backlog-{pull_max}"
    provision(project, emulator_host=host, topics=["transfers.v1"])
    report = publish_records(transfers(n, datetime.now(UTC)), 5_000.0, project=project)
    out = tmp / f"backlog-{pull_max}"
    counter = Counter(out / "parsed" / "transfers.v1.jsonl")
    duration = 20.0 if pull_max else 45.0
    run = LiveRun(
        host, project, out, duration, ["--pull-max-messages", str(pull_max)], "compliance"
    )
    try:
        run.proc.wait(duration + 60)
    finally:
        run.stop()
        counter.stop()
    read = counter.samples[-1][1]
    emit(
        "pubsub_read_backlog",
        pull=("beam (10 per pull)" if not pull_max else f"{pull_max} per pull"),
        backlog=report.published,
        read=read,
        seconds=duration,
        messages_per_s=round(counter.rate(read), 1),
    )


def live_prices(host: str, tmp: Path, rate: float, seconds: float) -> None:
    project = f"bench-live-{int(rate)}"
    provision(project, emulator_host=host)
    out = tmp / f"live-{int(rate)}"
    n = int(rate * seconds)
    prices = oracle_scenario(datetime.now(UTC), n // 10 + 1)[:n]
    run = LiveRun(host, project, out, seconds + 20, ["--price_window_seconds=1"])
    counter = None
    try:
        if not run.started.wait(90):
            raise RuntimeError(run.output())
        counter = Counter(out / "parsed" / "market.prices.v1.jsonl")
        report = publish_records(prices, rate, project=project)
        published_at = time.monotonic()
        run.proc.wait(seconds + 90)
    finally:
        run.stop()
        if counter:
            counter.stop()
    dead = out / "tables" / "dead_letter.jsonl"
    rows = [json.loads(line) for line in dead.read_text().splitlines()] if dead.exists() else []
    done = counter.reached(report.published)
    emit(
        "pubsub_live_prices",
        rate_target=rate,
        rate_published=round(report.rate_achieved, 1),
        published=report.published,
        parsed=counter.samples[-1][1],
        parsed_per_s=round(counter.rate(counter.samples[-1][1]), 1),
        all_parsed_after_last_publish_s=None if done is None else round(done - published_at, 2),
        late_updates=sum(r["error_reason"] == "late_update" for r in rows),
    )


def main(n_backlog: int = 5_000, seconds: float = 15.0) -> int:
    reason = emulator_unavailable_reason()
    if reason:
        emit("pubsub_read", skipped=reason)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        emulator = start_emulator(free_host_port(), "bench", Path(tmp) / "emulator.log")
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        try:
            for pull_max, n in ((0, n_backlog // 2), (500, 2 * n_backlog)):
                backlog(emulator.host, Path(tmp), n, pull_max)
            for rate in (50.0, 100.0, 200.0):
                live_prices(emulator.host, Path(tmp), rate, seconds)
        finally:
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) if i == 0 else float(a) for i, a in enumerate(sys.argv[1:]))))
