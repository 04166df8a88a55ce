"""``defi-risk backfill --output bq://PROJECT.DATASET``, offline: a recording fake BigQuery client
(optionally executing the jobs on DuckDB) around a real small backfill.

pytest tests/runners/backfill/test_bigquery.py
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlglot
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from runners.backfill import bigquery as bqm
from runners.backfill.bigquery import (
    BigQueryPublisher,
    BigQueryTarget,
    chunk_scope_sql,
    parse_bq_uri,
    schema_json,
)
from runners.backfill.config import BackfillConfig
from runners.backfill.driver import backfill
from runners.backfill.files import (
    PRICES,
    SETTLEMENTS,
    TABLES,
    BackfillError,
    marker_path,
    partition,
    table_file,
)
from runners.local.warehouse import create_table_sql
from runners.synthetic.bulk import generate_history
from schemas.codegen import arrow_schema
from schemas.registry import TABLES as TABLE_MODELS

START = date(2024, 1, 1)
FIRST, LAST = date(2024, 1, 3), date(2024, 1, 5)
DAYS = [FIRST + timedelta(days=i) for i in range(3)]
VAR_ARGS = {"var_window": 5, "var_min_scenarios": 2, "margin_interval_s": 3600}
TARGET = BigQueryTarget("test-project", "risk")
IDS = {"prices": "price_id", "portfolio_var": "var_id", "margin_health": "row_id",
       "margin_events": "alert_id", "dead_letter": "dead_letter_id"}  # fmt: skip
EDGE_ACCOUNT = "acct-bq-edge"


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


# ----------------------------------------------------------------------------- the history
def _edit_prices(root: Path) -> None:
    """Dead letters at a day's first instant: BTC's Pyth updates at 00:00 and 00:30 get a feed id
    the registry does not know (ValidatePrices: unknown_feed)."""
    for day in [START + timedelta(days=i) for i in range(5)]:
        path = root / PRICES / f"date={day}" / "part-00000.parquet"
        table = pq.read_table(path)
        at = pa.array(
            [midnight(day), midnight(day) + timedelta(minutes=30)], table["publish_time"].type
        )
        bad = pc.and_(
            pc.and_(pc.equal(table["asset"], "BTC"), pc.equal(table["source"], "pyth")),
            pc.is_in(table["publish_time"], value_set=at),
        )
        feed = pc.if_else(bad, pa.scalar("0xunknown"), table["feed_id"])
        table = table.set_column(table.schema.get_field_index("feed_id"), "feed_id", feed)
        pq.write_table(table, path)


def _edit_settlements(root: Path) -> None:
    """An account that goes healthy -> warning -> margin call on FIRST and repays everything at
    exactly 00:00:00 of the next day: rows and an event stamped at a midnight that belong to the
    day it opens, beside that midnight's snapshot rows, which belong to the day it closes."""
    prices = pq.read_table(root / PRICES / f"date={FIRST}" / "part-00000.parquet").to_pylist()
    eth = next(
        r["price"]
        for r in prices
        if r["asset"] == "ETH" and r["source"] == "pyth"
        and r["publish_time"] == midnight(FIRST) + timedelta(hours=10)
    )  # fmt: skip
    coll = 10 * eth

    def usdc(health: float) -> int:  # debt for a health score at the 10:00 price
        return int(coll / Decimal(1 + health / 100))

    debts = [usdc(90), usdc(40), usdc(22)]
    plan = [  # (day, time, kind, asset, raw amount)
        (FIRST, timedelta(hours=10), "deposit", "ETH", 10 * 10**18),
        (FIRST, timedelta(hours=10, minutes=5), "borrow", "USDC", debts[0] * 10**6),
        (FIRST, timedelta(hours=18), "borrow", "USDC", (debts[1] - debts[0]) * 10**6),
        (FIRST, timedelta(hours=20), "borrow", "USDC", (debts[2] - debts[1]) * 10**6),
        (FIRST + timedelta(days=1), timedelta(0), "repay", "USDC", debts[2] * 10**6),
    ]
    for day in (FIRST, FIRST + timedelta(days=1)):
        path = root / SETTLEMENTS / f"date={day}" / "part-00000.parquet"
        table = pq.read_table(path)
        extra = [
            {
                "event_id": f"settlement:test:{i}",
                "account_id": EDGE_ACCOUNT,
                "venue": "aave_v3",
                "chain_id": "eip155:1",
                "kind": kind,
                "asset": asset,
                "amount_raw": str(raw),
                "decimals": 18 if asset == "ETH" else 6,
                "tx_hash": None,
                "block_number": None,
                "event_time": midnight(d) + at,
            }  # fmt: skip
            for i, (d, at, kind, asset, raw) in enumerate(plan)
            if d == day
        ]
        table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
        pq.write_table(table.sort_by([("event_time", "ascending")]), path)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("history")
    generate_history(out, start=START, days=5, assets=4, accounts=300, seed=11)
    _edit_prices(out)
    _edit_settlements(out)
    return out


