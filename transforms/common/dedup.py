"""DropDuplicates: one copy of each message goes on; the others are ``duplicate`` dead letters.

A duplicate is the same message delivered twice (a Pub/Sub redelivery, a replayed file line): the
same ``Contract.message_id()`` (``event_id`` where the contract has one; the rule of each topic
is ``schemas.registry.DUPLICATE_RULES``). Stages downstream then see each message once, so a
redelivered transfer is screened once and a repeated trade or profile counts once.

- Batch: a GroupByKey on the id; the copy kept is the smallest by its JSON, so the choice does not
  depend on arrival order even when two copies disagree.
- Streaming: a stateful DoFn per id remembers it for ``ttl_s`` seconds of event time after the
  copy it kept (an event-time timer clears the key, so state stays bounded); the first copy to
  arrive wins. A copy arriving after the TTL is let through: choose a TTL at least as long as the
  subscription's message retention (7 days by default here).

    pytest tests/transforms/common/test_dedup.py
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.base import Contract
from schemas.serde import to_json
from transforms.common.dead_letter import ALERTS_TAG, DEAD_LETTER_TAG, MAIN_TAG, composite_outputs
from transforms.common.refusals import refuse

DEFAULT_TTL_S = 7 * 86_400  # Pub/Sub's default message retention


def _duplicate(topic: str, stage: str, record: Contract):
    return refuse(
        source=topic,
        stage=stage,
        reason="duplicate",
        error=f"message {record.message_id()} was already delivered",
        raw=to_json(record),
        event_time=record.event_timestamp(),
    )


def _stamped(record: Contract):
    return TimestampedValue(record, Timestamp.from_utc_datetime(record.event_timestamp()))


class KeepFirstOfGroupFn(beam.DoFn):
    """Batch: every copy of an id arrives in one group."""

    def __init__(self, topic: str, stage: str):
        self.topic, self.stage = topic, stage

    def process(self, element):
        _, copies = element
        copies = list(copies)
        if len(copies) > 1:
            copies.sort(key=to_json)
        yield _stamped(copies[0])
        for record in copies[1:]:
            yield _duplicate(self.topic, self.stage, record)


class KeepFirstSeenFn(beam.DoFn):
    """Streaming: the first copy of an id passes; later ones within the TTL are dead letters."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, topic: str, stage: str, ttl_s: int):
        self.topic, self.stage, self.ttl_s = topic, stage, ttl_s

    def process(
        self,
        element,
        ts=beam.DoFn.TimestampParam,
        seen=beam.DoFn.StateParam(SEEN),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ):
        _, record = element
        if seen.read():
            yield _duplicate(self.topic, self.stage, record)
            return
        seen.write(True)
        expire.set(ts + self.ttl_s)
        yield record

    @on_timer(EXPIRE)
    def on_expire(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class DropDuplicates(beam.PTransform):
    """Parsed records of one topic -> the same records once (``MAIN_TAG``), no alerts, and a
    ``duplicate`` dead letter for each further copy."""

    def __init__(self, topic: str, streaming: bool = False, ttl_s: int = DEFAULT_TTL_S):
        super().__init__()
        if ttl_s <= 0:
            raise ValueError(f"the duplicate TTL must be positive seconds, got {ttl_s}")
        self.topic, self.streaming, self.ttl_s = topic, streaming, ttl_s

    def expand(self, records):
        stage = self.label
        keyed = records | "KeyById" >> beam.Map(lambda r: (r.message_id(), r)).with_output_types(
            tuple[str, Any]
        )
        if self.streaming:
            out = keyed | "KeepFirstSeen" >> beam.ParDo(
                KeepFirstSeenFn(self.topic, stage, self.ttl_s)
            ).with_outputs(ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG)
            return composite_outputs(out)
        out = (
            keyed
            | "Global" >> beam.WindowInto(window.GlobalWindows())
            | "GroupById" >> beam.GroupByKey()
            | "KeepFirst"
            >> beam.ParDo(KeepFirstOfGroupFn(self.topic, stage)).with_outputs(
                ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG
            )
        )
        return composite_outputs(out)
