"""ComputeVaR: portfolio VaR and ES per account from composite prices and settlements.

    pytest tests/transforms/var/test_transform.py

Design (linear in events, the same in batch and streaming):

1. ``BucketCloses``: each asset's close per bucket (a day, or an hour with intraday returns) is
   the last non-null composite price in it; keyed by (asset, bucket end), so a key holds one window.
2. Accounts are spread over ``shards`` keys by a stable hash of the account id; every close is sent
   to every shard (a handful of elements per bucket), each settlement to its account's shard, in
   batches (``BatchByShardFn``: one element per shard per bundle, the settlements as plain
   ``SettlementRecord`` tuples pickled once, kept in state as those bytes).
3. ``VarShardFn`` keeps the shard's ``VarShardEngine`` (positions and close history) in state and
   values the whole shard at each bucket end in one vectorised step (exposures @ returns), driven
   by an event-time timer set to the latest bucket end seen; in batch it fires once, at the end.

Refused settlements (duplicates, balances below zero) are dead letters, unless
``dead_letter_rejections`` is off: in the risk pipeline ``MonitorMargins`` applies the same
``PositionBook`` rules to the same settlements and owns their dead letters, so each refused
settlement is one dead-letter row, not two (VaR still counts them, in ``var/...refused``).
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

from transforms.common.batching import settlement_batches
from transforms.common.dead_letter import (
    ALERTS_TAG,
    DEAD_LETTER_TAG,
    MAIN_TAG,
    composite_outputs,
    refused_settlement,
)
from transforms.common.event_timers import output_timestamp, push_timer_forward
from transforms.common.positions import settlement_model
from transforms.common.refusals import refuse
from transforms.var.engine import MICROS, Close, Rejected, VarConfig, VarShardEngine


class BucketCloseKeyFn(beam.DoFn):
    def __init__(self, bucket_s: int):
        self.bucket_s = bucket_s

    def process(self, row):
        if row.price is None:
            # price_unavailable never becomes a close
            return
        t = int(Timestamp.from_utc_datetime(row.event_time).micros)
        b = self.bucket_s * MICROS
        # A composite window ending exactly on the bucket boundary belongs to that bucket.
        end = t if t % b == 0 else t - t % b + b
        yield (row.asset, end), (t, float(row.price))


class VarShardFn(beam.DoFn):
    # Batches of settlement records as BatchByShardFn pickled them: a bytes leaf costs the state
    # cache nothing to weigh (pickled models were measured at ~10 % of a risk run's CPU).
    SETTLEMENTS = BagStateSpec("settlements", BytesCoder())
    CLOSES = BagStateSpec("closes", PickleCoder())
    ENGINE = ReadModifyWriteStateSpec("engine", PickleCoder())
    LATEST = ReadModifyWriteStateSpec("latest_end", VarIntCoder())
    VALUE = TimerSpec("value", TimeDomain.WATERMARK)

    def __init__(self, config: VarConfig, streaming: bool, dead_letter_rejections: bool = True):
        self.config, self.streaming = config, streaming
        self.dead_letter_rejections = dead_letter_rejections
        self.rows = Metrics.counter("var", "ComputeVaR.rows")

    def process(
        self,
        element,
        settlements=beam.DoFn.StateParam(SETTLEMENTS),
        closes=beam.DoFn.StateParam(CLOSES),
        latest=beam.DoFn.StateParam(LATEST),
        timer=beam.DoFn.TimerParam(VALUE),
    ):
        _, (kind, item) = element
        b = self.config.bucket_s * MICROS
        if kind == "close":
            closes.add(item)
            end = item.bucket_end_us
        else:  # a batch: (first_us, last_us, pickled records); the timer goes to its last bucket
            _, last, payload = item
            settlements.add(payload)
            end = last - last % b + b
        push_timer_forward(latest, timer, end)

    @on_timer(VALUE)
    def on_value(
        self,
        fire=beam.DoFn.TimestampParam,
        settlements=beam.DoFn.StateParam(SETTLEMENTS),
        closes=beam.DoFn.StateParam(CLOSES),
        engine=beam.DoFn.StateParam(ENGINE),
    ):
        eng = engine.read() or VarShardEngine(self.config)
        rows, rejected, later_s, later_c = eng.advance(
            [s for b in settlements.read() for s in pickle.loads(b)],
            list(closes.read()),
            int(fire.micros),
        )
        settlements.clear()
        closes.clear()
        if later_s:
            settlements.add(pickle.dumps(later_s, protocol=pickle.HIGHEST_PROTOCOL))
        for c in later_c:
            closes.add(c)
        unrepresentable = getattr(eng, "unrepresentable", [])  # older pickled engines lack it
        eng.unrepresentable = []
        engine.write(eng)
        for row in rows:
            self.rows.inc()
            end = int(Timestamp.from_utc_datetime(row.as_of).micros)
            yield TimestampedValue(row, output_timestamp(end, fire, self.streaming))
        for skipped in unrepresentable:
            yield refuse(
                source="risk.portfolio_var",
                stage="ComputeVaR",
                reason="out_of_range",
                error="VaR, ES or value is not finite or does not fit NUMERIC",
                raw=skipped,
                event_time=Timestamp(micros=skipped["as_of_us"]).to_utc_datetime(has_tz=True),
            )
        for r in rejected:
            if not self.dead_letter_rejections:
                Metrics.counter("var", f"ComputeVaR.refused.{r.outcome.reason}").inc()
                continue
            Metrics.counter("dead_letter", f"ComputeVaR.{r.outcome.reason}").inc()
            r = Rejected(settlement_model(r.settlement), r.outcome)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, refused_settlement("ComputeVaR", r))


class ComputeVaR(beam.PTransform):
    """(composite price rows, settlements) -> PortfolioVarRow rows (``MAIN_TAG``), no alerts,
    and the dead letters of refused settlements."""

    def __init__(
        self,
        config: VarConfig | None = None,
        shards: int = 16,
        streaming: bool = False,
        dead_letter_rejections: bool = True,
    ):
        super().__init__()
        self.dead_letter_rejections = dead_letter_rejections
        self.config = config or VarConfig()
        self.shards = shards
        self.streaming = streaming

    def expand(self, inputs):
        prices, settlements = inputs
        shards, bucket_s = self.shards, self.config.bucket_s
        closes = (
            prices
            | "BucketWindows" >> beam.WindowInto(window.FixedWindows(bucket_s))
            | "KeyByAssetBucket" >> beam.ParDo(BucketCloseKeyFn(bucket_s))
            | "LatestInBucket" >> beam.CombinePerKey(max)  # (time, price): the last price wins
            | "ToClose" >> beam.Map(lambda kv: Close(kv[0][0], kv[0][1], kv[1][1]))
            | "Broadcast"
            >> beam.FlatMap(lambda c: [(s, ("close", c)) for s in range(shards)]).with_output_types(
                tuple[int, Any]
            )
            | "ClosesGlobal" >> beam.WindowInto(window.GlobalWindows())
        )
        keyed = (
            settlements
            | "SettlementsGlobal" >> beam.WindowInto(window.GlobalWindows())
            # One element per shard per bundle: a batch of settlement records (tuples).
            | "KeyByShard"
            >> beam.ParDo(settlement_batches(shards)).with_output_types(tuple[int, Any])
        )
        # Both sides are re-windowed globally before the Flatten: one windowing, one coder. The
        # keying steps' type hints give the state's key (the shard number) a deterministic coder:
        # WindowInto and Flatten keep their input's type.
        merged = (
            (closes, keyed)
            | "Merge" >> beam.Flatten()
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
        )
        return composite_outputs(
            merged
            | "ValueShards"
            >> beam.ParDo(
                VarShardFn(self.config, self.streaming, self.dead_letter_rejections)
            ).with_outputs(ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG)
        )
