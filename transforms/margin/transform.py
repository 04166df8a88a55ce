"""MonitorMargins: streaming margin health, margin events and throttled margin alerts.

    pytest tests/transforms/margin/test_transform.py
    defi-risk run risk --input-dir data/demo --output-dir out/demo     # margin_* tables + alerts

Design (the same in batch and streaming; the engine is ``transforms.margin.engine``):

1. Accounts are spread over ``shards`` keys by the same stable hash as VaR (``shard_of``); each
   settlement goes to its account's shard, in batches (``BatchByShardFn``: one element per shard
   per bundle, the settlements as plain ``SettlementRecord`` tuples), and every composite price
   row to every shard (a handful of elements per price window, whatever the number of accounts).
   Composite prices of one instant (every asset's window end) are grouped into one pack first.
2. ``MarginShardFn`` keeps the shard's ``MarginShardEngine`` (positions, detector states, the
   account x asset arrays) in state. Elements are buffered in bags; an event-time ``process``
   timer at the latest element time processes everything due in event-time order in one pass
   (in batch: once, at the end; in streaming: each time the watermark moves past new input).
3. Per-(account, event type) alert cooldowns compare event times kept in that state; a second
   event-time timer, ``purge``, fires when the first closed account's cooldown and allowed
   lateness have passed and drops closed accounts from state, so state stays bounded.

Outputs, by tag: ``MAIN_TAG`` (MarginHealthRow), ``events`` (MarginEventRow, every transition),
``ALERTS_TAG`` (MarginAlert, only the alerts the cooldown let through), ``state_size`` ((shard,
accounts in state) after each purge) and ``DEAD_LETTER_TAG``: refused settlements
(``duplicate``, ``negative_balance``, ``late_settlement``) with their reason.
"""

from __future__ import annotations

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
from apache_beam.utils.timestamp import Timestamp

from schemas.types import epoch_micros
from transforms.common.batching import settlement_batches
from transforms.common.dead_letter import (
    ALERTS_TAG,
    DEAD_LETTER_TAG,
    MAIN_TAG,
    composite_outputs,
    refused_settlement,
)
from transforms.common.event_timers import arm_once_at_end, emit_timestamp
from transforms.common.positions import settlement_model
from transforms.margin.engine import MarginConfig, MarginShardEngine, PriceTick, Rejected

EVENTS_TAG = "events"


# (shard, accounts held in state) after each purge: what an operator (or a test) reads to see
# that state stays bounded; the streaming runner's Beam metrics are not reliable enough for that.
STATE_TAG = "state_size"


def to_tick(row) -> PriceTick:
    return PriceTick(row.asset, epoch_micros(row.event_time), row.price, row.status)


