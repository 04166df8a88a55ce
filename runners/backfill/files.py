"""The backfill's files: the day-partitioned input, the output partitions, markers and state.

    INPUT/<topic>/date=YYYY-MM-DD/part-*.parquet     market.prices.v1, settlements.v1 (+ feeds.toml)
    OUTPUT/<table>/date=YYYY-MM-DD/part-00000.parquet  one per table and day, replaced atomically
    OUTPUT/_backfill/days/<day>.json                  a day's marker (fingerprint, destination,
                                                      per table: file, rows, bytes)
    OUTPUT/_backfill/state/<fingerprint>/<day>/       the shard engines' state after that day
                                                      (``*.pkl``, each with a ``.sha256`` beside it)
    OUTPUT/_backfill/scratch/prices/date=D/           composite prices of warm-up days

A day is done when its marker (this fingerprint and destination) can be read and every partition
it lists is there, opens (Parquet footer) and holds the rows and bytes the marker recorded
(``scan_days``); anything else is recomputed. A marker or state file that cannot be read is
treated as missing, with a warning. Markers and state are written whole or not at all.

The input may be a local directory or a URI (``gs://...``, ``file://...``; pyarrow filesystems).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runners.io.files import write_parquet_atomic

LOG = logging.getLogger(__name__)

PRICES, SETTLEMENTS = "market.prices.v1", "settlements.v1"
TABLES = ("prices", "portfolio_var", "margin_health", "margin_events", "dead_letter")
SCRATCH = "_backfill/scratch"  # composite prices of warm-up days: read by the margin replay
STATE_DIR = "_backfill"


class BackfillError(ValueError):
    pass


class CorruptFile(ValueError):
    """A marker or state file that cannot be trusted; the message says why."""


def one_line(reason: object, limit: int = 200) -> str:
    """An exception or reason as one short line (pyarrow's messages can span lines)."""
    text = " ".join(str(reason).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------ files
def partition(root: str | Path, table: str, day: date) -> Path:
    return Path(root) / table / f"date={day.isoformat()}"


def table_file(root: str | Path, table: str, day: date) -> Path:
    """The single part file of a table-day."""
    return partition(root, table, day) / "part-00000.parquet"


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
    final = table_file(root, name, day)
    write_parquet_atomic(table, final, compression="zstd")
    return final


def write_bytes_whole(data: bytes, path: Path) -> None:
    """``path`` holds ``data`` whole or keeps what it held: a temporary file beside it, flushed
    to disk, then ``os.replace`` (the name is unique per writer, so concurrent writers of other
    files never share a temporary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- markers
def marker_path(output_dir: str | Path, day: date) -> Path:
    return Path(output_dir) / STATE_DIR / "days" / f"{day.isoformat()}.json"


def describe_day(output_dir: str | Path, day: date) -> dict[str, dict]:
    """The day's partitions as its marker records them: per table, the file's path relative to
    the output root, its rows (from the Parquet footer) and its size in bytes."""
    root = Path(output_dir)
    out = {}
    for table in TABLES:
        path = table_file(root, table, day)
        if not path.is_file():
            raise BackfillError(f"{table} for {day} was not written ({path})")
        try:
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException) as e:
            raise BackfillError(f"{table} for {day} cannot be read back: {one_line(e)}") from e
        out[table] = {
            "path": path.relative_to(root).as_posix(),
            "rows": rows,
            "bytes": path.stat().st_size,
        }
    return out


def write_marker(
    output_dir: str | Path,
    day: date,
    fingerprint: str,
    files: dict[str, dict],
    destination: str | None = None,
) -> Path:
    """The day's marker, written whole (``files``: ``describe_day``'s; ``rows`` repeats the row
    counts for a reader's convenience)."""
    content: dict = {
        "fingerprint": fingerprint,
        "files": files,
        "rows": {t: f["rows"] for t, f in files.items()},
    }
    if destination is not None:
        content["destination"] = destination
    path = marker_path(output_dir, day)
    write_bytes_whole(json.dumps(content, sort_keys=True).encode(), path)
    return path


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_marker(path: Path, day: date) -> dict:
    """A marker as {fingerprint, destination, files: {table: {path, rows, bytes}}}; raises
    ``CorruptFile`` when it is not one. A marker of an older version (``rows`` only) names the
    conventional files, without sizes."""
    try:
        marker = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptFile(f"not UTF-8 text ({one_line(e)})") from e
    except json.JSONDecodeError as e:
        raise CorruptFile(f"not JSON ({one_line(e)})") from e
    if not isinstance(marker, dict) or not isinstance(marker.get("fingerprint"), str):
        raise CorruptFile("not a day marker (no fingerprint)")
    destination = marker.get("destination")
    if destination is not None and not isinstance(destination, str):
        raise CorruptFile("its destination is not a string")
    files = marker.get("files")
    if files is None:  # an older marker: row counts of the conventional files
        rows = marker.get("rows")
        if not isinstance(rows, dict) or not all(_count(n) for n in rows.values()):
            raise CorruptFile("no files and no row counts")
        files = {
            t: {"path": table_file(".", t, day).as_posix(), "rows": n, "bytes": None}
            for t, n in rows.items()
        }
    elif not isinstance(files, dict) or not all(
        isinstance(f, dict)
        and isinstance(f.get("path"), str)
        and _count(f.get("rows"))
        and (f.get("bytes") is None or _count(f.get("bytes")))
        for f in files.values()
    ):
        raise CorruptFile("its files are not {table: {path, rows, bytes}}")
    return {"fingerprint": marker["fingerprint"], "destination": destination, "files": files}


def check_day(output_dir: str | Path, day: date, files: dict[str, dict]) -> str | None:
    """Why the day's partitions do not agree with its marker's ``files`` (None: they do)."""
    root = Path(output_dir)
    for table in TABLES:
        entry = files.get(table)
        if entry is None:
            return f"the marker lists no {table} partition"
        expected = table_file(".", table, day).as_posix()
        if entry["path"] != expected:  # a marker copied from another day, or edited
            return f"the marker names {entry['path']} for {table}, not {expected}"
        path = root / expected
        if not path.is_file():
            return f"{table} partition missing"
        try:
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException) as e:
            return f"{table} partition unreadable ({one_line(e, 120)})"
        if rows != entry["rows"]:
            return f"{table} partition has {rows} rows, the marker says {entry['rows']}"
        size = path.stat().st_size
        if entry.get("bytes") is not None and size != entry["bytes"]:
            return f"{table} partition has {size} bytes, the marker says {entry['bytes']}"
    return None


def scan_days(
    output_dir: str | Path,
    fingerprint: str,
    days: list[date],
    destination: str | None = None,
) -> tuple[set[date], dict[date, str]]:
    """(done, to repair) among ``days``. Done: a marker of this fingerprint and destination
    (None: the directory itself; ``bq://P.D``: published there from this staging directory)
    whose partitions are all there with the recorded rows and sizes. To repair, with the reason:
    a marker of this fingerprint and destination whose partitions do not agree, or a marker that
    cannot be read (logged as a warning, and treated as missing). A day without a marker, or
    with another fingerprint's or destination's, is neither: it is simply not done."""
    done: set[date] = set()
    repairs: dict[date, str] = {}
    for day in days:
        path = marker_path(output_dir, day)
        try:
            marker = read_marker(path, day)
        except FileNotFoundError:
            continue
        except (OSError, CorruptFile) as e:
            LOG.warning("backfill: ignoring day marker %s: %s", path, one_line(e))
            repairs[day] = "day marker unreadable"
            continue
        if marker["fingerprint"] != fingerprint or marker["destination"] != destination:
            continue
        problem = check_day(output_dir, day, marker["files"])
        if problem is None:
            done.add(day)
        else:
            repairs[day] = problem
    return done, repairs


# ------------------------------------------------------------------------------------ state
def state_path(
    output_dir: str | Path, fingerprint: str, day: date, shard: int, kind: str = "var"
) -> Path:
    """A shard engine's state after ``day``, under its configuration's fingerprint: a run with
    another configuration never resumes from it."""
    folder = Path(output_dir) / STATE_DIR / "state" / fingerprint / day.isoformat()
    return folder / f"{kind}-shard-{shard}.pkl"


def state_days(output_dir: str | Path, fingerprint: str) -> list[date]:
    """Days with a state folder under ``fingerprint`` (complete or not), in order."""
    folder = Path(output_dir) / STATE_DIR / "state" / fingerprint
    out = []
    for entry in folder.glob("*") if folder.is_dir() else []:
        try:
            out.append(date.fromisoformat(entry.name))
        except ValueError:
            continue
    return sorted(out)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_state(data: bytes, path: Path) -> None:
    """A pickled engine state, then its checksum (``<file>.sha256``: hex digest and size), each
    written whole: a state whose checksum is missing or does not match is never resumed from."""
    write_bytes_whole(data, path)
    digest = hashlib.sha256(data).hexdigest()
    write_bytes_whole(f"{digest} {len(data)}\n".encode(), _digest_path(path))


def _expected_digest(path: Path) -> tuple[str, int]:
    try:
        text = _digest_path(path).read_text(encoding="ascii")
    except FileNotFoundError as e:
        raise CorruptFile(
            "no checksum beside it (its save was cut short, or an older version wrote it)"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptFile(f"checksum unreadable ({one_line(e)})") from e
    parts = text.split()
    if len(parts) != 2 or len(parts[0]) != 64 or not parts[1].isdigit():
        raise CorruptFile("checksum file garbled")
    return parts[0], int(parts[1])


def verify_state(path: Path) -> None:
    """Raises ``CorruptFile`` unless ``path`` exists and matches its checksum (read in blocks:
    state files can be large)."""
    digest, size = _expected_digest(path)
    try:
        actual_size = path.stat().st_size
        if actual_size != size:
            raise CorruptFile(f"{actual_size} bytes, its checksum file says {size}")
        with open(path, "rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError as e:
        raise CorruptFile("missing") from e
    except OSError as e:
        raise CorruptFile(f"unreadable ({one_line(e)})") from e
    if actual != digest:
        raise CorruptFile("contents do not match its checksum")


def load_state(path: Path) -> bytes:
    """The bytes of a saved state, checked against its checksum (``CorruptFile`` otherwise)."""
    digest, size = _expected_digest(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CorruptFile("missing") from e
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise CorruptFile("contents do not match its checksum")
    return data


def day_events(input_dir: str, day: date) -> int:
    """Input rows of a day (prices and settlements), from the Parquet footers."""
    n = 0
    for topic in (PRICES, SETTLEMENTS):
        filesystem, files = _day_files(input_dir, topic, day)
        for f in files:
            with filesystem.open_input_file(f) as handle:
                n += pq.ParquetFile(handle).metadata.num_rows
    return n