def config(history: Path, staging: Path, **kw) -> BackfillConfig:
    base = dict(start=FIRST, end=LAST, input_dir=str(history), output_dir=str(staging),
                workers=1, chunk_days=1, **VAR_ARGS)  # fmt: skip
    base.update(kw)
    return BackfillConfig(**base)


# ----------------------------------------------------------------------- the fake client
def to_duckdb(script: str) -> list[str]:
    """A BigQuery script as DuckDB statements, every table name reduced to its bare name."""
    out = []
    for statement in sqlglot.parse(script, read="bigquery", error_level=ErrorLevel.RAISE):
        for table in statement.find_all(exp.Table):
            table.set("catalog", None)
            table.set("db", None)
        out.append(statement.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE))
    return out


def duck_with_targets() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        con.execute(create_table_sql(table, schema_json(table)))
    return con


class FakeJob:
    def __init__(self, job_id: str, error: Exception | None = None):
        self.job_id, self._error = job_id, error
        self.error_result = (
            {"reason": "invalid", "message": bqm.first_error(error)} if error else None
        )

    def result(self, timeout=None):
        if self._error is not None:
            raise self._error
        return self


class RecordingClient:
    """Records load jobs (config and loaded bytes), query jobs (SQL) and table calls in order.

    With ``duck``, the jobs also run there: a load (re)creates the staging table from the loaded
    Parquet with the job's schema, a query runs the script transpiled to DuckDB. ``fail`` maps
    (kind, n) to the exception the n-th job of that kind (1-based, retries included) fails with.
    ``staging_dir``: each query records which day markers exist when it runs."""

    def __init__(self, duck=None, fail=None, missing=(), staging_dir: Path | None = None):
        self.duck, self.fail, self.missing = duck, dict(fail or {}), set(missing)
        self.staging_dir = staging_dir
        self.log: list[tuple] = []
        self.loads: list[dict] = []
        self.queries: list[dict] = []
        self.counts: Counter = Counter()

    def _job(self, kind: str, prefix: str) -> FakeJob:
        self.counts[kind] += 1
        job_id = f"{prefix}{self.counts[kind]}"
        return FakeJob(job_id, self.fail.pop((kind, self.counts[kind]), None))

    def get_dataset(self, ref):
        self.log.append(("get_dataset", ref))
        dataset = bigquery.Dataset(ref)
        dataset.location = "EU"
        return dataset

    def get_table(self, ref):
        self.log.append(("get_table", ref))
        name = ref.split(".")[-1]
        if name in self.missing:
            raise gexc.NotFound(f"Not found: Table {ref.replace('.', ':', 1)} was not found")
        return bigquery.Table(ref, schema=[bigquery.SchemaField.from_api_repr(f)
                                           for f in schema_json(name)])  # fmt: skip

    def load_table_from_file(self, file_obj, destination, rewind=False, job_config=None,
                             job_id_prefix=None, location=None, **_):  # fmt: skip
        data = file_obj.read()
        job = self._job("load", job_id_prefix)
        self.loads.append({"job_id": job.job_id, "destination": destination, "config": job_config,
                           "data": data, "location": location, "failed": job._error is not None})  # fmt: skip
        self.log.append(("load", destination, job.job_id))
        if self.duck is not None and job._error is None:
            name = destination.split(".")[-1]
            fields = [f.to_api_repr() for f in job_config.schema]
            self.duck.execute(f'DROP TABLE IF EXISTS "{name}"')
            self.duck.execute(create_table_sql(name, fields))
            self.duck.register("_loaded", pq.read_table(io.BytesIO(data)))
            self.duck.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _loaded')
            self.duck.unregister("_loaded")
        return job

    def update_table(self, table, fields):
        self.log.append(("update", table.full_table_id or str(table.reference), table.expires))
        return table

    def query(self, sql, job_config=None, job_id_prefix=None, location=None, job_retry=None, **_):
        job = self._job("query", job_id_prefix)
        markers = None
        if self.staging_dir is not None:
            markers = sorted(p.stem for p in (self.staging_dir / "_backfill" / "days").glob("*"))
        self.queries.append({"job_id": job.job_id, "sql": sql, "markers": markers,
                             "job_retry": job_retry, "failed": job._error is not None})  # fmt: skip
        self.log.append(("query", job.job_id))
        if self.duck is not None and job._error is None:
            statements = to_duckdb(sql)
            try:
                for s in statements:
                    self.duck.execute(s)
            except duckdb.Error:
                self.duck.execute("ROLLBACK")
                raise
        return job

    def delete_table(self, table, not_found_ok=False, **_):
        self.log.append(("delete", table))
        if self.duck is not None:
            self.duck.execute(f'DROP TABLE IF EXISTS "{table.split(".")[-1]}"')


