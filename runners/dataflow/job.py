"""The production job: Pub/Sub subscriptions in, BigQuery tables and Pub/Sub alert topics out.

    defi-risk deploy --project P --region R --template-bucket B --dry-run   # the gcloud commands
    python -m runners.dataflow.job --runner DataflowRunner --project P --region R --streaming \\
        --temp_location gs://B/tmp --pipeline all                          # what the template runs

``build_production`` wires ``pipelines.graph.build`` (the graph every runner runs, with the same
stable step labels) between:

- sources: one ``ReadFromPubSub`` per input topic, from ``projects/P/subscriptions/<topic>.sub``,
  with ``timestamp_attribute="ts"`` (event time) and ``id_label="event_id"`` (Pub/Sub redeliveries
  are dropped by Dataflow before the graph sees them);
- tables: ``WriteToBigQuery`` into ``<bq_project>:<dataset>.<table>`` by ``--bq_write_method``
  (``STORAGE_WRITE_API``, the streaming default, ``STREAMING_INSERTS`` or ``FILE_LOADS``; what
  each guarantees and how rows are converted: ``runners/io/bigquery.py``);
- alerts: ``WriteToPubSub`` of schemaless Avro bodies with ``ts`` and ``alert_id`` attributes
  (``runners.io.pubsub.alert_message``, the same messages the local live run publishes).
"""

from __future__ import annotations

import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.pvalue import PCollection

from pipelines.graph import build, is_table
from pipelines.options import RiskPipelineOptions
from runners.io.bigquery import WRITE_METHODS, write_table
from runners.io.pubsub import publish_alerts, read_topics
from schemas.registry import ALERT_TOPICS, DATASET
from schemas.topics import ID_ATTRIBUTE


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


def build_production(p: beam.Pipeline, options: PipelineOptions) -> dict[str, PCollection]:
    """Pub/Sub sources, the graph, BigQuery and Pub/Sub sinks; returns ``build()``'s outputs.

    Builds offline with STREAMING_INSERTS or FILE_LOADS; never runs the pipeline.
    """
    gcp = options.view_as(GoogleCloudOptions)
    prod = options.view_as(ProductionOptions)
    project = prod.pubsub_project or gcp.project
    if not project:
        raise ValueError("--project is required (the project of the subscriptions and tables)")
    streaming = options.view_as(StandardOptions).streaming
    if not streaming:
        raise ValueError(
            "the production job reads Pub/Sub and needs --streaming (batch runs over files: "
            "`defi-risk run`; history: the backfill)"
        )
    pipeline = options.view_as(RiskPipelineOptions).pipeline
    # Off the local runners Pub/Sub redeliveries are dropped by id before the graph sees them.
    outputs = build(p, options, read_topics(p, project, pipeline, ID_ATTRIBUTE))
    bq_project = prod.bq_project or gcp.project
    for name, pcoll in outputs.items():
        if is_table(name):
            write_table(
                pcoll,
                name,
                f"{bq_project}:{prod.bq_dataset}.{name}",
                prod.write_method(streaming),
                streaming,
                prod.bq_triggering_frequency_s,
            )
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
