"""The local warehouse: the BigQuery tables and views of dataset ``risk`` in one DuckDB file.

``build_warehouse(OUT)`` loads ``OUT/tables/<table>/*.parquet`` (written by the local run) into
``OUT/warehouse.duckdb``, one DuckDB table per table of ``schemas.registry.TABLES`` with the same
name and the column types of ``schemas/bigquery/<table>.json``; a table without Parquet files is
created empty from that file. Alerts (``OUT/alerts/<topic>.jsonl``) become the tables
``alerts_margin``, ``alerts_surveillance`` and ``alerts_compliance``; these always exist and are
empty when the run wrote no alert file.

Views are the BigQuery SQL files ``sql/views/<domain>/<name>.sql``, one
``CREATE [OR REPLACE] VIEW risk.<name> AS ...`` (or ``CREATE MATERIALIZED VIEW``) statement each,
transpiled to DuckDB by sqlglot with ``unsupported_level=RAISE``.

Naming: everything lives in DuckDB's ``main`` schema under its bare name. Every ``risk.<x>``
reference (also ``project.risk.<x>``) is rewritten to ``<x>``, so the same SQL text runs in
BigQuery and here. A CTE with the name of a ``risk`` table it would shadow is refused.

Known BigQuery/DuckDB differences, handled here:

- ``TIMESTAMP_DIFF(a, b, unit)``: BigQuery counts whole elapsed units (truncated towards zero,
  00:59:59 -> 01:00:00 is 0 hours); DuckDB's ``date_diff`` counts unit boundaries crossed (1).
  Rewritten to ``(epoch_us(a) - epoch_us(b)) // micros_per_unit`` (DuckDB's integer ``//``
  truncates towards zero, like BigQuery).
- ``APPROX_QUANTILES(x, n)``: BigQuery returns n + 1 input values; sqlglot emits DuckDB's
  ``approx_quantile`` (a t-digest that may return other values). Rewritten to the exact,
  non-interpolating ``quantile_disc`` at i/n, which is what BigQuery's sketch approximates (and
  returns exactly on small inputs).
- ``NUMERIC`` in a cast: sqlglot emits a bare ``DECIMAL``, which DuckDB reads as DECIMAL(18,3)
  and silently rounds to 3 places; rewritten to DECIMAL(38,9). ``BIGNUMERIC`` (76 digits) has no
  DuckDB type and is refused.
- ``CREATE MATERIALIZED VIEW``: DuckDB has none; it becomes a plain view and the report says so.

Not handled (avoid them in views, or check the result): ``AVG`` of NUMERIC is DOUBLE in DuckDB
(NUMERIC in BigQuery); ``DATE_TRUNC`` of a DATE may return a TIMESTAMP; ``ARRAY_AGG(... LIMIT n)``
is refused by sqlglot. JSON columns are VARCHAR here (Parquet carries them as strings), and
``DATE(ts)`` / ``FORMAT_TIMESTAMP`` follow the session time zone: connections opened by this module
use UTC; set ``SET TimeZone = 'UTC'`` when you open the file yourself.
"""

from __future__ import annotations

import contextlib
import graphlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import sqlglot
from pydantic import ValidationError
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from schemas.codegen import SCHEMA_DIR, arrow_schema, bigquery_fields
from schemas.registry import ALERT_TOPICS, DATASET, TABLES, TOPICS
from schemas.serde import to_row

DEFAULT_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
WAREHOUSE_FILE = "warehouse.duckdb"

_SCALAR_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "INTEGER": "BIGINT",
    "FLOAT64": "DOUBLE",
    "FLOAT": "DOUBLE",
    "BOOL": "BOOLEAN",
    "BOOLEAN": "BOOLEAN",
    "NUMERIC": "DECIMAL(38, 9)",
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATE": "DATE",
    # Parquet carries JSON as a string; VARCHAR keeps loaded and empty tables identical.
    "JSON": "VARCHAR",
}

# BigQuery TIMESTAMP_DIFF units (WEEK and longer are not valid for TIMESTAMP_DIFF).
_MICROS_PER_UNIT = {
    "MICROSECOND": 1,
    "MILLISECOND": 1_000,
    "SECOND": 1_000_000,
    "MINUTE": 60_000_000,
    "HOUR": 3_600_000_000,
    "DAY": 86_400_000_000,  # TIMESTAMP_DIFF days are 24-hour days
}

