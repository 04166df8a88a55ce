"""Compliance screens beyond the direct list match: exposure hops and AML monitoring rules.

    pytest tests/test_compliance_pipeline.py
    defi-risk run compliance --input-dir out/demo/data --out out/compliance

``ScreenExposure``: (transfers, list versions) -> ``compliance_screenings`` rows of type
``exposure`` and alerts. The counterparty graph is global within a chain, so transfers are keyed
by chain (``shard_of(chain_id)``) and ``transforms.exposure.ExposureGraph`` runs in event-time
order over each key, against the list version in force at each transfer (the same buffering and
version logic as ``SanctionsJoin``). One chain's transfers therefore go through one key: at the
synthetic demo's ~2,400 transfers/day that is far below one worker's capacity (see
``tests/benchmarks/bench_compliance.py``), but a chain with millions of transfers a day would need
the graph partitioned, which this does not do.

``MonitorAml``: (transfers, account profiles) -> rows of type ``aml``/``policy`` and alerts.

1. ``ResolveSubjectsFn`` (keyed by ``shard_of(event_id)``; profiles are broadcast to every shard)
   turns each transfer into legs, one per side, each with its *subject*: the account whose
   profile (in force at the transfer's time, by ``updated_at``) lists the wallet, or else the
   bare wallet. A transfer between two wallets of one account moves nothing in or out of the
   account and gives no leg (counted as ``intra_account``). A redelivered ``event_id`` becomes a
   ``duplicate`` dead letter: counting it twice would inflate every sum.
2. ``AmlShardFn`` (keyed by ``shard_of(subject)``) runs ``transforms.aml_rules.AmlEngine`` over
   the legs in event-time order; every rule reads its parameters from the policy file.

Every hit is one ``compliance_screenings`` row (screening_id = the hit id, evidence JSON with the
rule's parameters, window and evidence tx hashes); flagged and blocked ones are also alerts,
unless the policy marks the rule ``alert: false`` (a report-only rule, e.g. daily_aggregate).
"""

from __future__ import annotations

import json
import pickle
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
from schemas.events import AccountProfile, ComplianceAlert, Transfer
from schemas.serde import to_json
from schemas.tables import ComplianceScreeningRow
from schemas.types import epoch_micros
from transforms.aml_rules import (
    AmlEngine,
    AmlHit,
    LateLegError,
    Leg,
    legs_of_transfer,
    normalise_address,
)
from transforms.compliance_policy import ExposurePolicy, Policy
from transforms.dead_letter import DEAD_LETTER_TAG, make_dead_letter
from transforms.event_timers import arm_buffer_timer, emit_timestamp, take_due
from transforms.exposure import ExposureGraph, ExposureHit
from transforms.sanctions import ALERTS_TAG, SanctionsJoin, transfer_order, transfer_us
from transforms.sanctions_list import SanctionsIndex
from transforms.var import shard_of

EXPOSURE_RULE = "exposure.sanctioned_counterparty"


def alert_of(row: ComplianceScreeningRow, evidence_tx_hashes: tuple[str, ...]) -> ComplianceAlert:
    return ComplianceAlert(
        alert_id=deterministic_id("alert", row.screening_id),
        screening_id=row.screening_id,
        address=row.address,
        chain_id=row.chain_id,
        screening_result=row.screening_result,
        rule_id=row.rule_id,
        list_version=row.list_version,
        risk_score=row.risk_score,
        tx_hash=row.tx_hash,
        evidence_tx_hashes=list(evidence_tx_hashes),
        screened_at=row.screened_at,
    )


# ---------------------------------------------------------------- exposure hops


def exposure_row(hit: ExposureHit) -> ComplianceScreeningRow:
    return ComplianceScreeningRow(
        screening_id=hit.hit_id,
        address=hit.address,
        chain_id=hit.chain_id,
        screening_type="exposure",
        screening_result=hit.screening_result,
        rule_id=EXPOSURE_RULE,
        list_version=hit.list_version,
        matched_entity=None,
        risk_score=hit.risk_score,
        hop_distance=hit.hop,
        tx_hash=hit.tx_hash,
        evidence=json.dumps(hit.evidence(), sort_keys=True),
        screened_at=hit.event_time,
    )


def by_chain(t: Transfer) -> str:
    """Exposure paths never cross chains, and the graph of one chain must stay on one key."""
    return t.chain_id