def publisher(client, **kw) -> BigQueryPublisher:
    return BigQueryPublisher(TARGET, client=client, retry_initial=0.0, retry_maximum=0.0, **kw)


# ------------------------------------------------------------------------ local day files
def day_rows(staging: Path, table: str, days) -> pa.Table:
    schema = arrow_schema(TABLE_MODELS[table])
    return pa.concat_tables(
        [
            pq.read_table(partition(staging, table, d) / "part-00000.parquet", schema=schema)
            for d in days
        ]  # fmt: skip
    )


def multiset(rows: list[dict]) -> Counter:
    return Counter(json.dumps(r, default=str, sort_keys=True) for r in rows)


def target_rows(con, table: str) -> list[dict]:
    return con.sql(f'SELECT * FROM "{table}"').to_arrow_table().to_pylist()


# -------------------------------------------------------------------------------- URI, CLI
@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("bq://my-project", "expected bq://PROJECT.DATASET"),
        ("bq://my-project.risk.prices", "a table is not part of it"),
        ("bq://my-project.risk/", "no path"),
        ("bq://.risk", "expected bq://PROJECT.DATASET"),
        ("bq://My-Project.risk", "not a project id"),
        ("bq://proj.risk", "not a project id"),  # shorter than 6
        ("bq://1project.risk", "not a project id"),
        ("bq://my-project-.risk", "not a project id"),
        ("bq://my_project.risk", "not a project id"),
        ("bq://my-project.risk-eu", "not a dataset id"),
        ("bq://example.com:my-project.risk", "domain-scoped"),
        ("BQ://my-project.risk", "lower case"),
        ("gs://bucket/x", "not a BigQuery output"),
    ],
)
def test_bad_bq_uris_are_refused_with_the_reason(uri, error):
    with pytest.raises(BackfillError, match=error):
        parse_bq_uri(uri)


def test_a_bq_uri_names_project_and_dataset():
    target = parse_bq_uri("bq://my-project-42.risk_eu_2")
    assert target == BigQueryTarget("my-project-42", "risk_eu_2")
    assert target.uri == "bq://my-project-42.risk_eu_2"
    assert target.sql_name("prices") == "`my-project-42.risk_eu_2.prices`"


def _cli(history: Path, *extra: str) -> list[str]:
    return ["backfill", "--start", str(FIRST), "--end", str(FIRST), "--input", str(history),
            "--workers", "1", "--var-window", "5", "--var-min-scenarios", "2", *extra]  # fmt: skip


def test_cli_refuses_bad_output_arguments(history, tmp_path, capsys):
    from runners.cli import main

    cases = [
        (["--output", "bq://test-project.risk"], "needs --staging-dir"),
        (["--output", "bq://test-project", "--staging-dir", str(tmp_path)], "PROJECT.DATASET"),
        (["--output", str(tmp_path / "o"), "--staging-dir", str(tmp_path)], "only for a bq://"),
        (["--output", "gs://bucket/out"], "a local directory or bq://"),
    ]
    for args, message in cases:
        assert main(_cli(history, *args)) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_cli_publishes_to_the_dataset_through_the_staging_dir(
    history, tmp_path, monkeypatch, capsys
):
    from runners.cli import main

    client = RecordingClient()
    monkeypatch.setattr(bqm, "new_client", lambda project: client)
    staging = tmp_path / "staging"
    code = main(_cli(history, "--output", "bq://test-project.risk", "--staging-dir", str(staging)))
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["bigquery"]["destination"] == "bq://test-project.risk"
    assert summary["bigquery"]["query_jobs"] == 1 and summary["written"] == 1
    assert (partition(staging, "prices", FIRST) / "part-00000.parquet").exists()
    marker = json.loads(marker_path(staging, FIRST).read_text())
    assert marker["destination"] == "bq://test-project.risk"
    # the same staging dir for another dataset: the day is not published there yet
    client2 = RecordingClient()
    monkeypatch.setattr(bqm, "new_client", lambda project: client2)
    assert main(_cli(history, "--output", "bq://test-project.other", "--staging-dir",
                     str(staging))) == 0  # fmt: skip
    assert len(client2.queries) == 1 and "`test-project.other.prices`" in client2.queries[0]["sql"]