# quantile_disc picks index ceil(N * q) - 1 in double arithmetic; with q = i/n rounded to a double,
# N * q can land just above a whole number (N=25, q=14/25) and pick the next value. Shrinking q by
# 2**-40 keeps the exact rank for any N below ~1e10.
_QUANTILE_SHRINK = 1 - 2**-40


class WarehouseError(RuntimeError):
    """A table could not be loaded or a SQL file could not be translated or created."""


@dataclass
class WarehouseReport:
    tables: dict[str, int] = field(default_factory=dict)  # table -> row count
    views: list[str] = field(default_factory=list)  # in creation order
    notes: list[str] = field(default_factory=list)
    db_path: Path | None = None


@dataclass(frozen=True)
class _View:
    name: str
    path: Path
    materialized: bool
    sql: str  # the DuckDB SELECT
    depends_on: frozenset[str]


# ------------------------------------------------------------------------------ type mapping
def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_type(bq_field: dict) -> str:
    """DuckDB type of one BigQuery JSON schema field (RECORD -> STRUCT, REPEATED -> LIST)."""
    kind = bq_field["type"]
    if kind in ("RECORD", "STRUCT"):
        inner = ", ".join(f"{_quote(f['name'])} {duckdb_type(f)}" for f in bq_field["fields"])
        base = f"STRUCT({inner})"
    elif kind in _SCALAR_TYPES:
        base = _SCALAR_TYPES[kind]
    else:
        raise WarehouseError(
            f"BigQuery type {kind} of field {bq_field['name']} has no DuckDB mapping"
        )
    return f"{base}[]" if bq_field.get("mode") == "REPEATED" else base


def create_table_sql(table: str, bq_fields: list[dict]) -> str:
    columns = []
    for f in bq_fields:
        not_null = " NOT NULL" if f.get("mode") == "REQUIRED" else ""
        columns.append(f"{_quote(f['name'])} {duckdb_type(f)}{not_null}")
    return f"CREATE TABLE {_quote(table)} ({', '.join(columns)})"


def alert_table_name(topic: str) -> str:
    """alerts.margin.v1 -> alerts_margin."""
    return "alerts_" + topic.split(".")[1]


# -------------------------------------------------------------------------------- transpiling
def _dataset_of(node: exp.Expression) -> str:
    db = node.args.get("db")
    return db.name if isinstance(db, exp.Expression) else ""


def _strip_dataset(query: exp.Expression, origin: str, *, views: bool) -> set[str]:
    """Rewrites risk.<x> to <x> in place; returns the names referenced that way."""
    cte_names = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    referenced: set[str] = set()
    for table in query.find_all(exp.Table):
        name, dataset = table.name, _dataset_of(table)
        if not name:  # UNNEST and table functions
            continue
        if dataset == DATASET:
            if name in cte_names:
                raise WarehouseError(
                    f"{origin}: the CTE {name} shadows {DATASET}.{name} once the dataset "
                    f"qualifier is removed for DuckDB; rename the CTE"
                )
            table.set("db", None)
            table.set("catalog", None)
            referenced.add(name)
        elif dataset:
            raise WarehouseError(
                f"{origin}: {dataset}.{name} is outside dataset {DATASET}, the only one in the warehouse"
            )
        elif views and name not in cte_names:
            raise WarehouseError(
                f"{origin}: table {name} must be written {DATASET}.{name} (BigQuery views need "
                f"dataset-qualified names)"
            )
    for column in query.find_all(exp.Column):
        if _dataset_of(column) == DATASET:  # risk.prices.asset
            column.set("db", None)
            column.set("catalog", None)
    return referenced


