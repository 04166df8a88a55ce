"""``defi-risk backfill --output bq://PROJECT.DATASET``: the backfill's days published to BigQuery.

The local backfill writes its day files into the staging directory exactly as for a local output
(``STAGING/<table>/date=D/part-00000.parquet``, day markers and engine state under
``STAGING/_backfill/``). After each chunk's pipeline, and before the chunk's day markers are
written, ``BigQueryPublisher.publish`` puts the chunk's days into the target tables:

1. per table with rows, one load job of the chunk's day files (combined into one local Parquet
   file) into the staging table ``DATASET._backfill_<table>_<run id>``: ``WRITE_TRUNCATE``,
   Parquet with list inference (``prices.sources`` is ARRAY<STRING>,
   ``margin_health.liquidation_prices`` ARRAY<STRUCT>), the schema of
   ``schemas/bigquery/<table>.json``; the staging table expires after a day, so a crash leaves
   nothing permanent behind;
2. one script job, a transaction over every table::

       BEGIN TRANSACTION;
       DELETE FROM target WHERE <the chunk's scope>;
       INSERT INTO target (columns) SELECT columns FROM staging;
       ...
       COMMIT TRANSACTION;

   so a day published again replaces its rows and never duplicates them, atomically across the
   five tables (a failing statement rolls the whole transaction back);
3. the staging tables are dropped. Only then does the driver write the chunk's markers: a crash
   anywhere before redoes the chunk, and redoing it is harmless (the load truncates, the script
   deletes the chunk's scope before inserting).

A day counts as published when its marker names this destination and agrees with the staging
files it was published from (``files.scan_days``, as for a local output): the driver checks that
the rows ``publish`` returns per table are the rows the chunk's markers record, and a staging
file deleted, truncated or rewritten since makes a rerun recompute the day and publish it again
(which replaces it). What BigQuery holds is not checked: nothing offline can.

Scopes: the rows of a processed day D are not all stamped on day D. For a chunk of days
D1..Dn, with lo = D1 00:00 UTC and hi = (Dn + 1 day) 00:00 UTC (``chunk_scope_sql``):

- ``prices``: ``event_time`` in (lo, hi]: a day's composite windows end after its midnight and
  the last one ends at the next midnight (``compose_day``/``price_rows``);
- ``portfolio_var``: ``as_of`` in (lo, hi]: a day's VaR is stamped at the bucket end, the next
  midnight (``var_day``);
- ``margin_health``: ``event_ts`` in [lo, hi]. At the edge instants two days meet: a settlement
  stamped exactly at midnight (or a late one, applied at the start of its day) belongs to the day
  it opens, while the price tick and the snapshot at midnight belong to the day they close
  (``margin_day`` advances to the day's end inclusive). So rows at lo are in scope only with
  ``trigger = 'settlement'``, and rows at hi only with another trigger;
- ``margin_events``: ``event_ts`` in [lo, hi], the same edges, but an event row does not say what
  triggered it: at lo and hi only the rows whose ``alert_id`` the chunk inserts again are
  replaced (a stale event of a previous run stamped exactly at such a midnight, whose id the rerun
  no longer produces, is left behind);
- ``dead_letter``: partitioned by ``processing_time`` (the wall clock of whichever run wrote the
  row, 90-day expiry), which says nothing about the day: scoped by
  ``source = 'market.prices.v1'``, the backfill's stages (``ValidatePrices``, ``CompositePrices``;
  the stream writes dead letters of the same rejections under the same names, so the backfill's
  replace the stream's for the days it covers) and ``event_time`` (the rejected update's
  ``publish_time``) in [lo, hi), or the ``dead_letter_id`` of a row the chunk inserts again.

The four event-time tables get a constant range on their partitioning column as a top-level
``AND``, so BigQuery prunes the DELETE to the chunk's partitions (pruning needs a constant filter
on the partition column; the ``IN (SELECT ...)`` of the edges does not prune, which is why it
sits inside that range). Before loading, the chunk's rows are checked against the ranges
(``check_scope``): a row outside would survive the next rerun's DELETE and be duplicated.

Errors: target tables are never created (``sql/ddl`` and Terraform own them); ``check_targets``
refuses a missing dataset, table or column before any work. Transient errors (429, 500, 502, 503,
504, a rate limit, a transaction aborted by a concurrent update) are retried with exponential
backoff (``google.api_core.retry``; a failed job is submitted again as a new job), and counted;
permanent ones raise ``BackfillError`` with the job id and BigQuery's first error message.

IAM: ``roles/bigquery.jobUser`` on the project and ``roles/bigquery.dataEditor`` on the dataset.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runners.backfill.files import PRICES, STATE_DIR, TABLES, BackfillError, one_line, table_file
from schemas.codegen import SCHEMA_DIR, arrow_schema
from schemas.registry import TABLES as TABLE_MODELS

LOG = logging.getLogger(__name__)

SCHEME = "bq://"
# https://cloud.google.com/resource-manager/docs/creating-managing-projects: 6 to 30 lowercase
# letters, digits or hyphens, starting with a letter and not ending with a hyphen.
PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
# https://cloud.google.com/bigquery/docs/datasets#dataset-naming: letters, digits, underscores.
DATASET_ID = re.compile(r"[A-Za-z0-9_]{1,1024}")
# Stages whose dead letters the backfill writes (transforms.prices.batch.compose_day).
DEAD_LETTER_STAGES = ("ValidatePrices", "CompositePrices")
STAGING_PREFIX = "_backfill_"
STAGING_TTL = timedelta(days=1)
LABELS = {"app": "defi-risk", "job": "backfill"}


# ------------------------------------------------------------------------------ the URI
@dataclass(frozen=True)
class BigQueryTarget:
    project: str
    dataset: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.project}.{self.dataset}"

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def sql_name(self, table: str) -> str:
        return f"`{self.table_id(table)}`"


def is_bigquery_uri(text: str) -> bool:
    return text.lower().startswith(SCHEME)


def parse_bq_uri(uri: str) -> BigQueryTarget:
    """``bq://PROJECT.DATASET`` -> the target; anything else is a BackfillError saying why."""
    if not is_bigquery_uri(uri):
        raise BackfillError(f"{uri!r} is not a BigQuery output: write bq://PROJECT.DATASET")
    if not uri.startswith(SCHEME):
        raise BackfillError(f"{uri!r}: the scheme is bq:// in lower case")
    rest = uri[len(SCHEME) :]
    if not rest or any(c in rest for c in "/?#@ "):
        raise BackfillError(
            f"{uri!r}: expected bq://PROJECT.DATASET (no path, table, query or spaces)"
        )
    parts = rest.split(".")
    if ":" in rest:
        raise BackfillError(
            f"{uri!r}: domain-scoped projects (example.com:project) are not supported"
        )
    if len(parts) != 2 or not all(parts):
        hint = "a table is not part of it: " if len(parts) > 2 else ""
        raise BackfillError(f"{uri!r}: expected bq://PROJECT.DATASET ({hint}the tables are fixed)")
    project, dataset = parts
    if not PROJECT_ID.fullmatch(project):
        raise BackfillError(
            f"{uri!r}: {project!r} is not a project id (6 to 30 lowercase letters, digits or "
            "hyphens, starting with a letter, not ending with a hyphen)"
        )
    if not DATASET_ID.fullmatch(dataset):
        raise BackfillError(
            f"{uri!r}: {dataset!r} is not a dataset id (letters, digits and underscores, at "
            "most 1024)"
        )
    return BigQueryTarget(project, dataset)


