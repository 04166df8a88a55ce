"""Bulk history generation (generate --history): rows/s, MB/s, peak memory, 730-day projection.

python -m tests.benchmarks.bench_generate_history [DAYS] [ASSETS] [ACCOUNTS]

Generates DAYS (default 30) and then 2 x DAYS days of 1-minute prices x ASSETS (default 20) and
settlements of ACCOUNTS (default 10,000) into temp dirs, each in its own process so that each
peak RSS is its own. The last line compares the two: peak RSS must not grow with the days
(rss_ratio_2n_over_n close to 1), and rows/s gives the projected time of the 730-day run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import date

from tests.benchmarks.common import emit, peak_rss_mb, timer

FULL_DAYS = 730


def measure(days: int, assets: int, accounts: int) -> dict:
    """One run in this process; the figures of one JSON line."""
    from runners.synthetic.bulk import generate_history

    with tempfile.TemporaryDirectory() as tmp, timer() as t:
        manifest = generate_history(
            tmp, start=date(2024, 1, 1), days=days, assets=assets, accounts=accounts, seed=7
        )
    seconds = t["seconds"]
    rows = manifest["total_rows"]
    return {
        "days": days,
        "assets": assets,
        "accounts": accounts,
        "seconds": round(seconds, 2),
        "rows": rows,
        "rows_by_topic": manifest["rows"],
        "rows_per_s": round(rows / seconds),
        "mb": round(manifest["bytes"] / 1e6, 1),
        "mb_per_s": round(manifest["bytes"] / 1e6 / seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
        "projected_730_days_s": round(seconds / days * FULL_DAYS, 1),
    }


def _child(days: int, assets: int, accounts: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", __spec__.name, "--single", str(days), str(assets), str(accounts)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(days: int = 30, assets: int = 20, accounts: int = 10_000) -> None:
    runs = []
    for n in (days, 2 * days):
        figures = _child(n, assets, accounts)
        emit("generate_history", **figures)
        runs.append(figures)
    small, big = runs
    emit(
        "generate_history_memory",
        days=[small["days"], big["days"]],
        peak_rss_mb=[small["peak_rss_mb"], big["peak_rss_mb"]],
        rss_ratio_2n_over_n=round(big["peak_rss_mb"] / small["peak_rss_mb"], 3),
        projected_730_days_s=big["projected_730_days_s"],
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--single":
        print(json.dumps(measure(int(args[1]), int(args[2]), int(args[3]))), flush=True)
    else:
        main(
            int(args[0]) if args else 30,
            int(args[1]) if len(args) > 1 else 20,
            int(args[2]) if len(args) > 2 else 10_000,
        )