def _timestamp_diff(node: exp.TimestampDiff, origin: str) -> exp.Expression:
    unit = node.args.get("unit")
    unit_name = unit.name.upper() if unit is not None else ""
    if unit_name not in _MICROS_PER_UNIT:
        raise WarehouseError(
            f"{origin}: TIMESTAMP_DIFF unit {unit_name or '(none)'} is not one of "
            f"{', '.join(_MICROS_PER_UNIT)}"
        )

    def epoch_us(arg: exp.Expression) -> exp.Expression:
        # The cast makes string literals work, as BigQuery coerces them to TIMESTAMP.
        return exp.Anonymous(this="epoch_us", expressions=[exp.cast(arg, "TIMESTAMPTZ")])

    diff = exp.Sub(this=epoch_us(node.this), expression=epoch_us(node.expression))
    quotient = exp.IntDiv(
        this=exp.Paren(this=diff), expression=exp.Literal.number(_MICROS_PER_UNIT[unit_name])
    )
    return exp.Paren(this=quotient)


def _approx_quantiles(node: exp.ApproxQuantiles, origin: str) -> exp.Expression:
    value, buckets, distinct = node.this, node.expression, False
    if isinstance(value, exp.Distinct):  # APPROX_QUANTILES(DISTINCT x, n)
        value, buckets, distinct = value.expressions[0], value.expressions[1], True
    if not (isinstance(buckets, exp.Literal) and buckets.is_int and int(buckets.name) > 0):
        raise WarehouseError(
            f"{origin}: APPROX_QUANTILES needs a positive integer literal, got {buckets}"
        )
    n = int(buckets.name)
    # repr + "e0" makes DuckDB read a DOUBLE, the type quantile_disc computes its index in.
    points = [exp.Literal.number(repr(i / n * _QUANTILE_SHRINK) + "e0") for i in range(n + 1)]
    argument = exp.Distinct(expressions=[value]) if distinct else value
    return exp.Anonymous(
        this="quantile_disc", expressions=[argument, exp.Array(expressions=points)]
    )


def _rewrite(query: exp.Expression, origin: str) -> None:
    """In place: the BigQuery semantics sqlglot does not carry over to DuckDB."""
    # Deepest first, so a rewritten node is built from already rewritten arguments.
    for node in reversed(list(query.find_all(exp.TimestampDiff, exp.ApproxQuantiles, bfs=False))):
        if isinstance(node, exp.TimestampDiff):
            node.replace(_timestamp_diff(node, origin))
            continue
        parent = node.parent
        if isinstance(parent, exp.RespectNulls):
            raise WarehouseError(
                f"{origin}: APPROX_QUANTILES ... RESPECT NULLS has no DuckDB equivalent"
            )
        target = parent if isinstance(parent, exp.IgnoreNulls) else node  # the default anyway
        target.replace(_approx_quantiles(node, origin))
    # BigQuery's COUNTIF is INT64; DuckDB's count_if is HUGEINT (it reaches Python as Decimal).
    for node in list(query.find_all(exp.CountIf)):
        if not isinstance(node.parent, exp.Cast):
            node.replace(exp.cast(node.copy(), "BIGINT"))
    for dtype in query.find_all(exp.DataType):
        if dtype.this == exp.DataType.Type.BIGDECIMAL:
            raise WarehouseError(
                f"{origin}: BIGNUMERIC has no DuckDB type (DECIMAL stops at 38 digits)"
            )
        if dtype.this == exp.DataType.Type.DECIMAL and not dtype.expressions:
            dtype.set(
                "expressions", [exp.DataTypeParam(this=exp.Literal.number(p)) for p in (38, 9)]
            )


def _parse_one(sql: str, origin: str) -> exp.Expression:
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except SqlglotError as exc:
        raise WarehouseError(f"{origin}: not valid BigQuery SQL: {exc}") from exc
    statements = [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]
    if len(statements) != 1:
        raise WarehouseError(
            f"{origin}: expected exactly one SQL statement, found {len(statements)}"
        )
    return statements[0]


def _to_duckdb(query: exp.Expression, origin: str, *, views: bool) -> tuple[str, set[str]]:
    referenced = _strip_dataset(query, origin, views=views)
    _rewrite(query, origin)
    try:
        sql = query.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise WarehouseError(f"{origin}: cannot be translated to DuckDB: {exc}") from exc
    return sql, referenced


def transpile(bigquery_sql: str, origin: str = "<query>") -> str:
    """One BigQuery query (SELECT / WITH) as DuckDB SQL against the warehouse's bare names."""
    statement = _parse_one(bigquery_sql, origin)
    if not isinstance(statement, exp.Query):
        raise WarehouseError(
            f"{origin}: only a query (SELECT or WITH) can be run, got {statement.key}"
        )
    return _to_duckdb(statement, origin, views=False)[0]


