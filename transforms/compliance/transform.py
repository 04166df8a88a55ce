"""The compliance domain's Beam face: ``ReadSanctionsVersions``, ``SanctionsJoin``,
``ScreenExposure`` and ``MonitorAml``.

    pytest tests/transforms/compliance/

The list is an input stream of ``ListVersion``s (``lists.py``), not a processing-time side input:
``ReadSanctionsVersions`` reads the store (``store.py``) once when the graph is built, or, with
``--sanctions_poll_minutes`` on Dataflow, re-reads it through a ``PeriodicImpulse`` (the
DirectRunner cannot run that in streaming, so the tests feed versions through a TestStream, which
exercises the same refresh logic). Versions are sent to every screening shard; transfers are
spread over the shards (by event id for direct hits, by chain for exposure). ``ScreenShardFn``
buffers both and, on an event-time timer, screens the transfers in order against the latest
version in force at their time: ``SanctionsJoin`` with ``screening.SanctionsScreener``,
``ScreenExposure`` with ``exposure.ExposureScreener``. A transfer with no version in force yet is
a dead letter (``no_sanctions_list``): screening it "clear" against no list would be a false
all-clear.

``MonitorAml``: ``ResolveSubjectsFn`` turns each transfer into legs of subjects (the account that
owns a wallet, by the profile in force, or the bare wallet), keyed by subject shard;
``AmlShardFn`` runs ``aml.AmlEngine`` over them in event-time order and writes ``aml`` and
``policy`` rows and alerts.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
from typing import Any

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder, VarIntCoder
from apache_beam.io.filesystems import FileSystems
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

from schemas.events import AccountProfile
from schemas.serde import to_json
from schemas.types import epoch_micros
from transforms.common.dead_letter import (
    ALERTS_TAG,
    DEAD_LETTER_TAG,
    MAIN_TAG,
    composite_outputs,
    make_dead_letter,
)
from transforms.common.event_timers import arm_buffer_timer, emit_timestamp, take_due
from transforms.common.keys import shard_of
from transforms.common.refusals import refuse
from transforms.compliance.aml import (
    AmlEngine,
    LateLegError,
    aml_row,
    leg_order,
    leg_us,
    normalise_address,
    resolve_legs,
)
from transforms.compliance.exposure import ExposureScreener
from transforms.compliance.lists import ListVersion, SanctionsIndex
from transforms.compliance.policy import ExposurePolicy, Policy
from transforms.compliance.screening import (
    SanctionsScreener,
    alert_of,
    by_event_id,
    effective_us,
    in_force,
    transfer_order,
    transfer_us,
)
from transforms.compliance.store import (
    SanctionsStoreError,
    bundled_versions,
    check_versions,
    version_from_dict,
)

LOG = logging.getLogger(__name__)


class ScreenShardFn(beam.DoFn):
    """Buffers transfers and list versions of one shard; on an event-time timer, screens the
    transfers in event-time order against the version in force at each one's time.

    ``screener`` does the screening: ``SanctionsScreener`` (direct hits) or an exposure screener
    (``exposure.ExposureScreener``) whose graph state lives in ``SCREENER`` between firings.
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
                yield refuse(
                    source="transfers.v1",
                    stage=self.stage,
                    reason="no_sanctions_list",
                    error="no sanctions list version is in force at the transfer's time",
                    raw=to_json(t),
                    event_time=t.event_time,
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
    """(transfers, list versions) -> ComplianceScreeningRow (``MAIN_TAG``), alerts and
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
            | "KeyByShard"
            >> beam.Map(lambda t: (shard_of(key_of(t), shards), ("transfer", t))).with_output_types(
                tuple[int, Any]
            )
        )
        lists = (
            versions
            | "VersionsGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "BroadcastVersions"
            >> beam.FlatMap(
                lambda v: [(s, ("version", v)) for s in range(shards)]
            ).with_output_types(tuple[int, Any])
        )
        # The keying steps' type hints give the state's key (the shard) a deterministic coder.
        merged = (
            (keyed, lists)
            | "Merge" >> beam.Flatten()
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
        )
        fn = ScreenShardFn(self.streaming, self.screener)
        return composite_outputs(
            merged
            | "ScreenShards"
            >> beam.ParDo(fn).with_outputs(ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG)
        )


class ScreenExposure(beam.PTransform):
    """(transfers, list versions) -> exposure rows (``MAIN_TAG``), alerts, dead letters."""

    def __init__(self, policy: ExposurePolicy, shards: int = 4, streaming: bool = False):
        super().__init__()
        self.join = SanctionsJoin(shards, streaming, ExposureScreener(policy))

    def expand(self, inputs):
        return inputs | "ScreenHops" >> self.join


@beam.typehints.with_output_types(
    tuple[int, Any]
)  # (shard, leg): an int key for AmlShardFn's state
class ResolveSubjectsFn(beam.DoFn):
    """Buffers transfers and profiles; on the timer turns transfers into subject legs."""

    TRANSFERS = BagStateSpec("transfers", BytesCoder())
    PROFILES = BagStateSpec("profiles", BytesCoder())
    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())  # event_id -> event time (µs)
    LATEST = ReadModifyWriteStateSpec("latest", VarIntCoder())
    RESOLVE = TimerSpec("resolve", TimeDomain.WATERMARK)

    def __init__(self, shards: int, streaming: bool, dedup_horizon_us: int):
        self.shards, self.streaming, self.horizon = shards, streaming, dedup_horizon_us
        self.legs = Metrics.counter("compliance", "MonitorAml.legs")
        self.internal = Metrics.counter("compliance", "MonitorAml.intra_account")

    def process(
        self,
        element,
        transfers=beam.DoFn.StateParam(TRANSFERS),
        profiles=beam.DoFn.StateParam(PROFILES),
        latest=beam.DoFn.StateParam(LATEST),
        timer=beam.DoFn.TimerParam(RESOLVE),
    ):
        _, (kind, item) = element
        blob = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        if kind == "profile":
            profiles.add(blob)
            t = epoch_micros(item.updated_at)
        else:
            transfers.add(blob)
            t = epoch_micros(item.event_time)
        arm_buffer_timer(latest, timer, t, self.streaming)

    @on_timer(RESOLVE)
    def on_resolve(
        self,
        fire=beam.DoFn.TimestampParam,
        transfers=beam.DoFn.StateParam(TRANSFERS),
        profiles=beam.DoFn.StateParam(PROFILES),
        seen_state=beam.DoFn.StateParam(SEEN),
    ):
        by_wallet: dict[str, list[AccountProfile]] = {}
        for b in profiles.read():
            p = pickle.loads(b)
            for w in p.wallets:
                by_wallet.setdefault(normalise_address(w), []).append(p)
        due = take_due(transfers, fire, self.streaming, transfer_order, transfer_us)
        seen: dict[str, int] = seen_state.read() or {}
        last = None
        for t in due:
            t_us = last = transfer_us(t)
            if t.event_id in seen:
                yield refuse(
                    source="transfers.v1",
                    stage="MonitorAml",
                    reason="duplicate",
                    error=f"transfer {t.event_id} was already counted by the AML rules",
                    raw=to_json(t),
                    event_time=t.event_time,
                )
                continue
            seen[t.event_id] = t_us
            legs = resolve_legs(t, by_wallet)
            if not legs:
                self.internal.inc()  # both sides one account's (or a wallet paying itself)
            ts = emit_timestamp(t_us, fire, self.streaming)
            for leg in legs:
                self.legs.inc()
                yield TimestampedValue((shard_of(leg.subject, self.shards), leg), ts)
        if last is not None:  # ids older than the horizon cannot come back in time to matter
            cutoff = last - self.horizon
            seen = {k: v for k, v in seen.items() if v >= cutoff}
        seen_state.write(seen)


class AmlShardFn(beam.DoFn):
    LEGS = BagStateSpec("legs", BytesCoder())
    ENGINE = ReadModifyWriteStateSpec("engine", PickleCoder())
    LATEST = ReadModifyWriteStateSpec("latest", VarIntCoder())
    PROCESS = TimerSpec("process", TimeDomain.WATERMARK)

    def __init__(self, policy: Policy, streaming: bool):
        self.policy, self.streaming = policy, streaming
        self.hits = Metrics.counter("compliance", "MonitorAml.hits")
        self.alerts = Metrics.counter("compliance", "MonitorAml.alerts")
        self.purged = Metrics.counter("compliance", "MonitorAml.subjects_purged")

    def process(
        self,
        element,
        legs=beam.DoFn.StateParam(LEGS),
        latest=beam.DoFn.StateParam(LATEST),
        timer=beam.DoFn.TimerParam(PROCESS),
    ):
        _, leg = element
        legs.add(pickle.dumps(leg, protocol=pickle.HIGHEST_PROTOCOL))
        arm_buffer_timer(latest, timer, epoch_micros(leg.event_time), self.streaming)

    @on_timer(PROCESS)
    def on_process(
        self,
        fire=beam.DoFn.TimestampParam,
        legs=beam.DoFn.StateParam(LEGS),
        engine=beam.DoFn.StateParam(ENGINE),
    ):
        due = take_due(legs, fire, self.streaming, leg_order, leg_us)
        eng = engine.read() or AmlEngine(self.policy)
        last = None
        for leg in due:
            t_us = leg_us(leg)
            ts = emit_timestamp(t_us, fire, self.streaming)
            try:
                hits = eng.process(leg)
            except LateLegError as e:  # streaming: arrived after its subject's windows moved on
                Metrics.counter("dead_letter", "MonitorAml.late_transfer").inc()
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER_TAG,
                    make_dead_letter(
                        source="transfers.v1",
                        stage="MonitorAml",
                        reason="late_transfer",
                        error=str(e),
                        raw=json.dumps({"event_id": leg.event_id, "subject": leg.subject}),
                        event_time=leg.event_time,
                    ),
                )
                continue
            last = leg.event_time
            for hit in hits:
                self.hits.inc()
                Metrics.counter("compliance", f"MonitorAml.{hit.rule_id}").inc()
                row = aml_row(hit)
                yield TimestampedValue(row, ts)
                if not self.policy.alerts(hit.rule_id):
                    continue  # a report-only rule (policy: alert false)
                self.alerts.inc()
                yield beam.pvalue.TaggedOutput(
                    ALERTS_TAG, TimestampedValue(alert_of(row, hit.evidence_tx_hashes), ts)
                )
        if last is not None:
            self.purged.inc(eng.purge(last))
        engine.write(eng)


class MonitorAml(beam.PTransform):
    """(transfers, account profiles) -> aml/policy rows (``MAIN_TAG``), alerts and dead
    letters."""

    def __init__(
        self,
        policy: Policy,
        shards: int = 4,
        streaming: bool = False,
        allowed_lateness_s: float = 600.0,
    ):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.policy, self.shards, self.streaming = policy, shards, streaming
        # Duplicate ids are remembered for the longest rule window plus the lateness allowed.
        self.horizon_us = int((policy.max_window_h() * 3600 + allowed_lateness_s) * 1e6)

    def expand(self, inputs):
        transfers, profiles = inputs
        shards = self.shards
        keyed = (
            transfers
            | "TransfersGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "KeyByShard"
            >> beam.Map(
                lambda t: (shard_of(t.event_id, shards), ("transfer", t))
            ).with_output_types(tuple[int, Any])
        )
        broadcast = (
            profiles
            | "ProfilesGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "BroadcastProfiles"
            >> beam.FlatMap(
                lambda p: [(s, ("profile", p)) for s in range(shards)]
            ).with_output_types(tuple[int, Any])
        )
        resolved = (
            (keyed, broadcast)
            | "Merge" >> beam.Flatten()
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "ResolveSubjects"
            >> beam.ParDo(ResolveSubjectsFn(shards, self.streaming, self.horizon_us)).with_outputs(
                DEAD_LETTER_TAG, main="legs"
            )
        )
        out = (
            resolved.legs
            | "LegsGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "ApplyRules"
            >> beam.ParDo(AmlShardFn(self.policy, self.streaming)).with_outputs(
                ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG
            )
        )
        dead = (resolved[DEAD_LETTER_TAG], out[DEAD_LETTER_TAG]) | "DeadLetters" >> beam.Flatten()
        return {MAIN_TAG: out[MAIN_TAG], ALERTS_TAG: out[ALERTS_TAG], DEAD_LETTER_TAG: dead}


def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def read_store(store: str) -> list[ListVersion]:
    """Every version in a store (local path or gs://), oldest first; a clear error otherwise."""

    root = store.rstrip("/")
    index_path = FileSystems.join(root, "index.json")
    if not FileSystems.exists(index_path):
        raise SanctionsStoreError(
            f"no sanctions list store at {store!r} (missing index.json); create one with "
            "`defi-risk sanctions load --xml sdn_advanced.xml --store DIR`"
        )
    index = _read_json(index_path)
    versions = [
        version_from_dict(_read_json(FileSystems.join(root, "versions", f"{v['version_id']}.json")))
        for v in index
    ]
    return check_versions(versions, store)  # no version or an empty one: stop, never all-clear


class ReadStoreFn(beam.DoFn):
    """On each impulse, every version in the store (the screen keeps each version id once)."""

    def __init__(self, store: str):
        self.store = store

    def process(self, _tick):
        try:
            yield from read_store(self.store)
        except (OSError, SanctionsStoreError) as e:
            # Transient (GCS hiccup, a load in progress): keep the versions already applied and
            # retry at the next poll, rather than failing a streaming job.
            beam.metrics.Metrics.counter("compliance", "ReadSanctionsVersions.poll_errors").inc()
            LOG.warning("sanctions store poll failed, keeping the current versions: %s", e)


class ReadSanctionsVersions(beam.PTransform):
    def __init__(self, store: str | None, poll_minutes: float = 0.0):
        super().__init__()
        if poll_minutes < 0:
            raise ValueError(f"poll_minutes must be >= 0, got {poll_minutes}")
        self.store, self.poll_minutes = store, poll_minutes

    def expand(self, pbegin):
        if self.poll_minutes > 0:
            if not self.store:
                raise SanctionsStoreError("--sanctions_poll_minutes needs --sanctions_store")
            from apache_beam.transforms.periodicsequence import PeriodicImpulse

            return (
                pbegin
                | "PollStore" >> PeriodicImpulse(fire_interval=self.poll_minutes * 60)
                | "ReadStore" >> beam.ParDo(ReadStoreFn(self.store))
            )
        if self.store:
            versions = read_store(self.store)
        else:
            versions = bundled_versions()
            LOG.warning(
                "no --sanctions_store: screening against the bundled OFAC list snapshots of %s; "
                "load current lists with `defi-risk sanctions load` for live use",
                ", ".join(str(v.effective_date) for v in versions),
            )
        return pbegin | "ReadStore" >> beam.Create(versions)