class ExposureScreener:
    """``ScreenShardFn``'s screener for exposure hops: the graph state of one shard."""

    stage = "ScreenExposure"
    key_of = staticmethod(by_chain)

    def __init__(self, policy: ExposurePolicy):
        self.graph = ExposureGraph(policy)

    def screen(self, index: SanctionsIndex, t: Transfer):
        rows, alerts = [], []
        for hit in self.graph.process(t, index):
            row = exposure_row(hit)
            rows.append(row)
            if hit.screening_result != "clear":
                alerts.append(alert_of(row, hit.evidence_tx_hashes))
        return rows, alerts

    def purge(self, now_us: int) -> int:
        from datetime import UTC, datetime

        return self.graph.purge(datetime.fromtimestamp(now_us / 1e6, tz=UTC))


class ScreenExposure(beam.PTransform):
    """(transfers, list versions) -> exposure rows (main ``screenings``), alerts, dead letters."""

    def __init__(self, policy: ExposurePolicy, shards: int = 4, streaming: bool = False):
        super().__init__()
        self.join = SanctionsJoin(shards, streaming, ExposureScreener(policy))

    def expand(self, inputs):
        return inputs | "ScreenHops" >> self.join


# ---------------------------------------------------------------- AML rules


def profile_in_force(versions: list[AccountProfile], t_us: int) -> AccountProfile | None:
    due = [p for p in versions if epoch_micros(p.updated_at) <= t_us]
    return max(due, key=lambda p: (p.updated_at, p.account_id)) if due else None


def resolve_legs(t: Transfer, by_wallet: dict[str, list[AccountProfile]]) -> list[Leg]:
    """The legs of a transfer, each wallet resolved to the profile in force at its time."""
    t_us = epoch_micros(t.event_time)

    def profile_of(wallet: str) -> AccountProfile | None:
        p = profile_in_force(by_wallet.get(wallet, []), t_us)
        # A later profile version may have dropped the wallet: then it is no longer the account's.
        return p if p and wallet in {normalise_address(w) for w in p.wallets} else None

    return legs_of_transfer(t, profile_of)


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
                Metrics.counter("dead_letter", "MonitorAml.duplicate").inc()
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER_TAG,
                    make_dead_letter(
                        source="transfers.v1",
                        stage="MonitorAml",
                        reason="duplicate",
                        error=f"transfer {t.event_id} was already counted by the AML rules",
                        raw=to_json(t),
                        event_time=t.event_time,
                    ),
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


def aml_row(hit: AmlHit) -> ComplianceScreeningRow:
    return ComplianceScreeningRow(
        screening_id=hit.hit_id,
        address=hit.address,
        chain_id=hit.chain_id,
        screening_type=hit.screening_type,
        screening_result=hit.screening_result,
        rule_id=hit.rule_id,
        list_version=None,
        matched_entity=hit.subject if hit.subject_kind == "account" else None,
        risk_score=hit.risk_score,
        hop_distance=None,
        tx_hash=hit.tx_hash,
        evidence=json.dumps(hit.evidence(), sort_keys=True),
        screened_at=hit.event_time,
    )


def _leg_order(g: Leg) -> tuple:
    return (g.event_time, g.event_id, g.direction)  # the order AmlEngine requires per subject


def _leg_us(g: Leg) -> int:
    return epoch_micros(g.event_time)


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
        due = take_due(legs, fire, self.streaming, _leg_order, _leg_us)
        eng = engine.read() or AmlEngine(self.policy)
        last = None
        for leg in due:
            t_us = _leg_us(leg)
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
    """(transfers, account profiles) -> aml/policy rows (main ``screenings``), alerts and dead
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
            | "KeyByShard" >> beam.Map(lambda t: (shard_of(t.event_id, shards), ("transfer", t)))
        )
        broadcast = (
            profiles
            | "ProfilesGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "BroadcastProfiles"
            >> beam.FlatMap(lambda p: [(s, ("profile", p)) for s in range(shards)])
        )
        resolved = (
            (keyed, broadcast)
            | "Merge" >> beam.Flatten()
            | "GlobalWindow"
            >> beam.WindowInto(window.GlobalWindows()).with_output_types(tuple[int, Any])
            | "ResolveSubjects"
            >> beam.ParDo(ResolveSubjectsFn(shards, self.streaming, self.horizon_us)).with_outputs(
                DEAD_LETTER_TAG, main="legs"
            )
        )
        out = (
            resolved.legs
            | "LegsGlobal"
            >> beam.WindowInto(window.GlobalWindows()).with_output_types(tuple[int, Any])
            | "ApplyRules"
            >> beam.ParDo(AmlShardFn(self.policy, self.streaming)).with_outputs(
                ALERTS_TAG, DEAD_LETTER_TAG, main="screenings"
            )
        )
        dead = (resolved[DEAD_LETTER_TAG], out[DEAD_LETTER_TAG]) | "DeadLetters" >> beam.Flatten()
        return out.screenings, out[ALERTS_TAG], dead