def read_view(path: Path) -> _View:
    """Parses and translates one sql/views file."""
    origin = str(path)
    statement = _parse_one(path.read_text(), origin)
    if not (isinstance(statement, exp.Create) and statement.kind == "VIEW"):
        raise WarehouseError(
            f"{origin}: expected CREATE [OR REPLACE | MATERIALIZED] VIEW {DATASET}.<name>"
        )
    target = statement.this.this if isinstance(statement.this, exp.Schema) else statement.this
    if _dataset_of(target) != DATASET or target.name != path.stem:
        raise WarehouseError(
            f"{origin}: creates {target.sql(dialect='bigquery')}; the file must create "
            f"{DATASET}.{path.stem} (view name = file name)"
        )
    properties = statement.args.get("properties")
    materialized = properties is not None and any(
        isinstance(p, exp.MaterializedProperty) for p in properties.expressions
    )
    query = statement.expression
    if not isinstance(query, exp.Query):
        raise WarehouseError(f"{origin}: the view has no SELECT")
    sql, referenced = _to_duckdb(query, origin, views=True)
    return _View(path.stem, path, materialized, sql, frozenset(referenced - {path.stem}))


def view_files(sql_dir: Path) -> list[Path]:
    """Every .sql file under sql_dir/views (sql/views/<domain>/<name>.sql); none is skipped."""
    return sorted((Path(sql_dir) / "views").rglob("*.sql"))


# ---------------------------------------------------------------------------------- loading
def _connect(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=read_only)
    # DATE(ts), FORMAT_TIMESTAMP and TIMESTAMPTZ display follow the session zone; BigQuery's is UTC.
    con.execute("SET TimeZone = 'UTC'")
    return con


def _load_table(con, table: str, files: list[Path]) -> None:
    fields = json.loads((SCHEMA_DIR / "bigquery" / f"{table}.json").read_text())
    con.execute(create_table_sql(table, fields))
    if not files:
        return
    paths = ", ".join(_sql_string(str(p)) for p in files)
    # BY NAME + the contract's DDL: an unknown column or a NULL in a REQUIRED one fails the load.
    try:
        con.execute(
            f"INSERT INTO {_quote(table)} BY NAME "
            f"SELECT * FROM read_parquet([{paths}], union_by_name = true)"
        )
    except duckdb.Error as exc:
        raise WarehouseError(
            f"table {table}: cannot load {len(files)} Parquet file(s): {exc}"
        ) from exc


def _load_alerts(con, topic: str, path: Path) -> None:
    model, table = TOPICS[topic], alert_table_name(topic)
    con.execute(create_table_sql(table, bigquery_fields(model)))
    if not path.exists():
        return
    rows = []
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(to_row(model.model_validate_json(line)))
            except ValidationError as exc:
                raise WarehouseError(
                    f"{path}:{number}: not a valid {model.__name__}: {exc}"
                ) from exc
    con.register("_alerts_in", pa.Table.from_pylist(rows, schema=arrow_schema(model)))
    try:
        con.execute(f"INSERT INTO {_quote(table)} BY NAME SELECT * FROM _alerts_in")
    finally:
        con.unregister("_alerts_in")


def _create_views(con, views: list[_View], known: set[str], report: WarehouseReport) -> None:
    by_name: dict[str, _View] = {}
    for view in views:
        if view.name in by_name:
            raise WarehouseError(
                f"{view.path}: view {view.name} is also defined in {by_name[view.name].path}"
            )
        if view.name in known:
            raise WarehouseError(f"{view.path}: view {view.name} has the name of a table")
        by_name[view.name] = view
    for view in views:
        unknown = sorted(view.depends_on - known - set(by_name))
        if unknown:
            raise WarehouseError(
                f"{view.path}: references unknown table(s) {', '.join(f'{DATASET}.{u}' for u in unknown)}"
            )
    sorter = graphlib.TopologicalSorter(
        {v.name: sorted(v.depends_on & set(by_name)) for v in views}
    )
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise WarehouseError(f"views depend on each other in a cycle: {exc.args[1]}") from exc
    for name in order:
        view = by_name[name]
        try:
            con.execute(f"CREATE VIEW {_quote(name)} AS {view.sql}")
        except duckdb.Error as exc:
            raise WarehouseError(
                f"{view.path}: DuckDB refused the translated view: {exc}\n{view.sql}"
            ) from exc
        report.views.append(name)
        if view.materialized:
            report.notes.append(f"materialized view {name} created as a plain view in DuckDB")


