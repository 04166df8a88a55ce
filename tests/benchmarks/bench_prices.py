"""Price ingestion throughput: decode (raw Chainlink + Pyth) + validate + composite, inside the
pipeline and as a plain loop over the same pure functions, with their ratio.

    python -m tests.benchmarks.bench_prices [DAYS]
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam

from runners.direct import local_pipeline_options
from runners.synthetic import generate
from tests.benchmarks.baselines import composite_rows
from tests.benchmarks.common import emit, peak_rss_mb, timer
from transforms.common.dead_letter import DEAD_LETTER_TAG, MAIN_TAG
from transforms.prices.oracles import load_registry
from transforms.prices.transform import (
    DECODERS,
    CompositePrices,
    DecodeOracleUpdates,
    ValidatePrices,
)


def loop(raw: dict[str, list[bytes]]) -> tuple[int, int]:
    """The same work without Beam: decode, validate, compose each asset in one pass."""
    reg = load_registry()
    events = [
        DECODERS[kind](json.loads(line), reg) for kind, lines in raw.items() for line in lines
    ]
    return len(events), composite_rows(events)


def main(days: int = 7) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        generate(data, days=days, accounts=10, seed=7, start=datetime(2025, 1, 6, tzinfo=UTC))
        raw = {
            k: (data / "raw" / f"{k}_{n}.jsonl").read_bytes().splitlines()
            for k, n in (("chainlink", "rounds"), ("pyth", "updates"))
        }
        with timer() as base:
            events, base_rows = loop(raw)
        p = beam.Pipeline(options=local_pipeline_options())
        decoded = [
            p
            | f"Read{k}"
            >> beam.io.ReadFromText(
                str(data / "raw" / f"{k}_{n}.jsonl"), coder=beam.coders.BytesCoder()
            )
            | f"Decode{k}" >> DecodeOracleUpdates(k)
            for k, n in (("chainlink", "rounds"), ("pyth", "updates"))
        ]
        valid = [d[MAIN_TAG] for d in decoded] | beam.Flatten() | ValidatePrices()
        composite = valid[MAIN_TAG] | CompositePrices()
        _ = (
            composite[MAIN_TAG]
            | beam.combiners.Count.Globally()
            | beam.Map(lambda n: (data / "rows").write_text(str(n)))
        )
        _ = [d[DEAD_LETTER_TAG] for d in decoded]
        with timer() as run:
            p.run().wait_until_finish()
        rows = int((data / "rows").read_text())
        assert rows == base_rows, (rows, base_rows)
        emit(
            "price_ingestion",
            days=days,
            events=events,
            composite_rows=rows,
            pipeline_seconds=round(run["seconds"], 2),
            loop_seconds=round(base["seconds"], 2),
            pipeline_events_per_s=round(events / run["seconds"]),
            loop_events_per_s=round(events / base["seconds"]),
            ratio_pipeline_over_loop=round(base["seconds"] / run["seconds"], 3),
            peak_rss_mb=peak_rss_mb(),
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
