"""The backfill's chunk graph: a chunk of consecutive days as one Beam pipeline (built, not run).

1. ``ComposeDays``: each day element reads its price partition (and the previous day's, for the
   composite's carry-over state), applies the validation and composite rules on arrays
   (``transforms.prices.batch.compose_day``), writes the day's ``prices`` and emits its closes
   and dead letters;
2. ``ComputeVaR``: each shard of accounts (``shard_of(account)``, as the streaming ``ComputeVaR``
   keys them) advances ``VarShardEngine`` day by day with that day's settlements and the closes,
   taking its results as columns; the state at the end of the chunk is saved, so the next chunk
   (or a resumed run) continues from it;
3. ``WriteVarDays``: the shards' rows of each day are gathered and written as one partition;
4. ``MonitorMargins``: each margin shard replays its accounts' settlements and the day's
   composite prices through ``MarginShardEngine``; its ``margin_health`` and ``margin_events``
   rows are gathered and written per day, like VaR's.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from runners.backfill.config import BackfillConfig
from runners.backfill.files import (
    PRICES,
    SCRATCH,
    SETTLEMENTS,
    BackfillError,
    CorruptFile,
    load_state,
    read_day,
    save_state,
    state_path,
    table_file,
    write_atomic,
)
from transforms.common.columns import settlements_of
from transforms.common.dead_letter import make_dead_letter
from transforms.common.keys import shard_of
from transforms.margin.batch import margin_day, price_ticks
from transforms.margin.engine import MarginShardEngine
from transforms.prices.batch import DEAD_LETTER_SCHEMA, compose_day
from transforms.prices.oracles import load_registry
from transforms.var.batch import var_day, var_table
from transforms.var.engine import VarShardEngine

LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ DoFns
class ComposeDayFn(beam.DoFn):
    """A day of price updates -> its prices partition (when in range), closes, dead letters."""

    def __init__(self, cfg: BackfillConfig, write_from: date):
        self.cfg, self.write_from = cfg, write_from

    def setup(self):
        self.registry = load_registry(self.cfg.registry_path())

    def process(self, day: date):
        today = read_day(self.cfg.input_dir, PRICES, day)
        if today is None:
            raise BackfillError(f"no price partition for {day} under {self.cfg.input_dir}")
        yesterday = read_day(self.cfg.input_dir, PRICES, day - timedelta(days=1))
        rows, closes, dead = compose_day(
            today, yesterday, day, self.registry, self.cfg.window_s, None, self.cfg.min_sources
        )
        beam.metrics.Metrics.counter("backfill", "price_updates").inc(today.num_rows)
        if day >= self.write_from:
            write_atomic(rows, self.cfg.output_dir, "prices", day)
            yield beam.pvalue.TaggedOutput("dead", (day.isoformat(), dead))
        else:  # a warm-up day: kept aside for the margin replay, not part of the output
            write_atomic(rows, Path(self.cfg.output_dir) / SCRATCH, "prices", day)
        yield day.isoformat(), closes


class ShardDaysFn(beam.DoFn):
    """Base of the per-shard replays: an engine restored from the previous chunk's state (or
    new), the shard's settlements of each day, and the state saved at the chunk's end."""

    kind = ""  # state file prefix

    def __init__(
        self, cfg: BackfillConfig, fingerprint: str, days: list[date], resume_from: date | None
    ):
        # The driver's fingerprint: computing it here would read (for gs:// inputs, download)
        # the feed registry again in every worker.
        self.cfg, self.fingerprint = cfg, fingerprint
        self.days, self.resume_from = days, resume_from

    def restore(self, shard: int, new_engine: Callable[[], object]):
        """The engine after ``resume_from`` (None: a new one, the replay starts at the first
        input day). The driver resumes only from state it has verified; state that is missing
        or does not match its checksum here stops the chunk rather than continuing from a new
        (wrong) engine."""
        if self.resume_from is None:
            return new_engine()
        path = state_path(self.cfg.output_dir, self.fingerprint, self.resume_from, shard, self.kind)
        try:
            return pickle.loads(load_state(path))
        except (CorruptFile, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
            raise BackfillError(
                f"cannot resume from {path}: {e} (a rerun replays from intact state)"
            ) from e

    def save(self, shard: int, engine) -> None:
        path = state_path(self.cfg.output_dir, self.fingerprint, self.days[-1], shard, self.kind)
        save_state(pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL), path)

    def settlements(self, day: date, shard: int, shards: int) -> list:
        table = read_day(self.cfg.input_dir, SETTLEMENTS, day)
        if table is None or not table.num_rows:
            return []
        keep = [shard_of(a, shards) == shard for a in table["account_id"].to_pylist()]
        valid, invalid = settlements_of(table.filter(pa.array(keep)))
        if invalid:  # counted per stage and logged with the first error, never a crash
            beam.metrics.Metrics.counter("backfill", f"{self.kind}_invalid_settlements").inc(
                len(invalid)
            )
            LOG.warning(
                "%s: %d settlements the contract refuses skipped by %s shard %d, e.g. %s",
                day, len(invalid), self.kind, shard, invalid[0][1],
            )  # fmt: skip
        return valid


class VarShardDaysFn(ShardDaysFn):
    """One shard of accounts through the chunk's days: VaR columns per day, state saved."""

    kind = "var"

    def process(self, shard: int, closes: dict):
        cfg = self.cfg
        engine = self.restore(shard, lambda: VarShardEngine(cfg.var_config()))
        for day in self.days:
            settlements = self.settlements(day, shard, cfg.var_shards)
            beam.metrics.Metrics.counter("backfill", "settlements").inc(len(settlements))
            cols, rejected = var_day(engine, settlements, closes.get(day.isoformat(), {}), day)
            beam.metrics.Metrics.counter("backfill", "refused_settlements").inc(len(rejected))
            if day >= cfg.start:
                yield day.isoformat(), var_table(cols, cfg.var_config())
        self.save(shard, engine)


