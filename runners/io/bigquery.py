"""The BigQuery edge of the production job: table rows as BigQuery takes them, and the write.

``write_table`` writes one table with ``WriteToBigQuery`` (``CREATE_NEVER``: Terraform owns the
tables, partitioning and clustering; ``WRITE_APPEND``) by one of ``WRITE_METHODS``:

- ``STORAGE_WRITE_API``: exactly-once, through Beam's Java expansion service. Its construction
  downloads the Java expansion jar, so it cannot be built offline: the graph tests build the
  other two methods;
- ``STREAMING_INSERTS``: at-least-once with Beam's per-row insert ids (a retried insert is
  deduplicated by BigQuery), failed rows retried on transient errors only and counted;
- ``FILE_LOADS``: load jobs, every ``triggering_frequency_s`` seconds in streaming.

Rows are converted to what BigQuery's JSON API expects (``bigquery_row``): NUMERIC as a decimal
string (never a float), TIMESTAMP as ``YYYY-MM-DD HH:MM:SS.ffffff UTC``, JSON as its text,
records as nested objects, column by column of ``schemas/bigquery/<table>.json``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from pydantic import BaseModel

from schemas.codegen import bigquery_fields
from schemas.registry import TABLES
from schemas.serde import to_numeric

LOG = logging.getLogger(__name__)
WRITE_METHODS = ("STORAGE_WRITE_API", "STREAMING_INSERTS", "FILE_LOADS")


# ------------------------------------------------------------------------------- converters
def _bq_value(value: Any, field: dict, json_as_text: bool = True) -> Any:
    if value is None:
        return None
    if field["mode"] == "REPEATED":
        return [_bq_value(v, {**field, "mode": "NULLABLE"}, json_as_text) for v in value]
    kind = field["type"]
    if kind == "RECORD":
        sub = {f["name"]: f for f in field["fields"]}
        data = value.model_dump() if isinstance(value, BaseModel) else value
        return {k: _bq_value(data.get(k), f, json_as_text) for k, f in sub.items()}
    if kind in ("NUMERIC", "BIGNUMERIC"):
        # A decimal string: a float would lose digits (BigQuery NUMERIC has scale 9).
        return format(to_numeric(Decimal(value)).normalize(), "f")
    if kind == "TIMESTAMP":
        t = value.astimezone(UTC) if isinstance(value, datetime) else value
        return t.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if kind == "DATE":
        return value.isoformat()
    if kind == "JSON":
        # insertAll and the Storage Write API take JSON text; a load job's newline-delimited
        # JSON needs the value itself, or the column would hold one JSON string.
        if json_as_text:
            return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return json.loads(value) if isinstance(value, str) else value
    return value


@cache
def table_fields(table: str) -> tuple[dict, ...]:
    """The table's BigQuery fields, from its model (what schemas/bigquery/<table>.json holds)."""
    return tuple(bigquery_fields(TABLES[table]))


def bigquery_row(table: str, row: BaseModel, method: str = "STREAMING_INSERTS") -> dict:
    """A table row as BigQuery takes it through ``method``, column by column of its schema."""
    as_text = method != "FILE_LOADS"
    return {f["name"]: _bq_value(getattr(row, f["name"]), f, as_text) for f in table_fields(table)}


class ToBigQueryRowFn(beam.DoFn):
    def __init__(self, table: str, method: str):
        self.table, self.method = table, method

    def process(self, row):
        yield bigquery_row(self.table, row, self.method)


class CountFailedRowsFn(beam.DoFn):
    """Rows BigQuery refused after the retries: counted and logged, never silently gone."""

    def __init__(self, table: str):
        self.table = table
        self.failed = Metrics.counter("bigquery", f"failed_rows.{table}")

    def process(self, failed):
        self.failed.inc()
        LOG.error("BigQuery refused a %s row: %s", self.table, str(failed)[:2000])


# ------------------------------------------------------------------------------------ graph
def write_table(
    rows: PCollection,
    table: str,
    table_spec: str,
    method: str,
    streaming: bool,
    triggering_frequency_s: int = 60,
) -> None:
    """Rows of ``table`` into ``table_spec`` (``PROJECT:DATASET.TABLE``) by ``method``."""
    from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
    from apache_beam.io.gcp.bigquery_tools import RetryStrategy

    kwargs: dict[str, Any] = {}
    if method == "STREAMING_INSERTS":
        kwargs["insert_retry_strategy"] = RetryStrategy.RETRY_ON_TRANSIENT_ERROR
    elif streaming:
        kwargs["triggering_frequency"] = triggering_frequency_s
    result = (
        rows
        | f"ToBigQueryRow_{table}" >> beam.ParDo(ToBigQueryRowFn(table, method))
        | f"WriteBigQuery_{table}"
        >> WriteToBigQuery(
            table=table_spec,
            schema={"fields": list(table_fields(table))},
            method=method,
            create_disposition=BigQueryDisposition.CREATE_NEVER,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            **kwargs,
        )
    )
    if method == "STREAMING_INSERTS":
        _ = result.failed_rows | f"CountFailedRows_{table}" >> beam.ParDo(CountFailedRowsFn(table))
