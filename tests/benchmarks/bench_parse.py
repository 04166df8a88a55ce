"""Parse throughput: ParseEvents inside the pipeline vs the same decode in a plain Python loop.

python -m tests.benchmarks.bench_parse [N]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import apache_beam as beam

from runners.direct import local_pipeline_options
from schemas.events import PriceEvent
from tests.benchmarks.common import emit, peak_rss_mb, timer
from transforms.common.parse import ParseEvents, decode


def payloads(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        out.append(
            json.dumps(
                {
                    "event_id": f"e{i}",
                    "asset": ("BTC", "ETH", "USDC")[i % 3],
                    "source": ("chainlink", "pyth")[i % 2],
                    "price": f"{1000 + i % 997}.{i % 100:02d}",
                    "publish_time": 1736121600 + i,
                }
            ).encode()
        )
    return out


def main(n: int = 200_000) -> None:
    data = payloads(n)
    with timer() as loop:
        ok = sum(1 for raw in data if decode(PriceEvent, raw, "json"))
    assert ok == n
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prices.jsonl"
        path.write_bytes(b"\n".join(data) + b"\n")
        for workers in (1, 2):
            opts = local_pipeline_options(num_workers=workers)
            p = beam.Pipeline(options=opts)
            _ = (
                p
                | beam.io.ReadFromText(str(path), coder=beam.coders.BytesCoder())
                | ParseEvents("market.prices.v1", "json", ["BTC", "ETH", "USDC"])
            )
            with timer() as beam_t:
                p.run().wait_until_finish()
            emit(
                "parse_prices",
                events=n,
                workers=workers,
                pipeline_events_per_s=round(n / beam_t["seconds"]),
                loop_events_per_s=round(n / loop["seconds"]),
                pipeline_seconds=round(beam_t["seconds"], 2),
                loop_seconds=round(loop["seconds"], 2),
                ratio_pipeline_over_loop=round(loop["seconds"] / beam_t["seconds"], 3),
                peak_rss_mb=peak_rss_mb(),
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