# ------------------------------------------------------------------------------ schemas
def schema_json(table: str) -> list[dict]:
    """The one schema of a table: ``schemas/bigquery/<table>.json`` (generated from schemas/)."""
    return json.loads((SCHEMA_DIR / "bigquery" / f"{table}.json").read_text())


def columns(table: str) -> list[str]:
    return [f["name"] for f in schema_json(table)]


def _q(name: str) -> str:
    return f"`{name}`"


# ------------------------------------------------------------------------------- scopes
def day_bounds(days: list[date]) -> tuple[datetime, datetime]:
    """(lo, hi) of consecutive days: the first day's midnight, the midnight after the last."""
    days = sorted(days)
    if [(d - days[0]).days for d in days] != list(range(len(days))):
        raise BackfillError(f"a published chunk must be consecutive days, got {days}")
    lo = datetime.combine(days[0], time(0), tzinfo=UTC)
    return lo, datetime.combine(days[-1] + timedelta(days=1), time(0), tzinfo=UTC)


def ts_literal(t: datetime) -> str:
    return f"TIMESTAMP '{t.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00'"


# Event-time column and range of the four event-time tables: (column, lo included, hi included).
RANGES = {
    "prices": ("event_time", False, True),
    "portfolio_var": ("as_of", False, True),
    "margin_health": ("event_ts", True, True),
    "margin_events": ("event_ts", True, True),
}
ID_COLUMN = {"prices": "price_id", "portfolio_var": "var_id", "margin_health": "row_id",
             "margin_events": "alert_id", "dead_letter": "dead_letter_id"}  # fmt: skip


