"""File edges shared by the run modes: topic files in, Parquet tables and JSONL alerts out.

- ``find_inputs``: the ``DIR/<topic>.jsonl`` (or ``.parquet``) files a run reads;
  ``stages_without_inputs``: the stages a missing topic file would skip;
- ``replay_stream``: the same files as a TestStream in event-time order (``--replay stream``);
- ``write_table`` / ``write_alerts``: a table's rows as Parquet under ``OUT/tables/<table>/``
  and a topic's alerts as ``OUT/alerts/<topic>.jsonl`` (the local run's sinks);
- ``AppendJsonLines``: a streaming-safe local sink, one line per element (the live run's);
- ``write_parquet_atomic`` / ``write_bytes_atomic``: a file written whole or not at all (the
  generator's and the backfill's day partitions).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.metrics import Metrics
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue

from schemas.codegen import arrow_schema
from schemas.registry import TABLES, TOPICS
from schemas.serde import to_arrow_table, to_json, to_row
from schemas.types import MAX_EVENT_TIME, MIN_EVENT_TIME, coerce_time

if TYPE_CHECKING:  # the stage registry is the caller's: this module stays off the graph
    from pipelines.stages import Stage

# Deterministic Parquet: the same table gives the same bytes (the generator's files are hashed).
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
}


# The local run's tables: quick to write, one column statistics pass for the warehouse load.
SINK_OPTIONS = {"compression": "snappy", "write_statistics": True}


class InputError(RuntimeError):
    """The input directory does not hold what the run needs."""


def find_inputs(
    input_dir: Path, topics: tuple[str, ...], input_format: str
) -> tuple[dict[str, Path], list[str]]:
    """The topic files of ``topics`` in ``input_dir`` and the topics with no file."""
    if input_dir.exists() and not input_dir.is_dir():
        raise InputError(f"input directory {input_dir} is a file, not a directory")
    if not input_dir.is_dir():
        raise InputError(
            f"input directory {input_dir} does not exist; create one with `defi-risk generate --out {input_dir}`"
        )
    found, missing = {}, []
    for topic in topics:
        path = input_dir / f"{topic}.{input_format}"
        (found.__setitem__(topic, path) if path.exists() else missing.append(topic))
    if not found:
        raise InputError(
            f"no {input_format} topic files in {input_dir} (expected e.g. {topics[0]}.{input_format})"
        )
    return found, missing


def stages_without_inputs(stages: Iterable[Stage], found: Iterable[str]) -> dict[str, list[str]]:
    """Stage label -> the missing input topics that skip it, for ``stages`` (a pipeline's, in
    registry order: ``pipelines.stages.stages_for``) when only the topics in ``found`` have a
    file. Mirrors ``build()``: a stage runs when every stream of its ``inputs`` is there (a topic,
    or the stream of an earlier stage that ran); a stream of its ``optional`` map is never needed
    (an empty stand-in takes its place)."""
    available = set(found)
    provider: dict[str, str] = {}  # stream -> the label of the stage that provides it
    skipped: dict[str, list[str]] = {}
    for stage in stages:
        if stage.stream:
            provider[stage.stream] = stage.label
        absent = [name for name in stage.inputs if name not in available]
        if not absent:
            if stage.stream:
                available.add(stage.stream)
            continue
        causes: list[str] = []
        for name in absent:  # a topic, or a stream whose stage was skipped for its own topics
            for topic in skipped.get(provider.get(name, ""), [name]):
                if topic not in causes:
                    causes.append(topic)
        skipped[stage.label] = causes
    return skipped


def _sink_window(streaming: bool):
    # Batch writes one file per table; an unbounded write needs finite windows, so the stream
    # replay writes one file per table and event-time day (closed by the watermark).
    return window.FixedWindows(86_400) if streaming else window.GlobalWindows()


# Rows per Parquet file of a batch run: a bounded buffer (~100 MB of margin rows at most).
CHUNK_ROWS = 100_000


class WriteParquetChunksFn(beam.DoFn):
    """A batch table sink: rows are buffered and written ``CHUNK_ROWS`` at a time, each chunk
    one ``part-<random>.parquet`` file written whole (``write_parquet_atomic``). Beam's
    ``WriteToParquet`` costs ~20 µs per row here; this sink ~8 µs, with bounded memory."""

    def __init__(self, table: str, directory: str, chunk_rows: int = CHUNK_ROWS):
        self.table, self.directory, self.chunk_rows = table, directory, chunk_rows
        self.files = Metrics.counter("sink", f"{table}.files")

    def setup(self):
        self._schema = arrow_schema(TABLES[self.table])

    def start_bundle(self):
        self._rows: list = []

    def process(self, row):
        self._rows.append(row)
        if len(self._rows) >= self.chunk_rows:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if not self._rows:
            return
        table = to_arrow_table(self._rows, self._schema)
        write_parquet_atomic(
            table, Path(self.directory) / f"part-{uuid.uuid4().hex}.parquet", **SINK_OPTIONS
        )
        self.files.inc()
        self._rows = []


def write_table(rows, table: str, out_dir: Path, streaming: bool = False):
    """A table's rows as Parquet files under ``OUT/tables/<table>/``: in chunks in batch, and
    through Beam's ``WriteToParquet`` in the stream replay (one file per event-time day, once
    the watermark closes it). A table without rows gets no file (``fill_empty_tables``)."""
    if not streaming:
        return rows | f"Write_{table}" >> beam.ParDo(
            WriteParquetChunksFn(table, str(out_dir / "tables" / table), CHUNK_ROWS)
        )
    return (
        rows
        | f"Global_{table}" >> beam.WindowInto(_sink_window(streaming))
        | f"ToRow_{table}" >> beam.Map(to_row)
        | f"Write_{table}"
        >> WriteToParquet(
            str(out_dir / "tables" / table / "part"),
            arrow_schema(TABLES[table]),
            file_name_suffix=".parquet",
            num_shards=1,
        )
    )


def fill_empty_tables(out_dir: Path, tables: Iterable[str]) -> None:
    """One empty Parquet file, with the contract's schema, for each table that got no rows: a
    reader of ``OUT/tables/<table>/`` finds the table and its columns either way."""
    for table in tables:
        directory = out_dir / "tables" / table
        if not any(directory.glob("*.parquet")):
            schema = arrow_schema(TABLES[table])
            write_parquet_atomic(schema.empty_table(), directory / "part-empty.parquet")


def write_alerts(alerts, topic: str, out_dir: Path, streaming: bool = False):
    return (
        alerts
        | f"Global_{topic}" >> beam.WindowInto(_sink_window(streaming))
        | f"ToJson_{topic}" >> beam.Map(to_json)
        | f"Write_{topic}"
        >> beam.io.WriteToText(
            str(out_dir / "alerts" / topic), file_name_suffix=".jsonl", shard_name_template=""
        )
    )


def _peek_event_time(raw: bytes, field_name: str) -> float | None:
    """Event time (epoch seconds) of a JSON line, without validating it; None when unreadable."""
    try:
        value = json.loads(raw).get(field_name)
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return coerce_time(value).timestamp()
    except (ValueError, TypeError, AttributeError, OverflowError):
        return None
    return None


def replay_stream(paths: dict[str, Path], step_seconds: int = 60) -> TestStream:
    """A TestStream that replays the topic files in event-time order, one step at a time.

    Each topic is a tagged output. Lines are released in steps of ``step_seconds`` of event time,
    and after each step the watermark of every topic advances to the step's end, as a live
    source's watermark would. A line whose time cannot be read (a future dead letter) travels
    with the line before it. Everything is held in the graph: meant for small inputs.
    """
    events: list[tuple[float, int, str, bytes]] = []
    for topic, path in paths.items():
        field_name = TOPICS[topic].event_time_field
        last = None
        for i, raw in enumerate(path.read_bytes().split(b"\n")):
            if not raw:
                continue
            t = _peek_event_time(raw, field_name)
            if t is None or not (MIN_EVENT_TIME.timestamp() <= t < MAX_EVENT_TIME.timestamp()):
                t = last
            last = t if t is not None else last
            events.append((t if t is not None else -1.0, i, topic, raw))
    first = min((e[0] for e in events if e[0] >= 0), default=0.0)
    events = [(t if t >= 0 else first, i, topic, raw) for t, i, topic, raw in events]
    events.sort(key=lambda e: (e[0], e[2], e[1]))
    stream = TestStream(output_tags=set(paths))
    for topic in paths:
        stream = stream.advance_watermark_to(int(first) - 1, tag=topic)
    i = 0
    while i < len(events):
        step_end = (int(events[i][0]) // step_seconds + 1) * step_seconds
        batch: dict[str, list] = {}
        while i < len(events) and events[i][0] < step_end:
            t, _, topic, raw = events[i]
            batch.setdefault(topic, []).append(TimestampedValue(raw, t))
            i += 1
        for topic, elements in batch.items():
            stream = stream.add_elements(elements, tag=topic)
        for topic in paths:
            stream = stream.advance_watermark_to(step_end, tag=topic)
    for topic in paths:
        stream = stream.advance_watermark_to_infinity(tag=topic)
    return stream


def repair_torn_tail(path: Path) -> int:
    """Cuts a last line left without its newline by a kill mid-write (an append-only JSON-lines
    file: a sink or the live journal); returns the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # scan back to the last newline (tails are short: one torn line)
        pos, chunk, keep = size, 4096, 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            cut = f.read(pos - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        f.truncate(keep)
        return size - keep


def ids_in(path: Path, id_field: str) -> set:
    """The ``id_field`` values of a JSON-lines file, after cutting a last line torn by a kill."""
    if not path.exists():
        return set()
    repair_torn_tail(path)
    with path.open("rb") as f:
        return {json.loads(line).get(id_field) for line in f if line.strip()}


class AppendJsonLines(beam.DoFn):
    """Appends one line per element to a local file; the lines of a bundle are written and
    flushed together at ``finish_bundle``, so a bundle's rows appear whole or not at all.

    ``encode`` turns an element into one line (default ``schemas.serde.to_json``). The file is
    opened in append mode per bundle, so concurrent bundles never overwrite each other. With
    ``id_field``, a row whose id the file already holds is skipped (a restarted live run replays
    its journal and re-derives rows written before the kill); a last line torn by a kill is cut.
    """

    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(
        self, path: str | Path, encode: Callable[[Any], str] = to_json, id_field: str | None = None
    ):
        self.path = str(path)
        self.encode = encode
        self.id_field = id_field

    def setup(self):
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with AppendJsonLines._locks_guard:
            self._lock = AppendJsonLines._locks.setdefault(self.path, threading.Lock())
        self._written: set | None = None
        if self.id_field:
            with self._lock:
                self._written = ids_in(Path(self.path), self.id_field)
        self.skipped = Metrics.counter("sinks", f"{Path(self.path).name}.already_written")

    def start_bundle(self):
        self._lines: list[str] = []

    def process(self, element):
        line = self.encode(element)
        if self._written is not None:  # a restart re-derives rows it may already hold
            key = json.loads(line).get(self.id_field)
            if key in self._written:
                self.skipped.inc()
                return
            self._written.add(key)
        self._lines.append(line)

    def finish_bundle(self):
        if not self._lines:
            return
        text = "".join(line + "\n" for line in self._lines)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(text)
            out.flush()
        self._lines = []


def write_parquet_atomic(table: pa.Table, path: Path, **options) -> int:
    """Writes ``path`` whole or not at all (a temporary name, then ``os.replace``); returns its
    size. ``options`` default to the generator's deterministic ``PARQUET_OPTIONS``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, **(options or PARQUET_OPTIONS))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def write_bytes_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