# ----------------------------------------------------------------------------- the run
FOREIGN, STALE = "foreign", "stale"
LO, HI = midnight(FIRST), midnight(LAST + timedelta(days=1))


def seed(table: str, kind: str, n: int, **values) -> tuple[str, dict]:
    """A target row put in before the backfill: ``foreign`` ones lie outside every published
    scope and must stay, ``stale`` ones (a previous run's rows the backfill no longer produces)
    lie inside and must go."""
    t = LO + timedelta(hours=12)
    base = {
        "prices": {"asset": "BTC", "quote": "USD", "price": Decimal("1.5"), "status": "ok",
                   "n_sources": 2, "sources": ["chainlink", "pyth"], "sources_set_aside": [],
                   "spread_bps": 1.0, "window_start": t - timedelta(minutes=1), "event_time": t},
        "portfolio_var": {"account_id": "acct-seed", "as_of": t, "method": "historical",
                          "level": 0.99, "horizon_days": 1, "portfolio_value_usd": Decimal(100),
                          "var_usd": Decimal(5), "es_usd": Decimal(6), "n_scenarios": 4,
                          "n_positions": 1, "window_start": t - timedelta(days=4), "window_end": t},
        "margin_health": {"account_id": "acct-seed", "event_ts": t, "trigger": "price",
                          "collateral_usd": Decimal(200), "borrow_usd": Decimal(100),
                          "health_score": Decimal(100), "zone": "healthy",
                          "liquidation_prices": [{"asset": "ETH", "liquidation_price": Decimal(1),
                                                  "margin_call_price": Decimal(2)}],
                          "price_status": "ok"},
        "margin_events": {"account_id": "acct-seed", "event_type": "margin_call",
                          "zone": "margin_call", "previous_zone": "warning",
                          "health_score": Decimal(20), "event_ts": t, "alerted": True},
        "dead_letter": {"source": PRICES, "stage": "ValidatePrices", "error_reason": "stale",
                        "error": "stale", "raw_payload": "{}", "payload_encoding": "utf-8",
                        "event_time": t, "processing_time": datetime(2024, 2, 1, tzinfo=UTC)},
    }[table]  # fmt: skip
    return kind, {IDS[table]: f"{kind}-{table}-{n}", **base, **values}


SEEDS = {
    "prices": [
        seed("prices", FOREIGN, 1, event_time=LO),  # the window closing the day before FIRST
        seed("prices", FOREIGN, 2, event_time=midnight(date(2024, 1, 20))),
        seed("prices", STALE, 1, event_time=LO + timedelta(days=1, seconds=30)),
        seed("prices", STALE, 2, event_time=HI),
    ],
    "portfolio_var": [
        seed("portfolio_var", FOREIGN, 1, as_of=LO),  # the day before FIRST's VaR
        seed("portfolio_var", STALE, 1, as_of=HI),
    ],
    "margin_health": [
        seed("margin_health", FOREIGN, 1, event_ts=LO, trigger="snapshot"),  # the day before's
        seed("margin_health", FOREIGN, 2, event_ts=HI, trigger="settlement"),  # the day after's
        seed("margin_health", STALE, 1, event_ts=LO, trigger="settlement"),
        seed("margin_health", STALE, 2, event_ts=HI, trigger="snapshot"),
        seed("margin_health", STALE, 3, event_ts=LO + timedelta(days=1), trigger="price"),
    ],
    "margin_events": [
        seed("margin_events", FOREIGN, 1, event_ts=LO),  # at an edge, an id not sent again
        seed("margin_events", FOREIGN, 2, event_ts=LO - timedelta(hours=1)),
        seed("margin_events", STALE, 1, event_ts=LO + timedelta(hours=30)),
    ],
    "dead_letter": [
        seed("dead_letter", FOREIGN, 1, stage="ParsePrices"),  # the stream's parser
        seed("dead_letter", FOREIGN, 2, source=SETTLEMENTS),
        seed("dead_letter", FOREIGN, 3, event_time=HI),
        seed("dead_letter", STALE, 1, event_time=LO),
        seed("dead_letter", STALE, 2, stage="CompositePrices", event_time=HI - timedelta(seconds=1)),
    ],
}  # fmt: skip