def chunk_scope_sql(table: str, days: list[date], staging: str | None) -> str:
    """The WHERE condition of the rows the chunk of ``days`` replaces in ``table``.

    ``staging`` is the staging table's SQL name (its ids resolve the edge instants), or None when
    the chunk has no row of the table.
    """
    lo_t, hi_t = day_bounds(days)
    lo, hi = ts_literal(lo_t), ts_literal(hi_t)
    ident = _q(ID_COLUMN[table])
    reinserted = f"{ident} IN (SELECT {ident} FROM {staging})" if staging else "FALSE"
    if table == "dead_letter":
        # No partition filter: dead_letter is partitioned by processing_time, the wall clock of
        # whichever run wrote a row, so the rows of a day can sit in any partition of the last
        # 90 days (its expiry). The source and stage filters use its clustering instead.
        stages = ", ".join(f"'{s}'" for s in DEAD_LETTER_STAGES)
        t = _q("event_time")
        return (
            f"{_q('source')} = '{PRICES}' AND {_q('stage')} IN ({stages}) "
            f"AND (({t} >= {lo} AND {t} < {hi}) OR {reinserted})"
        )
    column, lo_in, hi_in = RANGES[table]
    t = _q(column)
    # The constant range on the partitioning column, at the top level: BigQuery prunes to the
    # chunk's partitions only on constant filters of that column.
    pruned = f"{t} {'>=' if lo_in else '>'} {lo} AND {t} {'<=' if hi_in else '<'} {hi}"
    if table == "margin_health":
        # The edge instants: a settlement at midnight opens its day; a price tick or snapshot at
        # midnight closes the day before.
        trig = _q("trigger")
        return (
            f"{pruned} AND ({t} > {lo} OR {trig} = 'settlement') "
            f"AND ({t} < {hi} OR {trig} != 'settlement')"
        )
    if table == "margin_events":
        # An event row does not say what triggered it: at the edges, only the ids reinserted.
        return f"{pruned} AND (({t} > {lo} AND {t} < {hi}) OR {reinserted})"
    return pruned


def check_scope(table: str, rows: pa.Table, days: list[date]) -> None:
    """Every row of the chunk lies in the range its DELETE covers (else a rerun duplicates it)."""
    if table not in RANGES or rows.num_rows == 0:
        return
    lo, hi = day_bounds(days)
    column, lo_in, hi_in = RANGES[table]
    t = rows[column]
    lo_s, hi_s = pa.scalar(lo, t.type), pa.scalar(hi, t.type)
    bad = pc.or_(
        pc.less_equal(t, lo_s) if not lo_in else pc.less(t, lo_s),
        pc.greater(t, hi_s) if hi_in else pc.greater_equal(t, hi_s),
    )
    if table == "margin_health":
        settlement = pc.equal(rows["trigger"], "settlement")
        bad = pc.or_(bad, pc.and_(pc.equal(t, lo_s), pc.invert(settlement)))
        bad = pc.or_(bad, pc.and_(pc.equal(t, hi_s), settlement))
    n = pc.sum(pc.cast(bad, pa.int64())).as_py() or 0
    if n:
        first = rows.filter(bad).slice(0, 1).to_pylist()[0]
        raise BackfillError(
            f"{table}: {n} row(s) of {days[0]}..{days[-1]} lie outside the chunk's scope "
            f"(e.g. {column} {first[column]}, id {first[ID_COLUMN[table]]}); publishing them "
            "would duplicate them on a rerun"
        )


