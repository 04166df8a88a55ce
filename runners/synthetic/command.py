"""``defi-risk generate``: the synthetic market as topic files, or years of history as Parquet.

    defi-risk generate --out data/demo --days 7 --accounts 200 --seed 7
    defi-risk generate --history --out data/history --start 2024-01-01 --days 730 --assets 20 \\
        --accounts 10000
"""

from __future__ import annotations

import sys
import time

from runners.synthetic import generate
from runners.synthetic.bulk import generate_history


def generate_command(args) -> int:
    """The topic files of a synthetic market plus ground_truth.json."""
    started = time.perf_counter()
    summary = generate(
        args.out,
        days=args.days,
        accounts=args.accounts,
        seed=args.seed,
        start=args.start,
        fmt=args.format,
        progress=lambda msg: print(f"  generate: {msg}", flush=True),
    )
    print(
        f"generated {args.days} days x {args.accounts} accounts (seed {args.seed}) in {args.out} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    for topic, n in summary.items():
        print(f"  {topic:<24} {n:>10,}")
    return 0


def generate_history_command(args) -> int:
    """`generate --history`: years of 1-minute prices and settlements, Parquet by day."""

    try:
        manifest = generate_history(
            args.out,
            start=args.start,
            days=args.days,
            assets=args.assets,
            accounts=args.accounts,
            seed=args.seed,
            progress=lambda msg: print(f"  generate --history: {msg}", flush=True),
        )
    except ValueError as err:
        print(f"defi-risk: {err}", file=sys.stderr)
        return 2
    print(
        f"generated {args.days} days x {args.assets} assets x {args.accounts} accounts "
        f"(seed {args.seed}) in {args.out} in {manifest['wall_time_s']:.1f} s"
    )
    for topic, n in manifest["rows"].items():
        print(f"  {topic:<24} {n:>12,}")
    return 0