def insert(con, table: str, rows: list[dict]) -> None:
    con.register("_seed", pa.Table.from_pylist(rows, schema=arrow_schema(TABLE_MODELS[table])))
    con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _seed')
    con.unregister("_seed")


def assert_target_is_the_day_files_plus_foreign(con, staging: Path, seeds=SEEDS) -> None:
    for table in TABLES:
        got = target_rows(con, table)
        ids = [r[IDS[table]] for r in got]
        assert len(ids) == len(set(ids)), f"{table}: duplicate ids"
        foreign = [row for kind, row in seeds[table] if kind == FOREIGN]
        foreign = pa.Table.from_pylist(foreign, schema=arrow_schema(TABLE_MODELS[table]))
        want = day_rows(staging, table, DAYS).to_pylist() + foreign.to_pylist()
        assert multiset(got) == multiset(want), table
        assert not [i for i in ids if i.startswith(STALE)], table


@pytest.fixture(scope="module")
def published(history, tmp_path_factory):
    """A run with chunk-days 1 (three chunks) into DuckDB-backed targets that hold the seeds."""
    staging = tmp_path_factory.mktemp("staging")
    con = duck_with_targets()
    for table, rows in SEEDS.items():
        insert(con, table, [row for _, row in rows])
    client = RecordingClient(duck=con, staging_dir=staging)
    summary = backfill(config(history, staging), say=lambda _m: None, publisher=publisher(client))
    after = {table: target_rows(con, table) for table in TABLES}
    return {"staging": staging, "con": con, "client": client, "summary": summary,
            "history": history, "after": after}  # fmt: skip


def chunks_of(log: list[tuple]) -> list[dict]:
    """The fake's log cut per chunk: its loads, its script, then its drops."""
    out: list[dict] = []
    for entry in log:
        if entry[0] == "load" and (not out or out[-1]["query"]):
            out.append({"loads": [], "load_jobs": [], "query": None, "deletes": []})
        if entry[0] == "load":
            assert not out[-1]["deletes"]
            out[-1]["loads"].append(entry[1])
            out[-1]["load_jobs"].append(entry[2])
        elif entry[0] == "query":
            out[-1]["query"] = entry[1]
        elif entry[0] == "delete":
            assert out[-1]["query"], "a staging table was dropped before the script"
            out[-1]["deletes"].append(entry[1])
    return out


def staged_table(destination: str) -> str:
    return destination.split(".")[-1].removeprefix("_backfill_").rsplit("_", 1)[0]


def test_each_chunk_is_loaded_table_by_table_then_committed_once(published):
    client, staging = published["client"], published["staging"]
    assert published["summary"]["bigquery"]["query_jobs"] == 3
    for load in client.loads:
        config = load["config"]
        assert config.source_format == bigquery.SourceFormat.PARQUET
        assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
        assert config.parquet_options.enable_list_inference is True
        table = staged_table(load["destination"])
        assert [f.to_api_repr() for f in config.schema] == [
            bigquery.SchemaField.from_api_repr(f).to_api_repr() for f in schema_json(table)
        ]
        assert load["destination"].startswith("test-project.risk._backfill_")
        assert load["location"] == "EU"
    chunks = chunks_of(client.log)
    assert len(chunks) == len(client.queries) == 3  # one transaction per chunk
    for day, chunk, query in zip(DAYS, chunks, client.queries, strict=True):
        # the tables with rows are loaded, exactly the day's rows; then one script
        with_rows = {t for t in TABLES if day_rows(staging, t, [day]).num_rows}
        assert {"prices", "portfolio_var", "margin_health", "dead_letter"} <= with_rows
        assert {staged_table(d) for d in chunk["loads"]} == with_rows
        for load in [ld for ld in client.loads if ld["job_id"] in chunk["load_jobs"]]:
            table = staged_table(load["destination"])
            loaded = pq.read_table(io.BytesIO(load["data"]))
            assert multiset(loaded.to_pylist()) == multiset(
                day_rows(staging, table, [day]).to_pylist()
            )
        sql = query["sql"]
        assert "BEGIN TRANSACTION;" in sql and sql.rstrip().endswith("COMMIT TRANSACTION;")
        assert sql.count("DELETE FROM") == 5 and sql.count("INSERT INTO") == len(with_rows)
        # when the script runs, only the days of the chunks before have markers
        assert query["markers"] == [str(d) for d in DAYS if d < day]
        assert query["job_retry"] is None
        # the chunk's staging tables are dropped after its script
        assert sorted(chunk["deletes"]) == sorted(chunk["loads"])
    # the staging tables expire in a day (set after each load)
    updates = [e for e in client.log if e[0] == "update"]
    assert len(updates) == len(client.loads)
    assert all(timedelta(hours=23) < e[2] - datetime.now(UTC) <= timedelta(days=1) for e in updates)
    tables = {r[0] for r in published["con"].execute("SHOW TABLES").fetchall()}
    assert tables == set(TABLES)


