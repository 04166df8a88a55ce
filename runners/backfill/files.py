"""The backfill's files: the day-partitioned input, the output partitions, markers and state.

    INPUT/<topic>/date=YYYY-MM-DD/part-*.parquet     market.prices.v1, settlements.v1 (+ feeds.toml)
    OUTPUT/<table>/date=YYYY-MM-DD/part-00000.parquet  one per table and day, replaced atomically
    OUTPUT/_backfill/days/<day>.json                  a day's marker (rows, fingerprint, destination)
    OUTPUT/_backfill/state/<fingerprint>/<day>/       the shard engines' state after that day
    OUTPUT/_backfill/scratch/prices/date=D/           composite prices of warm-up days

The input may be a local directory or a URI (``gs://...``, ``file://...``; pyarrow filesystems).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runners.io.files import write_parquet_atomic

PRICES, SETTLEMENTS = "market.prices.v1", "settlements.v1"
TABLES = ("prices", "portfolio_var", "margin_health", "margin_events", "dead_letter")
SCRATCH = "_backfill/scratch"  # composite prices of warm-up days: read by the margin replay
STATE_DIR = "_backfill"


class BackfillError(ValueError):
    pass


# ------------------------------------------------------------------------------------ files
def partition(root: str | Path, table: str, day: date) -> Path:
    return Path(root) / table / f"date={day.isoformat()}"


def input_fs(input_dir: str | Path):
    """(pyarrow filesystem, base path) of the input: a local directory, or a URI such as
    ``gs://bucket/history`` (pyarrow's GCS filesystem) or ``file:///data/history``."""
    from pyarrow import fs

    text = str(input_dir)
    if "://" in text:
        return fs.FileSystem.from_uri(text)
    return fs.LocalFileSystem(), str(Path(text).resolve())


def _listing(input_dir: str | Path, sub: str):
    from pyarrow import fs

    filesystem, base = input_fs(input_dir)
    info = filesystem.get_file_info(fs.FileSelector(f"{base}/{sub}", allow_not_found=True))
    return filesystem, sorted(info, key=lambda i: i.path)


def input_days(input_dir: str | Path) -> list[date]:
    from pyarrow import fs

    _, entries = _listing(input_dir, PRICES)
    days = [
        date.fromisoformat(e.base_name.removeprefix("date="))
        for e in entries
        if e.type == fs.FileType.Directory and e.base_name.startswith("date=")
    ]
    if not days:
        raise BackfillError(
            f"no {PRICES}/date=YYYY-MM-DD/ partitions under {input_dir} (write them with "
            "`defi-risk generate --history`)"
        )
    return sorted(days)


def _day_files(input_dir: str | Path, topic: str, day: date):
    filesystem, entries = _listing(input_dir, f"{topic}/date={day.isoformat()}")
    return filesystem, [e.path for e in entries if e.base_name.endswith(".parquet")]


def read_day(input_dir: str | Path, topic: str, day: date) -> pa.Table | None:
    filesystem, files = _day_files(input_dir, topic, day)
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, filesystem=filesystem) for f in files])


def write_atomic(table: pa.Table, root: str | Path, name: str, day: date) -> Path:
    """Writes one table-day as its single part file; an existing one is replaced atomically."""
    final = partition(root, name, day) / "part-00000.parquet"
    write_parquet_atomic(table, final, compression="zstd")
    return final


def marker_path(output_dir: str | Path, day: date) -> Path:
    return Path(output_dir) / STATE_DIR / "days" / f"{day.isoformat()}.json"


def done_days(
    output_dir: str | Path, fingerprint: str, destination: str | None = None
) -> set[date]:
    """Days with a marker of this fingerprint and destination (None: the directory itself;
    ``bq://P.D``: published there from this staging directory)."""
    folder = Path(output_dir) / STATE_DIR / "days"
    out = set()
    for p in folder.glob("*.json"):
        marker = json.loads(p.read_text())
        if marker.get("fingerprint") == fingerprint and marker.get("destination") == destination:
            out.add(date.fromisoformat(p.stem))
    return out


def state_path(
    output_dir: str | Path, fingerprint: str, day: date, shard: int, kind: str = "var"
) -> Path:
    """A shard engine's state after ``day``, under its configuration's fingerprint: a run with
    another configuration never resumes from it."""
    folder = Path(output_dir) / STATE_DIR / "state" / fingerprint / day.isoformat()
    return folder / f"{kind}-shard-{shard}.pkl"


def day_events(input_dir: str, day: date) -> int:
    """Input rows of a day (prices and settlements), from the Parquet footers."""
    n = 0
    for topic in (PRICES, SETTLEMENTS):
        filesystem, files = _day_files(input_dir, topic, day)
        for f in files:
            with filesystem.open_input_file(f) as handle:
                n += pq.ParquetFile(handle).metadata.num_rows
    return n
