"""``defi-risk backfill``: years of history through the streaming path's rules, a day at a time.

    defi-risk generate --history --out data/history --start 2024-01-01 --days 730 --assets 20 \\
        --accounts 10000
    defi-risk backfill --start 2024-01-01 --end 2025-12-31 --input data/history --output out/bf
    defi-risk backfill --start 2024-01-01 --end 2025-12-31 --input gs://bucket/history \\
        --output bq://my-project.risk --staging-dir /data/bf-staging

Input: the day-partitioned Parquet of ``defi-risk generate --history`` (or the same layout on
GCS): ``<topic>/date=YYYY-MM-DD/part-*.parquet`` for ``market.prices.v1`` and ``settlements.v1``,
and ``feeds.toml`` (the feed registry of its assets; ``--feed-registry`` overrides it).

Output, per table and day: ``OUTPUT/<table>/date=YYYY-MM-DD/part-00000.parquet`` (``prices``,
``portfolio_var``, ``margin_health``, ``margin_events``, ``dead_letter``), each replaced
atomically (written to a temporary name, then ``os.replace``): re-running a day replaces it,
never duplicates it.

``--output bq://PROJECT.DATASET``: the same files are written to ``--staging-dir`` (required; it
also holds the markers and the resume state), and after each chunk's pipeline
``pipelines.backfill_bigquery`` publishes the chunk: one load job per table into an expiring
staging table, then one transaction that deletes the chunk's scope from each target table and
inserts the staging rows, then the staging tables are dropped. Target tables must exist
(``sql/ddl``, Terraform); see that module for the scope of a day in each table.

How it runs: days are processed in chunks (``--chunk-days``) of consecutive days, one Beam
pipeline per chunk on the local runner (``--workers`` processes):
1. ``ComposeDays``: each day element reads its price partition (and the previous day's, for the
   composite's carry-over state), applies the validation and composite rules on arrays
   (``transforms.backfill_batches.compose_day``), writes the day's ``prices`` and emits its
   closes and dead letters;
2. ``ComputeVaR``: each shard of accounts (``shard_of(account)``, as the streaming ``ComputeVaR``
   keys them) advances ``VarShardEngine`` day by day with that day's settlements and the closes,
   taking its results as columns; the state at the end of the chunk is saved, so the next chunk
   (or a resumed run) continues from it;
3. ``WriteVarDays``: the shards' rows of each day are gathered and written as one partition;
4. ``MonitorMargins``: each margin shard replays its accounts' settlements and the day's
   composite prices through ``MarginShardEngine``; its ``margin_health`` and ``margin_events``
   rows are gathered and written per day, like VaR's.
When a chunk's pipeline has finished (and, for a bq:// output, the chunk is published), each of
its days gets a marker ``OUTPUT/_backfill/days/<day>.json`` (row counts, the configuration
fingerprint, the bq:// destination). A rerun skips marked days with the same fingerprint and
destination, so a killed run resumes at the first unmarked day; a run with another configuration
(another VaR window, say) recomputes everything it covers.

Days before ``--start`` that the input holds are replayed without being written: positions need
every settlement since the first, and VaR needs the window of closes before the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.synthetic.bulk import write_bytes_atomic, write_parquet_atomic
from runners.direct import local_pipeline_options
from transforms.var import shard_of
from transforms.var_engine import VarConfig, VarShardEngine

LOG = logging.getLogger(__name__)
PRICES, SETTLEMENTS = "market.prices.v1", "settlements.v1"
TABLES = ("prices", "portfolio_var", "margin_health", "margin_events", "dead_letter")
SCRATCH = "_backfill/scratch"  # composite prices of warm-up days: read by the margin replay
STATE_DIR = "_backfill"
# Part of every fingerprint: raise it when the rows or the pickled engine state change, so that a
# newer version recomputes old days and never resumes from state it cannot read.
CODE_VERSION = 2


class BackfillError(ValueError):
    pass


@dataclass(frozen=True)
class BackfillConfig:
    start: date
    end: date
    input_dir: str
    output_dir: str
    feed_registry: str | None = None
    workers: int = 2
    chunk_days: int = 61
    var_shards: int = 4
    var_methods: tuple[str, ...] = ("historical", "parametric")
    var_level: float = 0.99
    es_level: float = 0.975
    var_window: int = 250
    var_min_scenarios: int = 30
    window_s: int = 60
    min_sources: int = 2
    # Margin rows of an account do not depend on which accounts share its shard (unlike VaR's
    # joint window), so the shards only spread the work: one per worker. Every shard replays
    # every price instant, so more shards cost more.
    margin_shards: int = 2
    margin_interval_s: int = 86_400  # margin_health snapshots of every account with debt
    force: bool = False

    def margin_config(self):
        from transforms.margin_engine import MarginConfig

        return MarginConfig(snapshot_s=self.margin_interval_s)

    def var_config(self) -> VarConfig:
        return VarConfig(
            methods=self.var_methods,
            level=self.var_level,
            es_level=self.es_level,
            horizon_days=1,
            window=self.var_window,
            min_scenarios=self.var_min_scenarios,
            bucket_s=86_400,
        )

    def fingerprint(self) -> str:
        """What the numbers depend on (not where they go, nor how many workers)."""
        keys = ("var_shards", "var_methods", "var_level", "es_level", "var_window",
                "var_min_scenarios", "window_s", "min_sources", "margin_shards",
                "margin_interval_s")  # fmt: skip
        data = {k: getattr(self, k) for k in keys}
        data["code"] = CODE_VERSION
        data["registry"] = hashlib.sha256(Path(self.registry_path()).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def registry_path(self) -> str:
        """The feed registry: --feed-registry, else the input's feeds.toml (copied next to the
        output when the input is remote), else the bundled one."""
        if self.feed_registry:
            return self.feed_registry
        filesystem, base = input_fs(self.input_dir)
        from pyarrow import fs

        if filesystem.get_file_info(f"{base}/feeds.toml").type == fs.FileType.File:
            if isinstance(filesystem, fs.LocalFileSystem):
                return f"{base}/feeds.toml"
            local = Path(self.output_dir) / STATE_DIR / "feeds.toml"
            local.parent.mkdir(parents=True, exist_ok=True)
            with filesystem.open_input_stream(f"{base}/feeds.toml") as src:
                local.write_bytes(src.read())
            return str(local)
        from transforms.oracles import DEFAULT_REGISTRY

        return str(DEFAULT_REGISTRY)


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


# ------------------------------------------------------------------------------------ DoFns
class ComposeDayFn(beam.DoFn):
    """A day of price updates -> its prices partition (when in range), closes, dead letters."""

    def __init__(self, cfg: BackfillConfig, write_from: date):
        self.cfg, self.write_from = cfg, write_from

    def setup(self):
        from transforms.oracles import load_registry

        self.registry = load_registry(self.cfg.registry_path())

    def process(self, day: date):
        from transforms.backfill_batches import compose_day

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
        if self.resume_from is not None:
            path = state_path(
                self.cfg.output_dir, self.fingerprint, self.resume_from, shard, self.kind
            )
            if path.exists():
                return pickle.loads(path.read_bytes())
        return new_engine()

    def save(self, shard: int, engine) -> None:
        path = state_path(self.cfg.output_dir, self.fingerprint, self.days[-1], shard, self.kind)
        write_bytes_atomic(pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL), path)

    def settlements(self, day: date, shard: int, shards: int) -> list:
        from transforms.backfill_batches import settlements_of

        table = read_day(self.cfg.input_dir, SETTLEMENTS, day)
        if table is None or not table.num_rows:
            return []
        keep = [shard_of(a, shards) == shard for a in table["account_id"].to_pylist()]
        return settlements_of(table.filter(pa.array(keep)))


class VarShardDaysFn(ShardDaysFn):
    """One shard of accounts through the chunk's days: VaR columns per day, state saved."""

    kind = "var"

    def process(self, shard: int, closes: dict):
        from transforms.backfill_batches import var_day, var_table

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
    from transforms.backfill_batches import price_ticks

    key = (cfg.output_dir, day)
    if key not in _TICKS:
        _TICKS.clear()  # one day at a time: bounded memory
        root = cfg.output_dir if day >= cfg.start else Path(cfg.output_dir) / SCRATCH
        table = pq.read_table(partition(root, "prices", day) / "part-00000.parquet")
        _TICKS[key] = price_ticks(table)
    return _TICKS[key]