def test_the_scripts_parse_as_bigquery_sql(published):
    for query in published["client"].queries:
        statements = sqlglot.parse(query["sql"], read="bigquery", error_level=ErrorLevel.RAISE)
        kinds = [type(s).__name__ for s in statements]
        assert kinds[0] == "Transaction" and kinds[-1] == "Commit"
        assert set(kinds[1:-1]) == {"Delete", "Insert"}
        for delete in [s for s in statements if isinstance(s, exp.Delete)]:
            table = delete.this.name
            if table != "dead_letter":  # a constant range on the partition column, top level
                column = bqm.RANGES[table][0]
                where = delete.args["where"].this
                conjuncts = list(where.flatten()) if isinstance(where, exp.And) else [where]
                bounds = [c for c in conjuncts if isinstance(c, exp.GT | exp.GTE | exp.LT | exp.LTE)
                          and c.this.name == column and isinstance(c.expression, exp.Cast)]  # fmt: skip
                assert len(bounds) == 2, (table, where.sql("bigquery"))


def test_every_row_of_a_day_lies_in_that_days_scope_and_in_no_neighbours(published):
    """The scopes, checked on the real backfill output: each table-day's rows satisfy the day's
    DELETE condition and not the previous or the next day's (so publishing a neighbour never
    deletes them). The data reaches the edges the scopes are about."""
    staging = published["staging"]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    path = {(t, d): partition(staging, t, d) / "part-00000.parquet" for t in TABLES for d in DAYS}
    for (table, day), file in path.items():
        con.execute(f"CREATE VIEW s_{table}_{day:%d} AS SELECT * FROM read_parquet('{file}')")
    for (table, day), file in path.items():
        con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM read_parquet('{file}')")
        total = pq.ParquetFile(file).metadata.num_rows
        for other in (day - timedelta(days=1), day, day + timedelta(days=1)):
            staged = f"`s_{table}_{other:%d}`" if other in DAYS else None
            (sql,) = to_duckdb(
                f"SELECT COUNT(*) FROM t WHERE {chunk_scope_sql(table, [other], staged)}"
            )
            n = con.execute(sql).fetchone()[0]
            assert n == (total if other == day else 0), (table, day, other, n, total)
    # the edges are exercised: midnight rows of both kinds, dead letters at a day's first instant
    health = day_rows(staging, "margin_health", DAYS)
    second = DAYS[1]
    at_midnight = pc.equal(health["event_ts"], pa.scalar(midnight(second), health["event_ts"].type))
    triggers = set(health.filter(at_midnight)["trigger"].to_pylist())
    assert {"settlement", "snapshot"} <= triggers  # the repay opening DAYS[1], DAYS[0]'s snapshot
    events = day_rows(staging, "margin_events", [second]).to_pylist()
    assert any(
        e["event_ts"] == midnight(second) and e["account_id"] == EDGE_ACCOUNT for e in events
    )
    dead = day_rows(staging, "dead_letter", DAYS).to_pylist()
    assert {midnight(d) for d in DAYS} <= {r["event_time"] for r in dead}
    assert {r["stage"] for r in dead} <= set(bqm.DEAD_LETTER_STAGES)
    assert {r["source"] for r in dead} == {PRICES}
    prices = day_rows(staging, "prices", [second])
    assert pc.min(prices["event_time"]).as_py() == midnight(second) + timedelta(minutes=1)
    assert pc.max(prices["event_time"]).as_py() == midnight(second + timedelta(days=1))
    var = day_rows(staging, "portfolio_var", [second])
    assert set(var["as_of"].to_pylist()) == {midnight(second + timedelta(days=1))}