_TICKS: dict[tuple[str, date], list] = {}


def day_ticks(cfg: BackfillConfig, day: date) -> list:
    """The day's composite prices as margin ticks, built once per worker process and day (every
    margin shard of the process replays the same instants)."""

    key = (cfg.output_dir, day)
    if key not in _TICKS:
        _TICKS.clear()  # one day at a time: bounded memory
        root = cfg.output_dir if day >= cfg.start else Path(cfg.output_dir) / SCRATCH
        table = pq.read_table(table_file(root, "prices", day))
        _TICKS[key] = price_ticks(table)
    return _TICKS[key]


class MarginShardDaysFn(ShardDaysFn):
    """One shard of accounts through the chunk's days with the streaming margin engine."""

    kind = "margin"

    def process(self, shard: int, _ready):
        cfg = self.cfg
        engine = self.restore(shard, lambda: MarginShardEngine(cfg.margin_config(), dict_rows=True))
        for day in self.days:
            settlements = self.settlements(day, shard, cfg.margin_shards)
            health, events, rejected = margin_day(engine, settlements, day_ticks(cfg, day), day)
            beam.metrics.Metrics.counter("backfill", "margin_refused").inc(len(rejected))
            if day >= cfg.start:
                yield beam.pvalue.TaggedOutput("events", (day.isoformat(), events))
                yield day.isoformat(), health
        self.save(shard, engine)


class WriteDayFn(beam.DoFn):
    def __init__(self, output_dir: str, table: str, sort_by: tuple[str, ...]):
        self.output_dir, self.table, self.sort_by = output_dir, table, sort_by

    def process(self, element):
        day, parts = date.fromisoformat(element[0]), element[1]
        table = pa.concat_tables(list(parts))
        if table.num_rows:
            table = table.sort_by([(c, "ascending") for c in self.sort_by])
        write_atomic(table, self.output_dir, self.table, day)
        yield day, self.table, table.num_rows


def dead_letter_table(day: date, dead: list[dict]):
    from datetime import UTC, datetime

    rows = []
    for d in dead:
        row = make_dead_letter(
            source=PRICES,
            stage=d["stage"],
            reason=d["reason"],
            error=d["error"],
            raw=d.get("raw") or json.dumps({"event_id": d["event_id"]}),
            event_time=datetime.fromtimestamp(d["event_time_us"] / 1e6, tz=UTC),
        )
        rows.append(row.model_dump())
    return pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)


class WriteDeadLettersFn(beam.DoFn):
    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, element):
        day, dead = date.fromisoformat(element[0]), element[1]
        table = dead_letter_table(day, dead)
        write_atomic(table, self.output_dir, "dead_letter", day)
        yield day, "dead_letter", table.num_rows


def build_chunk(
    p: beam.Pipeline,
    cfg: BackfillConfig,
    fingerprint: str,
    days: list[date],
    resume_from: date | None,
) -> None:
    """The chunk's steps on ``p``: every output is written by the DoFns, nothing is returned."""
    composed = (
        p
        | "Days" >> beam.Create(days)
        | "ComposeDays"
        >> beam.ParDo(ComposeDayFn(cfg, cfg.start)).with_outputs("dead", main="closes")
    )
    closes = beam.pvalue.AsDict(composed.closes)
    var_days = (
        p
        | "Shards" >> beam.Create(list(range(cfg.var_shards)))
        | "ComputeVaR" >> beam.ParDo(VarShardDaysFn(cfg, fingerprint, days, resume_from), closes)
        | "GroupVarByDay" >> beam.GroupByKey()
        | "WriteVarDays"
        >> beam.ParDo(WriteDayFn(cfg.output_dir, "portfolio_var", ("account_id", "method")))
    )
    margin = (
        p
        | "MarginShards" >> beam.Create(list(range(cfg.margin_shards)))
        | "MonitorMargins"
        >> beam.ParDo(MarginShardDaysFn(cfg, fingerprint, days, resume_from), closes).with_outputs(
            "events", main="health"
        )
    )
    _ = (
        margin.health
        | "GroupHealthByDay" >> beam.GroupByKey()
        | "WriteHealthDays"
        >> beam.ParDo(
            WriteDayFn(cfg.output_dir, "margin_health", ("account_id", "event_ts", "row_id"))
        )
    )
    _ = (
        margin.events
        | "GroupEventsByDay" >> beam.GroupByKey()
        | "WriteEventDays"
        >> beam.ParDo(
            WriteDayFn(cfg.output_dir, "margin_events", ("account_id", "event_ts", "alert_id"))
        )
    )
    _ = composed.dead | "WriteDeadLetters" >> beam.ParDo(WriteDeadLettersFn(cfg.output_dir))
    _ = var_days
