"""The demo-sized local run: generate, then the whole graph on the local runner, against a
plain-Python baseline that computes the same tables (parse + validate + per-minute median).

    python -m tests.benchmarks.bench_local_run [DAYS] [ACCOUNTS]
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from runners.local.run import run_local
from runners.synthetic import generate
from schemas.registry import INPUT_TOPICS, TOPICS
from tests.benchmarks.baselines import composite_rows
from tests.benchmarks.common import emit, peak_rss_mb, timer
from transforms.common.parse import decode
from transforms.prices.oracles import load_registry


def baseline(data: Path) -> tuple[int, int]:
    """Same work in one process without Beam: decode every topic, validate and compose prices."""
    events, prices = 0, []
    known = set(load_registry().assets())
    for topic in INPUT_TOPICS:
        model = TOPICS[topic]
        for raw in (data / f"{topic}.jsonl").read_bytes().splitlines():
            events += 1
            try:
                rec = decode(model, raw, "json")
            except ValueError:  # pydantic's ValidationError is a ValueError: a dead letter
                continue
            if topic == "market.prices.v1" and rec.asset in known:
                prices.append(rec)
    return events, composite_rows(prices)


def main(days: int = 7, accounts: int = 200) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "in", Path(tmp) / "out"
        with timer() as gen:
            counts = generate(
                data, days=days, accounts=accounts, seed=7, start=datetime(2025, 1, 6, tzinfo=UTC)
            )
        emit(
            "generate",
            days=days,
            accounts=accounts,
            seconds=round(gen["seconds"], 2),
            records=sum(v for k, v in counts.items() if k in INPUT_TOPICS),
            target_seconds=60,
        )
        with timer() as base:
            events, base_rows = baseline(data)
        for workers in (1, 2):
            with timer() as run:
                report = run_local(data, out, num_workers=workers)
            rows = pq.read_table(out / "tables" / "prices").num_rows
            assert rows == base_rows, (rows, base_rows)
            emit(
                "local_run_all",
                days=days,
                accounts=accounts,
                workers=workers,
                events=events,
                pipeline_seconds=round(run["seconds"], 2),
                baseline_seconds=round(base["seconds"], 2),
                pipeline_events_per_s=round(events / run["seconds"]),
                baseline_events_per_s=round(events / base["seconds"]),
                ratio_pipeline_over_baseline_throughput=round(base["seconds"] / run["seconds"], 3),
                balanced=report.balanced(),
                peak_rss_mb=peak_rss_mb(),
            )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