def transaction_sql(
    target: BigQueryTarget, days: list[date], staging: dict[str, str | None], comment: str = ""
) -> str:
    """The chunk's script: one transaction deleting each table's scope and inserting the
    staging rows. ``staging`` maps every table to its staging table's SQL name (None: no rows)."""
    lines = [f"-- {comment}"] if comment else []
    lines.append("BEGIN TRANSACTION;")
    for table in TABLES:
        name, source = target.sql_name(table), staging[table]
        lines.append(f"DELETE FROM {name} WHERE {chunk_scope_sql(table, days, source)};")
        if source:
            cols = ", ".join(_q(c) for c in columns(table))
            lines.append(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {source};")
    lines.append("COMMIT TRANSACTION;")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- errors
def _transient_types() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as gexc

    return (
        gexc.TooManyRequests,
        gexc.InternalServerError,
        gexc.BadGateway,
        gexc.ServiceUnavailable,
        gexc.GatewayTimeout,
    )


def _reasons(exc: Exception) -> set[str]:
    errors = getattr(exc, "errors", None) or []
    return {e.get("reason", "") for e in errors if isinstance(e, dict)}


def is_transient(exc: Exception) -> bool:
    """Worth retrying: 429, 500, 502, 503, 504, a rate limit reported as 403, a backend error,
    or a transaction aborted by a concurrent update (BigQuery's advice is to retry it)."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, _transient_types()):
        return True
    if isinstance(exc, gexc.Forbidden | gexc.BadRequest):
        if _reasons(exc) & {"rateLimitExceeded", "backendError", "internalError"}:
            return True
        messages = [str(exc)] + [
            str(e.get("message", ""))
            for e in getattr(exc, "errors", None) or []
            if isinstance(e, dict)
        ]
        return any("concurrent update" in m.lower() for m in messages)
    return False


def first_error(exc: Exception, job=None) -> str:
    result = getattr(job, "error_result", None)
    if isinstance(result, dict) and result.get("message"):
        return str(result["message"])
    for e in getattr(exc, "errors", None) or []:
        if isinstance(e, dict) and e.get("message"):
            return str(e["message"])
    return str(getattr(exc, "message", None) or exc)


def _hint(exc: Exception) -> str:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return (
            " (a target table missing? The backfill never creates target tables: create them "
            "from sql/ddl, as infra/terraform does)"
        )
    if isinstance(exc, gexc.Forbidden):
        return (
            " (the backfill needs roles/bigquery.jobUser on the project and "
            "roles/bigquery.dataEditor on the dataset)"
        )
    return ""


# ---------------------------------------------------------------------------- publisher
def new_client(project: str):
    """A BigQuery client for the project (application default credentials)."""
    from google.cloud import bigquery

    return bigquery.Client(project=project)


@dataclass
class PublishStats:
    chunks: int = 0
    load_jobs: int = 0
    query_jobs: int = 0
    retries: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    jobs: list[str] = field(default_factory=list)  # ids of the successful jobs, in order


class BigQueryPublisher:
    """Publishes chunks of backfilled days from the staging directory to ``target``.

    ``client`` is injectable (tests); by default a ``bigquery.Client`` is created on first use.
    Retries back off exponentially from ``retry_initial`` seconds to ``retry_maximum``, for at
    most ``retry_deadline`` seconds per job.
    """

    def __init__(
        self,
        target: BigQueryTarget,
        *,
        client=None,
        run_id: str | None = None,
        staging_ttl: timedelta = STAGING_TTL,
        retry_initial: float = 1.0,
        retry_maximum: float = 60.0,
        retry_deadline: float = 3600.0,
        job_timeout: float | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.target = target
        self._client = client
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.staging_ttl = staging_ttl
        self.retry_initial, self.retry_maximum = retry_initial, retry_maximum
        self.retry_deadline, self.job_timeout = retry_deadline, job_timeout
        self.now = now
        self.location: str | None = None
        self.stats = PublishStats()

    @property
    def destination(self) -> str:
        return self.target.uri

    @property
    def client(self):
        if self._client is None:
            self._client = new_client(self.target.project)
        return self._client

    def staging_table(self, table: str) -> str:
        return self.target.table_id(f"{STAGING_PREFIX}{table}_{self.run_id}")

    # ------------------------------------------------------------------ checks
    def check_targets(self) -> None:
        """The dataset and the five target tables exist and have every column of the schema.
        Run before the backfill computes anything."""
        ds = f"{self.target.project}.{self.target.dataset}"
        no_dataset = (
            f"dataset {ds} does not exist; the backfill creates no dataset or table: apply "
            "infra/terraform (or sql/ddl) first"
        )
        dataset = self._call(f"get dataset {ds}", lambda: self.client.get_dataset(ds), no_dataset)
        self.location = getattr(dataset, "location", None)
        for table in TABLES:
            tid = self.target.table_id(table)
            missing_table = (
                f"target table {tid} does not exist: the backfill never creates target tables; "
                f"create it from sql/ddl/{table}.sql (infra/terraform does)"
            )
            found = self._call(
                f"get table {tid}", lambda t=tid: self.client.get_table(t), missing_table
            )
            have = {f.name for f in found.schema}
            missing = [c for c in columns(table) if c not in have]
            if missing:
                raise BackfillError(
                    f"target table {tid} lacks column(s) {', '.join(missing)} of "
                    f"schemas/bigquery/{table}.json: apply sql/ddl/{table}.sql first"
                )

    # ------------------------------------------------------------------ retries
    def _count_retry(self, exc: Exception) -> None:
        self.stats.retries += 1
        LOG.warning("BigQuery: transient error, retrying: %s", first_error(exc))

    def _retry(self):
        from google.api_core import retry as gretry

        return gretry.Retry(
            predicate=is_transient,
            initial=self.retry_initial,
            maximum=self.retry_maximum,
            multiplier=2.0,
            timeout=self.retry_deadline,
            on_error=self._count_retry,
        )

    def _call(self, what: str, fn: Callable, not_found: str | None = None):
        """An API call (no job) with the transient-error retries; errors as BackfillError."""
        from google.api_core import exceptions as gexc

        try:
            return self._retry()(fn)()
        except gexc.RetryError as e:
            cause = e.cause or e
            raise BackfillError(f"BigQuery {what}: gave up retrying: {first_error(cause)}") from e
        except gexc.GoogleAPICallError as e:
            if not_found and isinstance(e, gexc.NotFound):
                raise BackfillError(f"{not_found} ({first_error(e)})") from e
            raise BackfillError(f"BigQuery {what} failed: {first_error(e)}{_hint(e)}") from e

    def _job(self, what: str, submit: Callable):
        """Submits a job and waits for it; a transient failure submits it again (a new job)."""
        from google.api_core import exceptions as gexc

        last: dict = {}

        def attempt():
            last.clear()
            job = submit()
            last["job"] = job
            job.result(timeout=self.job_timeout)
            return job

        try:
            job = self._retry()(attempt)()
        except gexc.RetryError as e:
            cause = e.cause or e
            raise BackfillError(
                f"BigQuery {what} (job {self._job_id(last)}): gave up retrying after "
                f"{self.retry_deadline:.0f} s: {first_error(cause, last.get('job'))}"
            ) from e
        except gexc.GoogleAPICallError as e:
            raise BackfillError(
                f"BigQuery {what} failed (job {self._job_id(last)}): "
                f"{first_error(e, last.get('job'))}{_hint(e)}"
            ) from e
        self.stats.jobs.append(job.job_id)
        return job

    @staticmethod
    def _job_id(last: dict) -> str:
        job = last.get("job")
        return getattr(job, "job_id", None) or "not created"

    # ------------------------------------------------------------------ publishing
    def _combined_file(self, root: Path, table: str, days: list[date]) -> tuple[Path, int]:
        """The chunk's day files of a table as one Parquet file (read a day at a time), each
        day checked against the chunk's scope."""
        schema = arrow_schema(TABLE_MODELS[table])
        out = Path(root) / STATE_DIR / "bigquery" / f"{table}-{self.run_id}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        try:
            with pq.ParquetWriter(out, schema, compression="zstd") as writer:
                for day in days:
                    part = table_file(root, table, day)
                    if not part.exists():
                        raise BackfillError(f"{table} for {day} was not written ({part})")
                    try:
                        rows = pq.read_table(part, schema=schema)
                    except (OSError, pa.ArrowException) as e:
                        raise BackfillError(
                            f"{table} for {day} cannot be read ({part}): {one_line(e)}"
                        ) from e
                    check_scope(table, rows, days)
                    if rows.num_rows:
                        writer.write_table(rows)
                        n += rows.num_rows
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out, n

    def _load(self, table: str, path: Path) -> None:
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
            schema=[bigquery.SchemaField.from_api_repr(f) for f in schema_json(table)],
            labels=LABELS,
        )
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True
        config.parquet_options = options
        dest = self.staging_table(table)

        def submit():
            with path.open("rb") as handle:
                return self.client.load_table_from_file(
                    handle,
                    dest,
                    rewind=True,
                    job_config=config,
                    job_id_prefix=f"backfill_{self.run_id}_load_{table}_",
                    location=self.location,
                )

        self._job(f"load of {path.name} into {dest}", submit)
        self.stats.load_jobs += 1
        # A load with WRITE_TRUNCATE may replace the table's metadata: the expiry is set after.
        staged = bigquery.Table(dest)
        staged.expires = self.now() + self.staging_ttl
        self._call(
            f"set the expiry of {dest}", lambda: self.client.update_table(staged, ["expires"])
        )

    def _drop_staging(self, tables: list[str]) -> None:
        for table in tables:
            dest = self.staging_table(table)
            self._call(
                f"drop {dest}", lambda d=dest: self.client.delete_table(d, not_found_ok=True)
            )

    def publish(self, root: str | Path, days: list[date]) -> dict[str, int]:
        """Loads the chunk's day files, replaces the chunk's scope in one transaction, drops the
        staging tables. Returns the rows published per table. Raises BackfillError."""
        from google.cloud import bigquery

        days = sorted(days)
        day_bounds(days)  # consecutive
        root = Path(root)
        staged: dict[str, str | None] = {}
        rows: dict[str, int] = {}
        loaded: list[str] = []
        try:
            for table in TABLES:
                path, n = self._combined_file(root, table, days)
                rows[table] = n
                try:
                    if n:
                        loaded.append(table)
                        self._load(table, path)
                        staged[table] = f"`{self.staging_table(table)}`"
                    else:
                        staged[table] = None
                finally:
                    path.unlink(missing_ok=True)
            span = f"{days[0]}..{days[-1]}"
            sql = transaction_sql(
                self.target, days, staged, f"defi-risk backfill {span} (run {self.run_id})"
            )
            config = bigquery.QueryJobConfig(labels=LABELS)
            self._job(
                f"transaction for {span} into {self.target.uri}",
                lambda: self.client.query(
                    sql,
                    job_config=config,
                    job_id_prefix=f"backfill_{self.run_id}_commit_",
                    location=self.location,
                    job_retry=None,  # failed jobs are resubmitted (and counted) by _job
                ),
            )
            self.stats.query_jobs += 1
        finally:
            try:
                self._drop_staging(loaded)
            except BackfillError as e:  # they expire anyway; do not hide the first error
                LOG.warning("could not drop a staging table (it expires in a day): %s", e)
        self.stats.chunks += 1
        for table, n in rows.items():
            self.stats.rows[table] += n
        LOG.info("published %s..%s to %s: %s", days[0], days[-1], self.target.uri, rows)
        return rows

    def summary(self) -> dict:
        s = self.stats
        return {"destination": self.destination, "chunks": s.chunks, "load_jobs": s.load_jobs,
                "query_jobs": s.query_jobs, "retries": s.retries, "rows": dict(s.rows)}  # fmt: skip
