"""build(): assemble the transform graph from sources; never runs it.

The graph is the same on every runner: sources (files, TestStream, Pub/Sub) and sinks (Parquet,
BigQuery, Pub/Sub) are chosen at the edges by the caller. ``build`` returns the PCollections by
name (table names such as ``prices`` and ``dead_letter``, alert topics such as
``alerts.margin.v1``, and ``parsed:<topic>``) so tests can assert on them.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.pvalue import PCollection

from pipelines.options import require_valid
from pipelines.stages import PIPELINE_TOPICS, stages_for
from schemas.registry import ALERT_TOPICS, INPUT_TOPICS
from transforms.common.dead_letter import ALERTS_TAG, DEAD_LETTER_TAG, MAIN_TAG
from transforms.common.dedup import DropDuplicates
from transforms.common.parse import ParseEvents, stage_label

# Streams whose records carry an ``asset`` that must be priceable.
ASSET_CHECKED_TOPICS = ("market.prices.v1", "settlements.v1")
# Topics whose copies are dropped right after parsing (``duplicate`` dead letters), so every
# stage reading them sees each message once. Prices and settlements are not among them: their
# stages order each feed's and account's events and refuse a redelivery themselves
# (``duplicate_update``, ``duplicate``), and they carry most of the volume.
DEDUP_TOPICS = ("dex.trades.v1", "liquidity.v1", "transfers.v1", "accounts.profiles.v1")


def dedup_label(topic: str) -> str:
    """The step label of a topic's duplicate filter: ParseDexTrades -> DedupDexTrades."""
    return "Dedup" + stage_label(topic).removeprefix("Parse")


def topics_for(pipeline: str) -> tuple[str, ...]:
    if pipeline == "all":
        return INPUT_TOPICS
    return PIPELINE_TOPICS[pipeline]


def build(
    pipeline: beam.Pipeline, options, sources: dict[str, PCollection]
) -> dict[str, PCollection]:
    """Wires parsing, every registered stage of the chosen pipeline, and the dead-letter flatten.

    ``sources`` maps an input topic to a PCollection of raw payloads (bytes/str for json and avro,
    dicts for row). Topics of the chosen pipeline that are missing from ``sources`` are skipped.
    """
    opts = require_valid(options)  # every option in range before a stage is made
    streaming = options.view_as(StandardOptions).streaming
    unknown = set(sources) - set(INPUT_TOPICS)
    if unknown:
        raise ValueError(f"unknown input topics {sorted(unknown)}; known: {list(INPUT_TOPICS)}")

    streams: dict[str, PCollection] = {}
    dead_letters: list[PCollection] = []
    for topic in topics_for(opts.pipeline):
        if topic not in sources:
            continue
        assets = opts.assets() if topic in ASSET_CHECKED_TOPICS else None
        parsed = sources[topic] | stage_label(topic) >> ParseEvents(
            topic, opts.payload_format, assets
        )
        streams[topic] = parsed[MAIN_TAG]
        dead_letters.append(parsed[DEAD_LETTER_TAG])
        if topic in DEDUP_TOPICS:
            once = streams[topic] | dedup_label(topic) >> DropDuplicates(topic, streaming)
            streams[topic] = once[MAIN_TAG]
            dead_letters.append(once[DEAD_LETTER_TAG])

    tables: dict[str, list[PCollection]] = {}
    alerts: dict[str, list[PCollection]] = {}
    for stage in stages_for(opts.pipeline):
        if not stage.enabled(opts) or any(name not in streams for name in stage.inputs):
            continue
        composite = stage.make(opts, streaming)
        if stage.source:
            streams[stage.stream] = pipeline | stage.label >> composite
            continue
        inputs = [streams[name] for name in stage.inputs]
        for name, label in stage.optional.items():
            inputs.append(streams[name] if name in streams else pipeline | label >> beam.Create([]))
        out = (inputs[0] if len(inputs) == 1 else tuple(inputs)) | stage.label >> composite
        for tag, table in stage.tables.items():
            tables.setdefault(table, []).append(out[tag])
        if stage.alerts:
            alerts.setdefault(stage.alerts, []).append(out[ALERTS_TAG])
        dead_letters.append(out[DEAD_LETTER_TAG])
        if stage.stream:
            streams[stage.stream] = out[MAIN_TAG]

    result: dict[str, PCollection] = {
        f"parsed:{t}": streams[t] for t in INPUT_TOPICS if t in streams
    }
    for name, parts in tables.items():
        result[name] = parts[0] if len(parts) == 1 else parts | f"Flatten_{name}" >> beam.Flatten()
    for topic, parts in alerts.items():
        result[topic] = (
            parts[0] if len(parts) == 1 else parts | f"Flatten_{topic}" >> beam.Flatten()
        )
    # Every dead letter of every step lands in one table.
    result["dead_letter"] = (
        dead_letters | "FlattenDeadLetters" >> beam.Flatten()
        if dead_letters
        else pipeline | "NoDeadLetters" >> beam.Create([])
    )
    return result


def is_table(name: str) -> bool:
    """A table output of ``build()``: not ``parsed:<topic>`` and not an alert topic."""
    return ":" not in name and name not in ALERT_TOPICS
