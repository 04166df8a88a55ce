"""The Pub/Sub edges shared by the live run and the production job.

``read_topics``: one ``ReadFromPubSub`` per input topic of a pipeline, from ``<topic>.sub``, with
event times from the ``ts`` attribute and, off the local runners, ``id_label="event_id"``
(Beam's DirectRunner refuses id_label). ``publish_alerts``: alerts to their topic as schemaless
Avro (``schemas.serde.to_avro``) with ``ts``, ``alert_id`` and ``event_id`` attributes
(``alert_message``). Names and attributes come from ``schemas.topics``.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pvalue import PCollection

from pipelines.graph import topics_for
from schemas.serde import to_avro
from schemas.topics import (
    ID_ATTRIBUTE,
    TIMESTAMP_ATTRIBUTE,
    rfc3339,
    subscription_path,
    topic_path,
)


def is_local_direct_runner(options: PipelineOptions) -> bool:
    """True for Beam's local runners (``StandardOptions.LOCAL_RUNNERS``), which refuse id_label."""
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return True  # Beam's default is the DirectRunner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name in StandardOptions.LOCAL_RUNNERS


def read_label(topic: str) -> str:
    return f"ReadPubSub_{topic}"


def alert_message(alert) -> PubsubMessage:
    """An alert as the Pub/Sub message of its topic: Avro body, ``ts`` and id attributes."""
    alert_id = alert.alert_id
    return PubsubMessage(
        to_avro(alert),
        {
            TIMESTAMP_ATTRIBUTE: rfc3339(alert.event_timestamp()),
            "alert_id": alert_id,
            ID_ATTRIBUTE: alert_id,
        },
    )


def read_topics(
    p: beam.Pipeline, project: str, pipeline: str, id_label: str | None
) -> dict[str, PCollection]:
    """One ``ReadFromPubSub`` per input topic of ``pipeline``, from ``<topic>.sub``, with event
    times from the ``ts`` attribute (the live run and the production job read alike)."""
    return {
        topic: p
        | read_label(topic)
        >> ReadFromPubSub(
            subscription=subscription_path(project, topic),
            timestamp_attribute=TIMESTAMP_ATTRIBUTE,
            id_label=id_label,
        )
        for topic in topics_for(pipeline)
    }


def publish_alerts(alerts: PCollection, project: str, topic: str) -> None:
    """Alerts to their Pub/Sub topic as Avro messages with ``ts`` and id attributes."""
    _ = (
        alerts
        | f"ToAlertMessage_{topic}" >> beam.Map(alert_message).with_output_types(PubsubMessage)
        | f"WritePubSub_{topic}"
        >> WriteToPubSub(topic=topic_path(project, topic), with_attributes=True)
    )
