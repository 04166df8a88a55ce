"""The production job: Pub/Sub subscriptions in, BigQuery tables and Pub/Sub alert topics out.

    defi-risk deploy --project P --region R --template-bucket B --dry-run   # the gcloud commands
    python -m pipelines.production --runner DataflowRunner --project P --region R --streaming \\
        --temp_location gs://B/tmp --pipeline all                          # what the template runs

``build_production`` wires ``pipelines.graph.build`` (the graph every runner runs, with the same
stable step labels) between:

- sources: one ``ReadFromPubSub`` per input topic, from ``projects/P/subscriptions/<topic>.sub``,
  with ``timestamp_attribute="ts"`` (event time) and ``id_label="event_id"`` (Pub/Sub redeliveries
  are dropped by Dataflow before the graph sees them);
- tables: ``WriteToBigQuery`` into ``<bq_project>:<dataset>.<table>`` with the schema of
  ``schemas/bigquery/<table>.json``; ``CREATE_NEVER`` (Terraform owns the tables, partitioning and
  clustering), ``WRITE_APPEND``. The method is ``--bq_write_method``:
  - ``STORAGE_WRITE_API`` (default in streaming): exactly-once, through Beam's Java expansion
    service. Its construction downloads the Java expansion jar, so it cannot be built offline:
    the graph tests build the other two methods;
  - ``STREAMING_INSERTS``: at-least-once with Beam's per-row insert ids (a retried insert is
    deduplicated by BigQuery), failed rows retried on transient errors only and counted;
  - ``FILE_LOADS`` (default in batch): load jobs, every ``--bq_triggering_frequency_s`` seconds
    in streaming.
  Rows are converted to what BigQuery's JSON API expects (``bigquery_row``): NUMERIC as a decimal
  string (never a float), TIMESTAMP as ``YYYY-MM-DD HH:MM:SS.ffffff UTC``, JSON as its text,
  records as nested objects;
- alerts: ``WriteToPubSub`` of schemaless Avro bodies with ``ts`` and ``alert_id`` attributes
  (``pipelines.live.alert_message``, the same messages the local live run publishes).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.pvalue import PCollection
from pydantic import BaseModel

from pipelines.graph import build
from pipelines.live import ID_ATTRIBUTE, is_table, publish_alerts, read_topics
from pipelines.options import RiskPipelineOptions
from schemas.codegen import bigquery_fields
from schemas.registry import ALERT_TOPICS, DATASET, TABLES

LOG = logging.getLogger(__name__)
WRITE_METHODS = ("STORAGE_WRITE_API", "STREAMING_INSERTS", "FILE_LOADS")


class ProductionOptions(PipelineOptions):
    """Where the production job reads and writes (the flex template's parameters)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--bq_dataset", default=DATASET, help="BigQuery dataset of the tables (Terraform's)."
        )
        parser.add_argument(
            "--bq_project",
            default=None,
            help="Project of the BigQuery dataset (default: --project).",
        )
        parser.add_argument(
            "--bq_write_method",
            default=None,
            choices=WRITE_METHODS,
            help="How rows reach BigQuery: STORAGE_WRITE_API (default in streaming; exactly "
            "once), STREAMING_INSERTS (at least once, with insert ids) or FILE_LOADS (default "
            "in batch).",
        )
        parser.add_argument(
            "--bq_triggering_frequency_s",
            type=int,
            default=60,
            help="Streaming FILE_LOADS and STORAGE_WRITE_API: seconds between commits.",
        )
        parser.add_argument(
            "--pubsub_project",
            default=None,
            help="Project of the subscriptions and alert topics (default: --project).",
        )

    def write_method(self, streaming: bool) -> str:
        return self.bq_write_method or ("STORAGE_WRITE_API" if streaming else "FILE_LOADS")


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
        return format(Decimal(value).quantize(Decimal("1e-9")).normalize(), "f")
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
def write_table(rows: PCollection, table: str, options: PipelineOptions) -> None:
    from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
    from apache_beam.io.gcp.bigquery_tools import RetryStrategy

    prod = options.view_as(ProductionOptions)
    streaming = options.view_as(StandardOptions).streaming
    project = prod.bq_project or options.view_as(GoogleCloudOptions).project
    method = prod.write_method(streaming)
    kwargs: dict[str, Any] = {}
    if method == "STREAMING_INSERTS":
        kwargs["insert_retry_strategy"] = RetryStrategy.RETRY_ON_TRANSIENT_ERROR
    elif streaming:
        kwargs["triggering_frequency"] = prod.bq_triggering_frequency_s
    result = (
        rows
        | f"ToBigQueryRow_{table}" >> beam.ParDo(ToBigQueryRowFn(table, method))
        | f"WriteBigQuery_{table}"
        >> WriteToBigQuery(
            table=f"{project}:{prod.bq_dataset}.{table}",
            schema={"fields": list(table_fields(table))},
            method=method,
            create_disposition=BigQueryDisposition.CREATE_NEVER,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            **kwargs,
        )
    )
    if method == "STREAMING_INSERTS":
        _ = result.failed_rows | f"CountFailedRows_{table}" >> beam.ParDo(CountFailedRowsFn(table))


def build_production(p: beam.Pipeline, options: PipelineOptions) -> dict[str, PCollection]:
    """Pub/Sub sources, the graph, BigQuery and Pub/Sub sinks; returns ``build()``'s outputs.

    Builds offline with STREAMING_INSERTS or FILE_LOADS; never runs the pipeline.
    """
    gcp = options.view_as(GoogleCloudOptions)
    prod = options.view_as(ProductionOptions)
    project = prod.pubsub_project or gcp.project
    if not project:
        raise ValueError("--project is required (the project of the subscriptions and tables)")
    if not options.view_as(StandardOptions).streaming:
        raise ValueError(
            "the production job reads Pub/Sub and needs --streaming (batch runs over files: "
            "`defi-risk run`; history: the backfill)"
        )
    pipeline = options.view_as(RiskPipelineOptions).pipeline
    # Off the local runners Pub/Sub redeliveries are dropped by id before the graph sees them.
    outputs = build(p, options, read_topics(p, project, pipeline, ID_ATTRIBUTE))
    for name, pcoll in outputs.items():
        if is_table(name):
            write_table(pcoll, name, options)
    for topic in ALERT_TOPICS:
        if topic in outputs:
            publish_alerts(outputs[topic], project, topic)
    return outputs


def main(argv: list[str] | None = None) -> None:
    """The flex template's entry point: every option comes from the launch parameters."""
    logging.basicConfig(level=logging.INFO)
    options = PipelineOptions(argv if argv is not None else sys.argv[1:], save_main_session=False)
    with beam.Pipeline(options=options) as p:
        build_production(p, options)


if __name__ == "__main__":
    main()
