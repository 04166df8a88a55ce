"""SanctionsJoin: every transfer's two addresses screened against the list version in force.

    pytest tests/test_sanctions_join.py

The list is an input stream of ``ListVersion``s (``transforms.sanctions_list``), not a
processing-time side input: each version takes effect at 00:00 UTC of its effective date, in
event time, so a replay screens a transfer against the list that was in force when it happened,
and a new version (a delisting too) applies from its date on. Versions are sent to every screening
shard; transfers are spread over the shards by event id. ``ScreenShardFn`` buffers both and, on an
event-time timer, screens the transfers in order against the latest version effective at their
time. On Dataflow the versions come from the store that ``defi-risk sanctions load`` writes,
watched by a file-matching source; the DirectRunner cannot run such a polling source in streaming
(BEAM-FACTS: PeriodicImpulse and MatchContinuously fail there), so the tests feed versions through
a TestStream, which exercises the same refresh logic.

Output: one ``compliance_screenings`` row per screened address (``screening_type`` sanctions;
``blocked`` with risk 100 on a list hit, ``clear`` with 0 otherwise; the list version always), and
a ``ComplianceAlert`` per hit. A transfer with no version in force yet is a dead letter
(``no_sanctions_list``): screening it "clear" against no list would be a false all-clear.
"""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime, time
from typing import Any

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue

from schemas.base import deterministic_id
from schemas.events import ComplianceAlert, Transfer
from schemas.serde import to_json
from schemas.tables import ComplianceScreeningRow
from schemas.types import epoch_micros
from transforms.dead_letter import DEAD_LETTER_TAG, make_dead_letter
from transforms.event_timers import arm_buffer_timer, emit_timestamp, take_due
from transforms.sanctions_list import ListVersion, SanctionsIndex
from transforms.var import shard_of

ALERTS_TAG = "alerts"
RULE_ID = "ofac_sdn_digital_currency"


def transfer_order(t: Transfer) -> tuple:
    """The chain's order of transfers (event time, block, log index; the id breaks ties)."""
    return (t.event_time, t.block_number, t.log_index, t.event_id)


def transfer_us(t: Transfer) -> int:
    return epoch_micros(t.event_time)


def effective_us(v: ListVersion) -> int:
    return epoch_micros(datetime.combine(v.effective_date, time(0), tzinfo=UTC))


def in_force(versions: list[ListVersion], t_us: int) -> ListVersion | None:
    """The latest version effective at ``t_us`` (ties: the later version id)."""
    due = [v for v in versions if effective_us(v) <= t_us]
    return max(due, key=lambda v: (v.effective_date, v.version_id)) if due else None


def screen_transfer(
    index: SanctionsIndex, t: Transfer
) -> tuple[list[ComplianceScreeningRow], list[ComplianceAlert]]:
    """Pure: the two screening rows of one transfer, and an alert per hit."""
    rows, alerts = [], []
    version = index.version.version_id
    for side, address in (("from", t.from_address), ("to", t.to_address)):
        hit = index.lookup(t.chain_id, address)
        sid = deterministic_id("sanctions", t.event_id, side, address, version)
        entity = None
        if hit is not None:
            names = sorted(n for _, n in hit.entry.entities if n)
            entity = names[0] if names else None
        rows.append(
            ComplianceScreeningRow(
                screening_id=sid,
                address=hit.key if hit else address,
                chain_id=t.chain_id,
                screening_type="sanctions",
                screening_result="blocked" if hit else "clear",
                rule_id=RULE_ID,
                list_version=version,
                matched_entity=entity,
                risk_score=100.0 if hit else 0.0,
                hop_distance=0 if hit else None,
                tx_hash=t.tx_hash,
                evidence=json.dumps(
                    {"side": side, "listed_assets": sorted(hit.assets)} if hit else {"side": side}
                ),
                screened_at=t.event_time,
            )
        )
        if hit:
            alerts.append(
                ComplianceAlert(
                    alert_id=deterministic_id("alert", sid),
                    screening_id=sid,
                    address=hit.key,
                    chain_id=t.chain_id,
                    screening_result="blocked",
                    rule_id=RULE_ID,
                    list_version=version,
                    risk_score=100.0,
                    tx_hash=t.tx_hash,
                    evidence_tx_hashes=[t.tx_hash],
                    screened_at=t.event_time,
                )
            )
    return rows, alerts


def by_event_id(t: Transfer) -> str:
    """Direct hits need no shared state: transfers spread evenly over the shards."""
    return t.event_id


class SanctionsScreener:
    """The direct list match: stateless, so one instance serves every firing."""

    stage = "SanctionsJoin"

    def screen(self, index: SanctionsIndex, t: Transfer):
        return screen_transfer(index, t)

    def purge(self, now_us: int) -> int:
        return 0


