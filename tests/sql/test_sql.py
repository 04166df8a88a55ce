"""The generated BigQuery DDL (sql/ddl) matches the schemas; the parse every SQL file gets
(tests/runners/local/test_warehouse.py) can fail.

pytest tests/sql/test_sql.py
"""

from __future__ import annotations

import json

import pytest
import sqlglot
from sqlglot import ErrorLevel, exp

from schemas.codegen import PARTITION_EXPIRATION_DAYS, SCHEMA_DIR, table_ddl
from schemas.registry import TABLES
from tests.support.paths import ROOT

SQL_DIR = ROOT / "sql"


def parse_bigquery(text: str) -> list[exp.Expression]:
    """Strict: a parse error raises, and so does a statement sqlglot only kept as raw text."""
    # ErrorLevel.RAISE, not the string "RAISE": sqlglot ignores a string and only warns.
    statements = [
        s for s in sqlglot.parse(text, read="bigquery", error_level=ErrorLevel.RAISE) if s
    ]
    raw = [s.sql() for s in statements if isinstance(s, exp.Command)]
    if raw:
        raise ValueError(f"not parsed, kept as raw text: {raw}")
    return statements


def test_the_lint_fails_on_broken_sql():
    with pytest.raises((sqlglot.errors.ParseError, ValueError)):
        parse_bigquery("CREATE TABLE risk.x (a STRING NOT NULL, b INT64")
    with pytest.raises((sqlglot.errors.ParseError, ValueError)):
        parse_bigquery("SELECT a FROM risk.t WHERE (a = 1")


def test_there_is_one_ddl_file_per_table_and_views_exist():
    assert {p.stem for p in (SQL_DIR / "ddl").glob("*.sql")} == set(TABLES)
    assert list((SQL_DIR / "views").rglob("*.sql"))


@pytest.mark.parametrize("table", sorted(TABLES))
def test_ddl_columns_partitioning_and_clustering_follow_the_schema(table):
    (stmt,) = parse_bigquery((SQL_DIR / "ddl" / f"{table}.sql").read_text())
    assert stmt.this.sql("bigquery").startswith(f"risk.{table}")
    columns = {c.name: c for c in stmt.find_all(exp.ColumnDef) if c.parent is stmt.this}
    bq = json.loads((SCHEMA_DIR / "bigquery" / f"{table}.json").read_text())
    assert list(columns) == [f["name"] for f in bq]
    for f in bq:
        required = any(
            isinstance(c.kind, exp.NotNullColumnConstraint) for c in columns[f["name"]].constraints
        )
        assert required == (f["mode"] == "REQUIRED"), f["name"]
        assert (f["mode"] == "REPEATED") == columns[f["name"]].kind.is_type("array"), f["name"]
    model = TABLES[table]
    props = stmt.args["properties"].sql("bigquery")
    assert f"PARTITION BY DATE({model.event_time_field})" in props
    assert f"CLUSTER BY {', '.join(model.key_fields[:4])}" in props
    days = PARTITION_EXPIRATION_DAYS.get(table)
    assert ("partition_expiration_days" in props) == (days is not None)
    if days:
        assert f"partition_expiration_days={days}" in props.replace(" ", "")


def test_a_partition_column_that_is_not_a_time_is_refused(monkeypatch):
    model = TABLES["prices"]
    monkeypatch.setattr(model, "event_time_field", "asset")
    with pytest.raises(ValueError, match="partition column asset"):
        table_ddl("prices")
