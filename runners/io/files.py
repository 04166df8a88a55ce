"""File edges shared by the run modes: topic files in, Parquet tables and JSONL alerts out.

- ``find_inputs``: the ``DIR/<topic>.jsonl`` (or ``.parquet``) files a run reads;
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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue

from schemas.codegen import arrow_schema
from schemas.registry import TABLES, TOPICS
from schemas.serde import to_json, to_row
from schemas.types import MAX_EVENT_TIME, MIN_EVENT_TIME, coerce_time

# Deterministic Parquet: the same table gives the same bytes (the generator's files are hashed).
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
}


class InputError(RuntimeError):
    """The input directory does not hold what the run needs."""


def find_inputs(
    input_dir: Path, topics: tuple[str, ...], input_format: str
) -> tuple[dict[str, Path], list[str]]:
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


def _sink_window(streaming: bool):
    # Batch writes one file per table; an unbounded write needs finite windows, so the stream
    # replay writes one file per table and event-time day (closed by the watermark).
    return window.FixedWindows(86_400) if streaming else window.GlobalWindows()


def write_table(rows, table: str, out_dir: Path, streaming: bool = False):
    model = TABLES[table]
    return (
        rows
        | f"Global_{table}" >> beam.WindowInto(_sink_window(streaming))
        | f"ToRow_{table}" >> beam.Map(to_row)
        | f"Write_{table}"
        >> WriteToParquet(
            str(out_dir / "tables" / table / "part"),
            arrow_schema(model),
            file_name_suffix=".parquet",
            num_shards=1,
        )
    )


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


class AppendJsonLines(beam.DoFn):
    """Appends one line per element to a local file; the lines of a bundle are written and
    flushed together at ``finish_bundle``, so a bundle's rows appear whole or not at all.

    ``encode`` turns an element into one line (default ``schemas.serde.to_json``). The file is
    opened in append mode per bundle, so concurrent bundles never overwrite each other.
    """

    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, path: str | Path, encode: Callable[[Any], str] = to_json):
        self.path = str(path)
        self.encode = encode

    def setup(self):
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with AppendJsonLines._locks_guard:
            self._lock = AppendJsonLines._locks.setdefault(self.path, threading.Lock())

    def start_bundle(self):
        self._lines: list[str] = []

    def process(self, element):
        self._lines.append(self.encode(element))

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