class MarginShardDaysFn(ShardDaysFn):
    """One shard of accounts through the chunk's days with the streaming margin engine."""

    kind = "margin"

    def process(self, shard: int, _ready):
        from transforms.backfill_batches import margin_day
        from transforms.margin_engine import MarginShardEngine

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

    from transforms.backfill_batches import DEAD_LETTER_SCHEMA
    from transforms.dead_letter import make_dead_letter

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


# ------------------------------------------------------------------------------------ driver
@dataclass
class Progress:
    total_days: int
    done_days: int = 0
    events: int = 0
    started: float = field(default_factory=time.perf_counter)

    def bar(self, width: int = 30) -> str:
        """The progress line as a bar, for a terminal."""
        filled = int(width * self.done_days / self.total_days) if self.total_days else width
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.line()}"

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.events / elapsed if elapsed else 0.0
        left = self.total_days - self.done_days
        eta = elapsed / self.done_days * left if self.done_days else float("nan")
        return (
            f"{self.done_days}/{self.total_days} days, {self.events:,} events, "
            f"{rate:,.0f} events/s, elapsed {elapsed:,.0f} s, ETA {eta:,.0f} s"
        )


def chunks(days: list[date], size: int) -> Iterator[list[date]]:
    for i in range(0, len(days), size):
        yield days[i : i + size]