class MarginShardFn(beam.DoFn):
    # Bags hold pickled bytes: the SDK's state cache weighs cached values by walking them, which
    # is costly for model objects and free for a bytes leaf (measured: ~20 s of a 70 s demo run).
    SETTLEMENTS = BagStateSpec("settlements", BytesCoder())
    TICKS = BagStateSpec("ticks", BytesCoder())
    ENGINE = ReadModifyWriteStateSpec("engine", PickleCoder())
    LATEST = ReadModifyWriteStateSpec("latest", VarIntCoder())  # latest element time seen
    FIRED = ReadModifyWriteStateSpec("fired", VarIntCoder())  # time processed so far
    PROCESS = TimerSpec("process", TimeDomain.WATERMARK)
    PURGE = TimerSpec("purge", TimeDomain.WATERMARK)

    def __init__(self, config: MarginConfig, streaming: bool):
        self.config, self.streaming = config, streaming
        self.health_rows = Metrics.counter("margin", "MonitorMargins.health_rows")
        self.event_rows = Metrics.counter("margin", "MonitorMargins.events")
        self.alert_rows = Metrics.counter("margin", "MonitorMargins.alerts")
        self.opened = Metrics.counter("margin", "MonitorMargins.accounts_opened")
        self.purged = Metrics.counter("margin", "MonitorMargins.accounts_purged")
        self.stale = Metrics.counter("margin", "MonitorMargins.stale_prices_ignored")

    def process(
        self,
        element,
        settlements=beam.DoFn.StateParam(SETTLEMENTS),
        ticks=beam.DoFn.StateParam(TICKS),
        latest=beam.DoFn.StateParam(LATEST),
        fired=beam.DoFn.StateParam(FIRED),
        timer=beam.DoFn.TimerParam(PROCESS),
    ):
        _, (kind, item) = element
        # One bag entry per element: a pack of prices, or a batch of settlement records as the
        # bytes BatchByShardFn pickled.
        if kind == "prices":  # every composite price of one instant
            ticks.add(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
            first = last = item[0].t_us
        else:
            first, last, payload = item
            settlements.add(payload)
        if not self.streaming:
            arm_once_at_end(latest, timer, last)
            return
        done = fired.read()
        if last > (latest.read() or 0):
            latest.write(last)
            timer.set(Timestamp(micros=last))
        elif done is not None and first <= done:
            # Behind what was processed (late): fire again now. A later pending element keeps its
            # place: the firing re-arms the timer for whatever is left in the bags.
            timer.set(Timestamp(micros=done))

    @on_timer(PROCESS)
    def on_process(
        self,
        fire=beam.DoFn.TimestampParam,
        settlements=beam.DoFn.StateParam(SETTLEMENTS),
        ticks=beam.DoFn.StateParam(TICKS),
        engine=beam.DoFn.StateParam(ENGINE),
        latest=beam.DoFn.StateParam(LATEST),
        fired=beam.DoFn.StateParam(FIRED),
        timer=beam.DoFn.TimerParam(PROCESS),
        purge=beam.DoFn.TimerParam(PURGE),
    ):
        eng = engine.read() or MarginShardEngine(self.config)
        before = eng.state_size()
        batch_s = [s for b in settlements.read() for s in pickle.loads(b)]
        batch_t = [t for b in ticks.read() for t in pickle.loads(b)]
        if self.streaming:
            until = int(fire.micros)
        else:  # fired at the end of the global window: process up to the last element
            until = max([epoch_micros(s.event_time) for s in batch_s] + [t.t_us for t in batch_t])
        out, later_s, later_t = eng.advance(batch_s, batch_t, until)
        settlements.clear()
        ticks.clear()
        if later_s:
            settlements.add(pickle.dumps(later_s, protocol=pickle.HIGHEST_PROTOCOL))
        if later_t:
            ticks.add(pickle.dumps(tuple(later_t), protocol=pickle.HIGHEST_PROTOCOL))
        fired.write(max(fired.read() or until, until))
        if later_s or later_t:
            timer.set(Timestamp(micros=max(latest.read() or until, until)))
        self.opened.inc(max(0, eng.state_size() - before))
        self.stale.inc(out.stale_prices)
        nxt = eng.next_purge_us()
        if nxt is not None:
            purge.set(Timestamp(micros=max(nxt, until)))
        engine.write(eng)
        yield from self._emit(out, fire)

    @on_timer(PURGE)
    def on_purge(
        self,
        key=beam.DoFn.KeyParam,
        fire=beam.DoFn.TimestampParam,
        engine=beam.DoFn.StateParam(ENGINE),
        purge=beam.DoFn.TimerParam(PURGE),
    ):
        eng = engine.read()
        if eng is None:
            return
        self.purged.inc(eng.purge(int(fire.micros)))
        nxt = eng.next_purge_us()
        if nxt is not None and nxt > fire.micros:  # never re-arm at the same instant: no loop
            purge.set(Timestamp(micros=nxt))
        engine.write(eng)
        yield beam.pvalue.TaggedOutput(STATE_TAG, TimestampedValue((key, eng.state_size()), fire))

    def _ts(self, t_us: int, fire: Timestamp) -> Timestamp:
        return emit_timestamp(t_us, fire, self.streaming)

    def _emit(self, out, fire):
        for t, row in out.health:
            self.health_rows.inc()
            yield TimestampedValue(row, self._ts(t, fire))
        for t, row in out.events:
            self.event_rows.inc()
            yield beam.pvalue.TaggedOutput(EVENTS_TAG, TimestampedValue(row, self._ts(t, fire)))
        for t, alert in out.alerts:
            self.alert_rows.inc()
            yield beam.pvalue.TaggedOutput(ALERTS_TAG, TimestampedValue(alert, self._ts(t, fire)))
        for r in out.rejected:
            Metrics.counter("dead_letter", f"MonitorMargins.{r.outcome.reason}").inc()
            r = Rejected(settlement_model(r.settlement), r.outcome)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, refused_settlement("MonitorMargins", r))


class MonitorMargins(beam.PTransform):
    """(composite price rows, settlements) -> margin_health rows (``MAIN_TAG``), ``events``,
    alerts, ``state_size`` and dead letters."""

    def __init__(
        self, config: MarginConfig | None = None, shards: int = 16, streaming: bool = False
    ):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.config = config or MarginConfig()
        self.shards = shards
        self.streaming = streaming

    def expand(self, inputs):
        prices, settlements = inputs
        shards = self.shards
        # All composite prices of one instant travel as one small pack: a price window of every
        # asset is one element per shard, not one per asset (the per-element cost dominates).
        ticks = (
            prices
            | "InstantWindows" >> beam.WindowInto(window.FixedWindows(1))
            | "KeyByInstant"
            >> beam.Map(lambda r: (epoch_micros(r.event_time), to_tick(r))).with_output_types(
                tuple[int, Any]
            )
            | "GroupByInstant" >> beam.GroupByKey()
            | "PricesGlobal" >> beam.WindowInto(window.GlobalWindows())
            | "BroadcastPrices"
            >> beam.FlatMap(
                lambda kv: [
                    (s, ("prices", tuple(sorted(kv[1], key=lambda t: t.asset))))
                    for s in range(shards)
                ]
            ).with_output_types(tuple[int, Any])
        )
        keyed = (
            settlements
            | "SettlementsGlobal" >> beam.WindowInto(window.GlobalWindows())
            # One element per shard per bundle: a batch of settlement records (tuples).
            | "KeyByShard"
            >> beam.ParDo(settlement_batches(shards)).with_output_types(tuple[int, Any])
        )
        # The keying steps' type hints give the state's key (the shard) a deterministic coder.
        merged = (
            (ticks, keyed)
            | "Merge" >> beam.Flatten()
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
        )
        return composite_outputs(
            merged
            | "MarginShards"
            >> beam.ParDo(MarginShardFn(self.config, self.streaming)).with_outputs(
                EVENTS_TAG, ALERTS_TAG, STATE_TAG, DEAD_LETTER_TAG, main=MAIN_TAG
            ),
            EVENTS_TAG,
            STATE_TAG,
        )
