"""Stream validated records to <topic>.jsonl and/or <topic>.parquet, with bad lines injected."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runners.synthetic import badrecords
from schemas.codegen import arrow_schema
from schemas.registry import TOPICS
from schemas.serde import to_json, to_row

PARQUET_BATCH = 20_000


class TopicWriter:
    """Builds every record as its pydantic model (validation), then writes it.

    Bad lines go only to JSONL: Parquet is typed, so it holds the valid rows alone.
    """

    def __init__(self, out_dir: Path, topic: str, fmt: str, n_valid: int, rng: np.random.Generator):
        self.topic, self.model = topic, TOPICS[topic]
        self.jsonl: IO[str] | None = None
        self.parquet: pq.ParquetWriter | None = None
        self.rows: list[dict] = []
        self.bad_plan: dict[int, list[str]] = {}
        self.bad_lines: list[tuple[int, str]] = []  # (1-based line number, reason)
        self.reject_plan: set[int] = set()
        self.reject_queue: list[str] = []  # reasons waiting for a template of the right source
        self.reject_lines: list[tuple[int, str]] = []
        self.n_valid = self.n_lines = 0
        if fmt in ("jsonl", "both"):
            self.jsonl = open(out_dir / f"{topic}.jsonl", "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self.bad_plan = badrecords.plan(topic, n_valid, rng)
            if topic == "market.prices.v1":
                self.reject_plan = set(badrecords.plan_rejects(n_valid, rng))
        if fmt in ("parquet", "both"):
            self.schema = arrow_schema(self.model)
            self.parquet = pq.ParquetWriter(out_dir / f"{topic}.parquet", self.schema)

    def write(self, fields: dict) -> None:
        fields.pop("_sort", None)
        record = self.model(**fields)
        if self.jsonl is not None:
            line = to_json(record)
            self.jsonl.write(line + "\n")
            self.n_lines += 1
            for reason in self.bad_plan.get(self.n_valid, ()):
                self.jsonl.write(
                    badrecords.corrupt(self.topic, line, reason, len(self.bad_lines)) + "\n"
                )
                self.n_lines += 1
                self.bad_lines.append((self.n_lines, reason))
            if self.n_valid in self.reject_plan:
                self._write_reject(record, line)
        if self.parquet is not None:
            self.rows.append(to_row(record))
            if len(self.rows) >= PARQUET_BATCH:
                self._flush()
        self.n_valid += 1

    def _write_reject(self, record, line: str) -> None:
        # Cycle through every reason; a reason that does not fit this source waits for the next.
        if not self.reject_queue:
            self.reject_queue = sorted({r for rs in badrecords.REJECT_REASONS.values() for r in rs})
        fits = badrecords.REJECT_REASONS[record.source]
        reason = next((r for r in self.reject_queue if r in fits), None)
        if reason is None:
            return
        self.reject_queue.remove(reason)
        assert self.jsonl is not None
        self.jsonl.write(badrecords.reject_update(line, reason, len(self.reject_lines)) + "\n")
        self.n_lines += 1
        self.reject_lines.append((self.n_lines, reason))

    def reject_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, reason in self.reject_lines:
            counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    def _flush(self) -> None:
        if self.rows and self.parquet is not None:
            self.parquet.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.parquet is not None:
            self._flush()
            self.parquet.close()

    def bad_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, reason in self.bad_lines:
            counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def n_written(self) -> int:
        return self.n_lines if self.jsonl is not None else self.n_valid


def write_topic(
    out_dir: Path, topic: str, fmt: str, records: list[dict], rng: np.random.Generator
) -> TopicWriter:
    w = TopicWriter(out_dir, topic, fmt, len(records), rng)
    try:
        for r in records:
            w.write(r)
    finally:
        w.close()
    return w