def run_chunk(
    cfg: BackfillConfig, fingerprint: str, days: list[date], resume_from: date | None
) -> dict:
    """One Beam pipeline over consecutive days; returns {day: {table: rows}} and counters."""
    opts = local_pipeline_options(num_workers=cfg.workers)
    written: dict[date, dict[str, int]] = {d: {} for d in days if d >= cfg.start}
    with beam.Pipeline(options=opts) as p:
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
            | "ComputeVaR"
            >> beam.ParDo(VarShardDaysFn(cfg, fingerprint, days, resume_from), closes)
            | "GroupVarByDay" >> beam.GroupByKey()
            | "WriteVarDays"
            >> beam.ParDo(WriteDayFn(cfg.output_dir, "portfolio_var", ("account_id", "method")))
        )
        margin = (
            p
            | "MarginShards" >> beam.Create(list(range(cfg.margin_shards)))
            | "MonitorMargins"
            >> beam.ParDo(
                MarginShardDaysFn(cfg, fingerprint, days, resume_from), closes
            ).with_outputs("events", main="health")
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
    # Rows per table-day, from the files just written (the counters of multi-process runs do
    # not come back reliably; the files are the truth).
    for d, counts in written.items():
        for table in TABLES:
            part = partition(cfg.output_dir, table, d) / "part-00000.parquet"
            if not part.exists():
                raise BackfillError(f"{table} for {d} was not written")
            counts[table] = pq.ParquetFile(part).metadata.num_rows
    return written


_ON_BAR = {"open": False}  # a bar is drawn and its line not yet ended


def terminal_say(message: str) -> None:
    """On a terminal: the progress bar redraws one line; other messages get their own line."""
    if message.startswith("["):
        sys.stderr.write("\r" + message)
        _ON_BAR["open"] = True
    else:
        sys.stderr.write(("\n" if _ON_BAR["open"] else "") + message + "\n")
        _ON_BAR["open"] = False
    sys.stderr.flush()


def backfill(cfg: BackfillConfig, say: Callable[[str], None] = print, publisher=None) -> dict:
    """Runs the backfill; returns a summary (days written, skipped, rows per table, seconds).

    ``publisher`` (``backfill_bigquery.BigQueryPublisher``): ``cfg.output_dir`` is then the
    staging directory, and each chunk's days are published before their markers are written.
    """
    if cfg.end < cfg.start:
        raise BackfillError(f"--end {cfg.end} is before --start {cfg.start}")
    available = input_days(cfg.input_dir)
    wanted = [cfg.start + timedelta(days=i) for i in range((cfg.end - cfg.start).days + 1)]
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise BackfillError(
            f"the input has no prices for {len(missing)} day(s) of the range, e.g. {missing[0]}"
        )
    fp = cfg.fingerprint()
    destination = publisher.destination if publisher is not None else None
    done = set() if cfg.force else done_days(cfg.output_dir, fp, destination)
    pending = [d for d in wanted if d not in done]
    summary = {"days": len(wanted), "skipped": len(wanted) - len(pending), "written": 0,
               "rows": dict.fromkeys(TABLES, 0), "fingerprint": fp}  # fmt: skip
    if not pending:
        say(f"all {len(wanted)} days are done (fingerprint {fp}); --force recomputes them")
        return summary
    if publisher is not None:
        publisher.check_targets()  # before hours of computing
    first = pending[0]
    # Resume from saved state when the day before the first pending one has it.
    prev = first - timedelta(days=1)
    has_state = all(
        state_path(cfg.output_dir, fp, prev, s).exists() for s in range(cfg.var_shards)
    ) and all(
        state_path(cfg.output_dir, fp, prev, s, "margin").exists() for s in range(cfg.margin_shards)
    )
    warm_from = first if has_state else available[0]
    todo = [d for d in available if warm_from <= d <= cfg.end]
    progress = Progress(total_days=len(wanted), done_days=len(wanted) - len(pending))
    say(
        f"backfill {cfg.start}..{cfg.end}: {len(pending)} day(s) to write, "
        f"{summary['skipped']} already done; replaying from {warm_from}"
    )
    resume = prev if has_state else None
    for chunk in chunks(todo, cfg.chunk_days):
        written = run_chunk(cfg, fp, chunk, resume)
        resume = chunk[-1]
        if publisher is not None and written:
            # Published before the markers: a crash in between redoes the chunk, harmlessly.
            publisher.publish(cfg.output_dir, sorted(written))
        for d, counts in sorted(written.items()):
            marker = marker_path(cfg.output_dir, d)
            marker.parent.mkdir(parents=True, exist_ok=True)
            content = {"fingerprint": fp, "rows": counts}
            if destination is not None:
                content["destination"] = destination
            marker.write_text(json.dumps(content, sort_keys=True))
            for t, n in counts.items():
                summary["rows"][t] = summary["rows"].get(t, 0) + n
            summary["written"] += 1
            progress.done_days += 1 if d in pending else 0
        progress.events += sum(_events(cfg.input_dir, d) for d in chunk)
        say(progress.bar() if say is terminal_say else progress.line())
    if publisher is not None:
        summary["bigquery"] = publisher.summary()
    summary["seconds"] = round(time.perf_counter() - progress.started, 2)
    return summary


def _events(input_dir: str, day: date) -> int:
    n = 0
    for topic in (PRICES, SETTLEMENTS):
        filesystem, files = _day_files(input_dir, topic, day)
        for f in files:
            with filesystem.open_input_file(f) as handle:
                n += pq.ParquetFile(handle).metadata.num_rows
    return n


def output_of(args) -> tuple[str, object | None]:
    """(local output directory, BigQuery target or None) of ``--output``/``--staging-dir``."""
    import re

    from pipelines.backfill_bigquery import is_bigquery_uri, parse_bq_uri

    if is_bigquery_uri(args.output):
        target = parse_bq_uri(args.output)
        if not args.staging_dir:
            raise BackfillError(
                "bq:// output needs --staging-dir DIR: the day files are written there first "
                "(with the day markers and the resume state), then loaded into BigQuery"
            )
        return args.staging_dir, target
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", args.output):
        raise BackfillError(
            f"--output {args.output}: a local directory or bq://PROJECT.DATASET (other URIs are "
            "not supported)"
        )
    if args.staging_dir:
        raise BackfillError("--staging-dir is only for a bq:// output")
    return args.output, None


def backfill_command(args, client=None) -> int:
    """``defi-risk backfill``; ``client`` replaces the BigQuery client (tests)."""
    try:
        output_dir, target = output_of(args)
    except BackfillError as e:
        print(f"defi-risk backfill: {e}", file=sys.stderr)
        return 2
    publisher = None
    if target is not None:
        from pipelines.backfill_bigquery import BigQueryPublisher

        publisher = BigQueryPublisher(target, client=client)
    cfg = BackfillConfig(
        start=date.fromisoformat(args.start),
        end=date.fromisoformat(args.end),
        input_dir=args.input,
        output_dir=output_dir,
        feed_registry=args.feed_registry,
        workers=args.workers,
        chunk_days=args.chunk_days,
        var_window=args.var_window,
        var_min_scenarios=args.var_min_scenarios,
        margin_interval_s=args.margin_interval_s,
        force=args.force,
    )
    try:
        # A bar redrawn in place on a terminal; one log line per chunk otherwise (CI, files).
        summary = backfill(
            cfg, say=terminal_say if sys.stderr.isatty() else print, publisher=publisher
        )
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    except BackfillError as e:
        print(f"defi-risk backfill: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, default=str))
    return 0


def add_backfill_arguments(p) -> None:
    p.add_argument("--start", required=True, help="First day to write (YYYY-MM-DD).")
    p.add_argument("--end", required=True, help="Last day to write (YYYY-MM-DD, inclusive).")
    p.add_argument(
        "--input",
        required=True,
        help="Day-partitioned input (generate --history): a directory or a URI (gs://…, file://…).",
    )
    p.add_argument(
        "--output",
        required=True,
        help="Output directory (<table>/date=D/), or bq://PROJECT.DATASET: the day files are "
        "written to --staging-dir, then each chunk of days replaces its rows in the dataset's "
        "tables (which must exist: sql/ddl, infra/terraform).",
    )
    p.add_argument(
        "--staging-dir",
        help="With a bq:// output (required there): the local directory of the day files, day "
        "markers and resume state.",
    )
    p.add_argument("--feed-registry", help="Feed registry (default: INPUT/feeds.toml).")
    p.add_argument("--workers", type=int, default=2, help="Local worker processes.")
    p.add_argument("--chunk-days", type=int, default=61, help="Days per pipeline run.")
    p.add_argument("--var-window", type=int, default=250, help="Daily returns per VaR.")
    p.add_argument("--var-min-scenarios", type=int, default=30, help="Fewer returns: no VaR.")
    p.add_argument(
        "--margin-interval-s",
        type=int,
        default=86_400,
        help="margin_health snapshot interval for every account with debt (rows also on every "
        "settlement and zone change).",
    )
    p.add_argument("--force", action="store_true", help="Recompute days already done.")
    p.set_defaults(func=backfill_command)


__all__ = ["BackfillConfig", "backfill", "asdict"]