def build_warehouse(
    output_dir: str | Path, sql_dir: str | Path | None = None, db_path: str | Path | None = None
) -> WarehouseReport:
    """(Re)creates OUT/warehouse.duckdb from OUT/tables, OUT/alerts and the views in sql_dir.

    ``sql_dir`` is the directory holding ``views/<domain>/<name>.sql`` (default: the repository's
    ``sql/``). The file is built beside its destination and moved into place only when complete,
    so a failed build leaves the previous warehouse untouched.
    """
    out = Path(output_dir)
    sql_root = Path(sql_dir) if sql_dir is not None else DEFAULT_SQL_DIR
    target = Path(db_path) if db_path is not None else out / WAREHOUSE_FILE
    # Translate every view first: a bad SQL file fails before anything is written.
    views = [read_view(path) for path in view_files(sql_root)]

    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    for stale in (building, building.with_name(building.name + ".wal")):
        stale.unlink(missing_ok=True)
    report = WarehouseReport(db_path=target)
    try:
        con = _connect(building)
        try:
            empty = []
            for table in TABLES:
                files = sorted((out / "tables" / table).glob("*.parquet"))
                _load_table(con, table, files)
                if not files:
                    empty.append(table)
            alerts_missing = []
            for topic in ALERT_TOPICS:
                path = out / "alerts" / f"{topic}.jsonl"
                _load_alerts(con, topic, path)
                if not path.exists():
                    alerts_missing.append(alert_table_name(topic))
            known = set(TABLES) | {alert_table_name(t) for t in ALERT_TOPICS}
            for name in [*TABLES, *(alert_table_name(t) for t in ALERT_TOPICS)]:
                report.tables[name] = con.execute(
                    f"SELECT count(*) FROM {_quote(name)}"
                ).fetchone()[0]
            if empty:
                report.notes.append(
                    f"no Parquet files for {', '.join(empty)}: created empty from schemas/bigquery"
                )
            if alerts_missing:
                report.notes.append(f"no alert file for {', '.join(alerts_missing)}: created empty")
            _create_views(con, views, known, report)
            con.execute("CHECKPOINT")
        finally:
            con.close()
    except BaseException:
        building.unlink(missing_ok=True)
        raise
    target.with_name(target.name + ".wal").unlink(missing_ok=True)  # never replay an old log
    os.replace(building, target)
    return report


def run_sql(db_path: str | Path, bigquery_sql: str) -> pa.Table:
    """Runs one BigQuery query against the warehouse file, read-only; returns an Arrow table."""
    sql = transpile(bigquery_sql)
    if not Path(db_path).exists():
        raise WarehouseError(f"no warehouse at {db_path}; build it with `defi-risk warehouse`")
    con = _connect(Path(db_path), read_only=True)
    with contextlib.closing(con):
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise WarehouseError(f"query failed in DuckDB: {exc}\n{sql}") from exc


def warehouse_command(args) -> int:
    report = build_warehouse(args.output_dir)
    print(
        f"warehouse {Path(args.output_dir) / 'warehouse.duckdb'}: {len(report.tables)} tables, {len(report.views)} views"
    )
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def _print_frame(frame, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        import pandas as pd

        with pd.option_context(
            "display.max_rows", 200, "display.max_columns", 50, "display.width", 200
        ):
            print(frame.to_string(index=False))


def sql_command(args) -> int:
    frame = run_sql(Path(args.output_dir) / "warehouse.duckdb", args.query)
    _print_frame(frame if hasattr(frame, "to_csv") else frame.to_pandas(), args.format)
    return 0


def query_command(args) -> int:
    args.query = f"SELECT * FROM risk.{args.view}" + (f" LIMIT {args.limit}" if args.limit else "")
    return sql_command(args)