def test_on_duckdb_the_targets_hold_the_day_files_once_and_the_foreign_rows(published):
    """After the first run: every row of the local day files once, the foreign seeds untouched,
    the stale ones gone."""
    con = duck_with_targets()
    for table in TABLES:
        if published["after"][table]:
            insert(con, table, published["after"][table])
    assert_target_is_the_day_files_plus_foreign(con, published["staging"])


def test_a_rerun_and_an_overlapping_range_replace_without_duplicates(published):
    con, staging, history = published["con"], published["staging"], published["history"]
    skipped = RecordingClient(duck=con)
    again = backfill(config(history, staging), say=lambda _m: None, publisher=publisher(skipped))
    assert again["skipped"] == 3 and not skipped.queries and not skipped.loads
    rerun = RecordingClient(duck=con, staging_dir=staging)
    backfill(config(history, staging, force=True, chunk_days=3), say=lambda _m: None,
             publisher=publisher(rerun))  # fmt: skip
    assert len(rerun.queries) == 1
    assert_target_is_the_day_files_plus_foreign(con, staging)
    overlap = RecordingClient(duck=con, staging_dir=staging)
    summary = backfill(config(history, staging, start=DAYS[1], force=True, chunk_days=2),
                       say=lambda _m: None, publisher=publisher(overlap))  # fmt: skip
    assert summary["written"] == 2 and len(overlap.queries) == 1
    assert_target_is_the_day_files_plus_foreign(con, staging)


def test_a_failed_transaction_writes_no_marker_and_the_rerun_publishes_the_chunk(history, tmp_path):
    staging = tmp_path / "staging"
    con = duck_with_targets()
    error = gexc.BadRequest(
        "Query error", errors=[{"reason": "invalidQuery", "message": "Syntax error at [3:7]"}]
    )
    client = RecordingClient(duck=con, fail={("query", 2): error}, staging_dir=staging)
    with pytest.raises(
        BackfillError, match=r"job backfill_\w+_commit_2\).*Syntax error at \[3:7\]"
    ):
        backfill(config(history, staging), say=lambda _m: None, publisher=publisher(client))
    assert marker_path(staging, DAYS[0]).exists()
    assert not marker_path(staging, DAYS[1]).exists() and not marker_path(staging, DAYS[2]).exists()
    dropped = {e[1] for e in client.log if e[0] == "delete"}
    assert dropped == {load["destination"] for load in client.loads}  # also after the failure
    again = RecordingClient(duck=con, staging_dir=staging)
    summary = backfill(config(history, staging), say=lambda _m: None, publisher=publisher(again))
    assert summary["skipped"] == 1 and summary["written"] == 2 and len(again.queries) == 2
    assert_target_is_the_day_files_plus_foreign(con, staging, dict.fromkeys(TABLES, []))


def test_a_damaged_staging_file_makes_its_day_computed_and_published_again(published, tmp_path):
    """A day counts as published when its marker names the destination and agrees with the
    staging files it was published from: a file deleted since is recomputed (from the engine
    state of the day before) and published again, replacing the day's rows."""
    staging = Path(shutil.copytree(published["staging"], tmp_path / "staging"))
    con = duck_with_targets()  # as published from these files (earlier tests rewrote them)
    for table in TABLES:
        foreign = [row for kind, row in SEEDS[table] if kind == FOREIGN]
        insert(con, table, foreign + day_rows(staging, table, DAYS).to_pylist())
    table_file(staging, "margin_events", DAYS[1]).unlink()
    client = RecordingClient(duck=con, staging_dir=staging)
    lines: list[str] = []
    summary = backfill(
        config(published["history"], staging), say=lines.append, publisher=publisher(client)
    )
    assert summary["repaired"] == {str(DAYS[1]): "margin_events partition missing"}
    assert f"{DAYS[1]}: margin_events partition missing; recomputing" in lines
    assert summary["written"] == 1 and len(client.queries) == 1
    assert bqm.ts_literal(midnight(DAYS[1])) in client.queries[0]["sql"]
    assert bqm.ts_literal(midnight(DAYS[0])) not in client.queries[0]["sql"]
    assert_target_is_the_day_files_plus_foreign(con, staging)
    marker = json.loads(marker_path(staging, DAYS[1]).read_text())
    assert marker["destination"] == TARGET.uri
    assert (
        marker["files"]["margin_events"]["path"]
        == f"margin_events/date={DAYS[1]}/part-00000.parquet"
    )


