"""After-the-fact labels over topic files (batch only: the rules need the future).

    defi-risk label rugpulls --input-dir data/demo [--study-end 2025-01-14T00:00:00Z] [--out labels.csv]

``rugpulls`` applies the Mazorra et al. (2022) rule of ``transforms.surveillance.rug_pull.label_rug_pulls`` to
``liquidity.v1`` and ``dex.trades.v1`` (``<topic>.jsonl`` or ``<topic>.parquet``): a pool is a rug
pull when its last liquidity event is a removal, no swap or mint follows, and at least 7 days pass
without activity before the study end (default: the latest event time in the files). Lines that
do not parse are counted and reported, never silently skipped.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from schemas.events import DexTrade, LiquidityEvent
from schemas.serde import from_json
from transforms.surveillance.rug_pull import label_rug_pulls

TOPICS = {"liquidity.v1": LiquidityEvent, "dex.trades.v1": DexTrade}


def read_events(input_dir: Path, bad: dict[str, int]) -> Iterator[LiquidityEvent | DexTrade]:
    found = False
    for topic, model in TOPICS.items():
        jsonl, parquet = input_dir / f"{topic}.jsonl", input_dir / f"{topic}.parquet"
        if jsonl.exists():
            found = True
            with jsonl.open("rb") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        yield from_json(model, line)
                    except (ValidationError, ValueError):
                        bad[topic] = bad.get(topic, 0) + 1
        elif parquet.exists():
            import pyarrow.parquet as pq

            found = True
            for row in pq.read_table(parquet).to_pylist():
                yield model(**row)
    if not found:
        raise FileNotFoundError(
            f"no liquidity.v1 or dex.trades.v1 file (.jsonl or .parquet) in {input_dir}"
        )


def label_command(args) -> int:
    bad: dict[str, int] = {}
    events = list(read_events(Path(args.input_dir), bad))
    if not events:
        print(f"no events in {args.input_dir}", file=sys.stderr)
        return 1
    end = (
        datetime.fromisoformat(args.study_end.replace("Z", "+00:00"))
        if args.study_end
        else max(e.event_time for e in events)
    )
    labels = label_rug_pulls(events, end, timedelta(days=args.quiet_days))
    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        w = csv.writer(out)
        w.writerow(["pool_address", "rug_pull"])
        for pool, rug in labels.items():
            w.writerow([pool, int(rug)])
    finally:
        if args.out:
            out.close()
    print(
        f"{len(labels)} pools, {sum(labels.values())} rug pulls (study end {end.isoformat()}, "
        f"{args.quiet_days} quiet days); unparsed lines skipped: {bad or 'none'}",
        file=sys.stderr,
    )
    return 0


def add_label_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    r = sub.add_parser("rugpulls", help="Mazorra et al. rug-pull labels per pool, as CSV.")
    r.add_argument(
        "--input-dir", required=True, help="Directory with liquidity.v1 and dex.trades.v1 files."
    )
    r.add_argument(
        "--study-end", default=None, help="ISO time the study ends (default: the last event)."
    )
    r.add_argument(
        "--quiet-days",
        type=float,
        default=7.0,
        help="Days without activity after the last removal (7).",
    )
    r.add_argument("--out", default=None, help="CSV path (default: standard output).")
    r.set_defaults(func=label_command)
