"""ParseEvents: raw JSON or Avro payloads -> typed, event-timestamped records, plus dead letters.

Every input element ends up in exactly one of the two outputs, so
``records in = records out + dead letters``; Beam counters in the namespace ``parse`` count
each side (``<Stage>.in``, ``<Stage>.out``, ``<Stage>.dead_letter.<reason>``).

Run the tests with ``pytest tests/transforms/common/test_parse.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from pydantic import ValidationError

from schemas.base import Contract
from schemas.registry import TOPICS
from schemas.serde import from_avro
from schemas.types import MAX_EVENT_TIME, MAX_RECORD_BYTES, MIN_EVENT_TIME
from transforms.common.dead_letter import (
    ALERTS_TAG,
    DEAD_LETTER_TAG,
    MAIN_TAG,
    composite_outputs,
    make_dead_letter,
    reason_from_validation,
    short_message,
)

PAYLOAD_FORMATS = ("json", "avro", "row")


# Stable step labels (streaming jobs are updated in place by label): never rename one.
STAGE_LABELS = {
    "market.prices.v1": "ParsePrices",
    "settlements.v1": "ParseSettlements",
    "dex.trades.v1": "ParseDexTrades",
    "liquidity.v1": "ParseLiquidity",
    "transfers.v1": "ParseTransfers",
}


def stage_label(topic: str) -> str:
    """The CamelCase step label of the parser of a topic, e.g. ParseDexTrades."""
    if topic in STAGE_LABELS:
        return STAGE_LABELS[topic]
    stem = topic.rsplit(".", 1)[0]
    return "Parse" + "".join(part.capitalize() for part in stem.replace("_", ".").split("."))


def _best_effort_event_time(model: type[Contract], raw: Any) -> datetime | None:
    """The record's event time for the dead-letter row, when it can be read at all: an aware
    time in the plausible range, else None (the row then has no event time)."""
    try:
        if isinstance(raw, bytes | str) and len(raw) > MAX_RECORD_BYTES:
            return None
        data = json.loads(raw) if isinstance(raw, bytes | str) else raw
        value = data.get(model.event_time_field) if isinstance(data, dict) else None
        if not isinstance(value, str) or len(value) > 40:
            return None
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is None:
            return None
        when = when.astimezone(UTC)
        return when if MIN_EVENT_TIME <= when < MAX_EVENT_TIME else None
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError):
        return None  # an unreadable time is simply unknown on the dead-letter row


def decode(model: type[Contract], raw: Any, payload_format: str) -> Contract:
    """Decode one payload into the model; raises ValidationError or ValueError."""
    if payload_format == "json":
        return model.model_validate_json(raw)
    if payload_format == "avro":
        try:
            return from_avro(model, raw)
        except ValidationError:
            raise
        except Exception as exc:  # fastavro raises many types on corrupt bytes
            raise ValueError(f"invalid Avro payload: {type(exc).__name__}: {exc}") from exc
    if payload_format == "row":
        return model.model_validate(raw)
    raise ValueError(f"unknown payload format {payload_format!r}; choose one of {PAYLOAD_FORMATS}")


class Refused(Exception):
    """One payload refused, with its dead-letter reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


class ParseEventFn(beam.DoFn):
    """Decodes one payload; emits a TimestampedValue record or a tagged dead letter."""

    def __init__(
        self, topic: str, stage: str, payload_format: str, known_assets: Iterable[str] | None
    ):
        self.topic = topic
        self.stage = stage
        self.payload_format = payload_format
        self.known_assets = frozenset(known_assets) if known_assets else None
        self.model = TOPICS[topic]
        self.records_in = Metrics.counter("parse", f"{stage}.in")
        self.records_out = Metrics.counter("parse", f"{stage}.out")
        self._reason_counters: dict[str, Any] = {}

    def _dead(self, raw: Any, reason: str, error: str):
        counter = self._reason_counters.get(reason)
        if counter is None:
            counter = self._reason_counters[reason] = Metrics.counter(
                "parse", f"{self.stage}.dead_letter.{reason}"
            )
        counter.inc()
        row = make_dead_letter(
            source=self.topic,
            stage=self.stage,
            reason=reason,
            error=error,
            raw=raw,
            event_time=_best_effort_event_time(self.model, raw),
            binary=self.payload_format == "avro",
        )
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, row)

    def process(self, raw):
        self.records_in.inc()
        try:
            record = self._decode(raw)
        except Refused as refusal:
            yield self._dead(raw, refusal.reason, refusal.message)
            return
        self.records_out.inc()
        yield TimestampedValue(record, Timestamp.from_utc_datetime(record.event_timestamp()))

    def _decode(self, raw: Any) -> Contract:
        """The typed record, or ``Refused``: no exception from one payload escapes."""
        if isinstance(raw, bytes | str) and len(raw) > MAX_RECORD_BYTES:
            raise Refused("too_large", f"record of {len(raw):,} bytes exceeds {MAX_RECORD_BYTES:,}")
        try:
            record = decode(self.model, raw, self.payload_format)
        except ValidationError as err:
            raise Refused(reason_from_validation(err), short_message(err)) from err
        except RecursionError as err:
            raise Refused("invalid_json", "nested too deeply") from err
        except (ValueError, UnicodeDecodeError) as err:
            reason = "invalid_avro" if self.payload_format == "avro" else "invalid_payload"
            raise Refused(reason, short_message(err)) from err
        except Exception as err:  # any other failure is this payload's, not the run's
            raise Refused("unparseable", short_message(err)) from err
        asset = getattr(record, "asset", None)
        if self.known_assets is not None and asset is not None and asset not in self.known_assets:
            raise Refused("unknown_asset", f"asset {asset!r} is not in the asset registry")
        return record


class ParseEvents(beam.PTransform):
    """Parses one topic's payloads: typed records (``MAIN_TAG``), no alerts, dead letters.

    ``known_assets``: when given, records whose ``asset`` is not in it are dead letters
    (``unknown_asset``); topics without an ``asset`` field are not checked.
    """

    def __init__(
        self, topic: str, payload_format: str = "json", known_assets: Iterable[str] | None = None
    ):
        super().__init__()
        if topic not in TOPICS:
            raise ValueError(f"unknown topic {topic!r}; known: {sorted(TOPICS)}")
        if payload_format not in PAYLOAD_FORMATS:
            raise ValueError(
                f"unknown payload format {payload_format!r}; choose one of {PAYLOAD_FORMATS}"
            )
        self.topic = topic
        self.payload_format = payload_format
        self.known_assets = tuple(sorted(known_assets)) if known_assets else None

    def expand(self, payloads):
        stage = stage_label(self.topic)
        return composite_outputs(
            payloads
            | "Decode"
            >> beam.ParDo(
                ParseEventFn(self.topic, stage, self.payload_format, self.known_assets)
            ).with_outputs(ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG)
        )
