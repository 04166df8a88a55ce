"""Synthetic market generation: wall time, records per second and peak memory.

python -m tests.benchmarks.bench_generate [DAYS] [ACCOUNTS] [FMT]
"""

from __future__ import annotations

import sys
import tempfile

from runners.synthetic import generate
from tests.benchmarks.common import emit, peak_rss_mb, timer


def main(days: int = 7, accounts: int = 200, fmt: str = "jsonl") -> None:
    phases: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, timer() as t:
        summary = generate(
            tmp, days=days, accounts=accounts, seed=7, fmt=fmt, progress=phases.append
        )
    records = sum(summary.values())
    emit(
        "generate",
        days=days,
        accounts=accounts,
        fmt=fmt,
        seconds=round(t["seconds"], 2),
        records=records,
        records_per_s=round(records / t["seconds"]),
        peak_rss_mb=peak_rss_mb(),
        counts=summary,
        phases=phases,
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 7,
        int(args[1]) if len(args) > 1 else 200,
        args[2] if len(args) > 2 else "jsonl",
    )