class ScreenShardFn(beam.DoFn):
    """Buffers transfers and list versions of one shard; on an event-time timer, screens the
    transfers in event-time order against the version in force at each one's time.

    ``screener`` does the screening: ``SanctionsScreener`` (direct hits) or an exposure screener
    (``transforms.compliance``) whose graph state lives in ``SCREENER`` between firings.
    """

    TRANSFERS = BagStateSpec("transfers", BytesCoder())
    VERSIONS = BagStateSpec("versions", BytesCoder())
    LATEST = ReadModifyWriteStateSpec("latest", VarIntCoder())
    SCREENER = ReadModifyWriteStateSpec("screener", PickleCoder())
    SCREEN = TimerSpec("screen", TimeDomain.WATERMARK)

    def __init__(self, streaming: bool, screener: Any = None):
        self.streaming = streaming
        self.screener = screener or SanctionsScreener()
        stage = self.screener.stage
        self.stage = stage
        self.screened = Metrics.counter("compliance", f"{stage}.transfers_screened")
        self.rows = Metrics.counter("compliance", f"{stage}.rows")
        self.hits = Metrics.counter("compliance", f"{stage}.alerts")
        self.purged = Metrics.counter("compliance", f"{stage}.purged")

    def process(
        self,
        element,
        transfers=beam.DoFn.StateParam(TRANSFERS),
        versions=beam.DoFn.StateParam(VERSIONS),
        latest=beam.DoFn.StateParam(LATEST),
        timer=beam.DoFn.TimerParam(SCREEN),
    ):
        _, (kind, item) = element
        blob = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        if kind == "version":
            # A polled store re-emits every version each time: keep each version id once.
            if any(pickle.loads(b).version_id == item.version_id for b in versions.read()):
                return
            versions.add(blob)
            t = effective_us(item)
        else:
            transfers.add(blob)
            t = epoch_micros(item.event_time)
        arm_buffer_timer(latest, timer, t, self.streaming)

    @on_timer(SCREEN)
    def on_screen(
        self,
        fire=beam.DoFn.TimestampParam,
        transfers=beam.DoFn.StateParam(TRANSFERS),
        versions=beam.DoFn.StateParam(VERSIONS),
        state=beam.DoFn.StateParam(SCREENER),
    ):
        listed = [pickle.loads(b) for b in versions.read()]
        due = take_due(transfers, fire, self.streaming, transfer_order, transfer_us)
        # A fresh copy per key: one DoFn instance serves many keys, each with its own state.
        screener = state.read() or copy.deepcopy(self.screener)
        indexes: dict[str, SanctionsIndex] = {}
        last_us = None
        for t in due:
            t_us = last_us = transfer_us(t)
            version = in_force(listed, t_us)
            ts = emit_timestamp(t_us, fire, self.streaming)
            if version is None:
                Metrics.counter("dead_letter", f"{self.stage}.no_sanctions_list").inc()
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER_TAG,
                    make_dead_letter(
                        source="transfers.v1",
                        stage=self.stage,
                        reason="no_sanctions_list",
                        error="no sanctions list version is in force at the transfer's time",
                        raw=to_json(t),
                        event_time=t.event_time,
                    ),
                )
                continue
            index = indexes.get(version.version_id) or indexes.setdefault(
                version.version_id, SanctionsIndex(version)
            )
            rows, alerts = screener.screen(index, t)
            self.screened.inc()
            self.rows.inc(len(rows))
            for r in rows:
                yield TimestampedValue(r, ts)
            for a in alerts:
                self.hits.inc()
                yield beam.pvalue.TaggedOutput(ALERTS_TAG, TimestampedValue(a, ts))
        if last_us is not None:
            self.purged.inc(screener.purge(last_us))
        state.write(screener)


class SanctionsJoin(beam.PTransform):
    """(transfers, list versions) -> ComplianceScreeningRow (main ``screenings``), alerts and
    dead letters."""

    def __init__(self, shards: int = 4, streaming: bool = False, screener: Any = None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards, self.streaming, self.screener = shards, streaming, screener

    def expand(self, inputs):
        transfers, versions = inputs
        shards = self.shards
        key_of = getattr(self.screener, "key_of", by_event_id)
        keyed = (
            transfers
            | "TransfersGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "KeyByShard" >> beam.Map(lambda t: (shard_of(key_of(t), shards), ("transfer", t)))
        )
        lists = (
            versions
            | "VersionsGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "BroadcastVersions"
            >> beam.FlatMap(lambda v: [(s, ("version", v)) for s in range(shards)])
        )
        merged = (
            (keyed, lists)
            | "Merge" >> beam.Flatten()
            | "GlobalWindow"
            >> beam.WindowInto(window.GlobalWindows()).with_output_types(tuple[int, Any])
        )
        fn = ScreenShardFn(self.streaming, self.screener)
        return merged | "ScreenShards" >> beam.ParDo(fn).with_outputs(
            ALERTS_TAG, DEAD_LETTER_TAG, main="screenings"
        )
