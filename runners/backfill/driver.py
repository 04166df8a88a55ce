"""``defi-risk backfill``: years of history through the streaming path's rules, a day at a time.

    defi-risk generate --history --out data/history --start 2024-01-01 --days 730 --assets 20 \\
        --accounts 10000
    defi-risk backfill --start 2024-01-01 --end 2025-12-31 --input data/history --output out/bf
    defi-risk backfill --start 2024-01-01 --end 2025-12-31 --input gs://bucket/history \\
        --output bq://my-project.risk --staging-dir /data/bf-staging

The driver: days are processed in chunks (``--chunk-days``) of consecutive days, one Beam
pipeline per chunk (``graph.build_chunk``) on the local runner (``--workers`` processes). A
chunk's markers are removed before it runs; when its pipeline has finished (and, for a bq://
output, ``bigquery.BigQueryPublisher`` has published it), each of its days gets a marker
(``files.write_marker``) naming its partitions with their rows and sizes. A rerun skips the days
whose marker (same fingerprint and destination) still agrees with their partitions
(``files.scan_days``); the others are recomputed, and those that had a marker are reported as
repaired, with the reason. A killed run resumes at the first day not done, from the latest intact
engine state before it. Days before ``--start`` that the input holds are replayed without being
written: positions need every settlement since the first, and VaR needs the window of closes
before the start.
``runners/backfill/README.md`` has the whole story: layout, resume, BigQuery, figures.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta

import apache_beam as beam

from runners.backfill.bigquery import BigQueryPublisher, is_bigquery_uri, parse_bq_uri
from runners.backfill.config import BackfillConfig
from runners.backfill.files import (
    TABLES,
    BackfillError,
    CorruptFile,
    day_events,
    describe_day,
    input_days,
    marker_path,
    one_line,
    scan_days,
    state_days,
    state_path,
    verify_state,
    write_marker,
)
from runners.backfill.graph import build_chunk
from runners.direct import local_pipeline_options

LOG = logging.getLogger(__name__)


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
) -> dict[date, dict[str, dict]]:
    """One Beam pipeline over consecutive days; returns {day: {table: {path, rows, bytes}}}
    for the days it wrote, what their markers record."""
    opts = local_pipeline_options(num_workers=cfg.workers)
    out_days = [d for d in days if d >= cfg.start]
    # The markers of the days about to be rewritten go first: a run killed (or failing) half-way
    # through leaves them not done, never marked done over files of another run.
    for d in out_days:
        marker_path(cfg.output_dir, d).unlink(missing_ok=True)
    with beam.Pipeline(options=opts) as p:
        build_chunk(p, cfg, fingerprint, days, resume_from)
    # Rows per table-day, from the files just written (the counters of multi-process runs do
    # not come back reliably; the files are the truth).
    return {d: describe_day(cfg.output_dir, d) for d in out_days}


def state_problem(cfg: BackfillConfig, fingerprint: str, day: date) -> str | None:
    """Why the engines' state after ``day`` cannot be resumed from (None: every shard's file is
    there and matches its checksum). Each bad file is logged as a warning."""
    shards = [("var", s) for s in range(cfg.var_shards)]
    shards += [("margin", s) for s in range(cfg.margin_shards)]
    for kind, shard in shards:
        path = state_path(cfg.output_dir, fingerprint, day, shard, kind)
        try:
            verify_state(path)
        except CorruptFile as e:
            LOG.warning("backfill: ignoring resume state %s: %s", path, one_line(e))
            return f"{path.name}: {one_line(e)}"
    return None


def resume_point(cfg: BackfillConfig, fingerprint: str, first: date, earliest: date) -> date | None:
    """The latest day before ``first`` whose engine state is intact for every shard, or None
    (replay from the first input day).

    State is saved at the end of each chunk, and the state after day D is the state after D-1
    advanced by D's events: resuming from an older intact state and replaying the days since
    gives the same engines, so a missing, truncated or altered state file only costs a replay
    from the chunk end before it (or from the first input day). Continuing from a state that
    does not match its checksum, or from a new engine in the middle of the history, would give
    wrong rows without any error, so it is never done."""
    for day in reversed(state_days(cfg.output_dir, fingerprint)):
        if earliest <= day < first and state_problem(cfg, fingerprint, day) is None:
            return day
    return None


MAX_REPAIR_LINES = 20


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
    done, repairs = set(), {}
    if not cfg.force:
        done, repairs = scan_days(cfg.output_dir, fp, wanted, destination)
    pending = [d for d in wanted if d not in done]
    summary = {"days": len(wanted), "skipped": len(wanted) - len(pending), "written": 0,
               "rows": dict.fromkeys(TABLES, 0), "fingerprint": fp,
               "repaired": {d.isoformat(): r for d, r in sorted(repairs.items())}}  # fmt: skip
    for d, reason in sorted(repairs.items())[:MAX_REPAIR_LINES]:
        say(f"{d}: {reason}; recomputing")
    if len(repairs) > MAX_REPAIR_LINES:
        say(f"... and {len(repairs) - MAX_REPAIR_LINES} more day(s) to repair (summary: repaired)")
    if not pending:
        say(f"all {len(wanted)} days are done (fingerprint {fp}); --force recomputes them")
        return summary
    if publisher is not None:
        publisher.check_targets()  # before hours of computing
    # Replay from the latest intact engine state before the first day to write (else from the
    # first input day), up to the last day to write: done days after it are left alone, done
    # days on the way are written again (identically) and marked again.
    resume = resume_point(cfg, fp, pending[0], available[0])
    todo = [d for d in available if (resume is None or d > resume) and d <= pending[-1]]
    progress = Progress(total_days=len(wanted), done_days=len(wanted) - len(pending))
    say(
        f"backfill {cfg.start}..{cfg.end}: {len(pending)} day(s) to write, "
        f"{summary['skipped']} already done; replaying from {todo[0]}"
        + (f" (engine state of {resume})" if resume is not None else "")
    )
    for chunk in chunks(todo, cfg.chunk_days):
        written = run_chunk(cfg, fp, chunk, resume)
        resume = chunk[-1]
        if publisher is not None and written:
            # Published before the markers: a crash in between redoes the chunk, harmlessly.
            published = publisher.publish(cfg.output_dir, sorted(written))
            check_published(published, written)
        for d, files in sorted(written.items()):
            write_marker(cfg.output_dir, d, fp, files, destination)
            for t, f in files.items():
                summary["rows"][t] = summary["rows"].get(t, 0) + f["rows"]
            summary["written"] += 1
            progress.done_days += 1 if d in pending else 0
        progress.events += sum(day_events(cfg.input_dir, d) for d in chunk)
        say(progress.bar() if say is terminal_say else progress.line())
    if publisher is not None:
        summary["bigquery"] = publisher.summary()
    summary["seconds"] = round(time.perf_counter() - progress.started, 2)
    return summary


def check_published(published: dict[str, int], written: dict[date, dict[str, dict]]) -> None:
    """The rows the publisher committed per table are the rows the markers will record (the
    part of "published" that can be checked without asking BigQuery)."""
    for table in TABLES:
        local = sum(files[table]["rows"] for files in written.values())
        if published.get(table, 0) != local:
            days = f"{min(written)}..{max(written)}"
            raise BackfillError(
                f"{table}: {published.get(table, 0)} row(s) published for {days}, but the day "
                f"files hold {local}; no marker written, a rerun publishes the days again"
            )


def output_of(args) -> tuple[str, object | None]:
    """(local output directory, BigQuery target or None) of ``--output``/``--staging-dir``."""
    import re

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