def test_markers_are_not_written_when_the_published_rows_differ_from_the_day_files():
    from runners.backfill.driver import check_published

    files = {t: {"path": "x", "rows": 2, "bytes": 1} for t in TABLES}
    written = {DAYS[0]: files, DAYS[1]: files}
    check_published(dict.fromkeys(TABLES, 4), written)
    with pytest.raises(BackfillError, match="prices: 3 row.*day files hold 4"):
        check_published({**dict.fromkeys(TABLES, 4), "prices": 3}, written)


# ------------------------------------------------------------------------ errors, retries
def test_transient_errors_are_retried_and_counted(published):
    staging = published["staging"]
    client = RecordingClient(fail={
        ("load", 1): gexc.ServiceUnavailable("backend unavailable"),
        ("load", 2): gexc.TooManyRequests("rate", errors=[{"reason": "rateLimitExceeded", "message": "Exceeded rate limits"}]),
        ("query", 1): gexc.InternalServerError("internal", errors=[{"reason": "backendError", "message": "Backend error"}]),
        ("query", 2): gexc.BadRequest("aborted", errors=[{"reason": "invalidQuery", "message": "Transaction is aborted due to concurrent update against table risk.prices"}]),
    })  # fmt: skip
    pub = publisher(client)
    pub.check_targets()
    rows = pub.publish(staging, [DAYS[0]])
    assert rows["prices"] == day_rows(staging, "prices", [DAYS[0]]).num_rows
    assert pub.stats.retries == 4 and pub.summary()["retries"] == 4
    assert [q["failed"] for q in client.queries] == [True, True, False]
    assert [ld["failed"] for ld in client.loads][:3] == [True, True, False]
    assert pub.stats.query_jobs == 1 and client.queries[-1]["job_id"] in pub.stats.jobs


def test_permanent_errors_name_the_job_and_the_message(published):
    staging = published["staging"]
    forbidden = gexc.Forbidden(
        "denied",
        errors=[{"reason": "accessDenied", "message": "Access Denied: Table risk._backfill"}],
    )
    client = RecordingClient(fail={("load", 1): forbidden})
    pub = publisher(client)
    with pytest.raises(BackfillError) as caught:
        pub.publish(staging, [DAYS[0]])
    text = str(caught.value)
    assert "job backfill_" in text and "_load_prices_1" in text and "Access Denied" in text
    assert "bigquery.dataEditor" in text and pub.stats.retries == 0
    assert not client.queries  # nothing committed
    gone = gexc.NotFound(
        "Not found: Table test-project:risk.margin_events was not found in location EU"
    )
    pub = publisher(RecordingClient(fail={("query", 1): gone}))
    with pytest.raises(
        BackfillError, match="margin_events was not found.*never creates target tables"
    ):
        pub.publish(staging, [DAYS[0]])


def test_a_missing_target_table_stops_the_backfill_before_any_work(history, tmp_path):
    client = RecordingClient(missing={"margin_health"})
    with pytest.raises(
        BackfillError,
        match=r"target table test-project\.risk\.margin_health does not exist.*never creates",
    ):
        backfill(config(history, tmp_path), say=lambda _m: None, publisher=publisher(client))
    assert not (tmp_path / "prices").exists() and not client.loads


def test_rows_outside_the_scope_are_refused_before_loading(published, tmp_path):
    staging = published["staging"]
    rows = day_rows(staging, "portfolio_var", [DAYS[0]])
    shifted = rows.set_column(
        rows.schema.get_field_index("as_of"), "as_of",
        pa.array([midnight(DAYS[0])] * rows.num_rows, rows["as_of"].type),
    )  # fmt: skip
    with pytest.raises(BackfillError, match="outside the chunk's scope"):
        bqm.check_scope("portfolio_var", shifted, [DAYS[0]])
    bqm.check_scope("portfolio_var", rows, [DAYS[0]])
    health = day_rows(staging, "margin_health", [DAYS[0]])
    edge = health.filter(pc.equal(health["trigger"], "snapshot")).slice(0, 1)
    edge = edge.set_column(edge.schema.get_field_index("event_ts"), "event_ts",
                           pa.array([midnight(DAYS[0])], edge["event_ts"].type))  # fmt: skip
    with pytest.raises(BackfillError, match="margin_health"):
        bqm.check_scope("margin_health", edge, [DAYS[0]])
    with pytest.raises(BackfillError, match="consecutive"):
        bqm.day_bounds([DAYS[0], DAYS[2]])
