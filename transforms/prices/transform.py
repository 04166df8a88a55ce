"""The prices domain's Beam face: ``ValidatePrices``, ``CompositePrices`` and
``DecodeOracleUpdates``.

``ValidatePrices`` applies ``validation.check_update`` to every update: valid ones go on, the
others become dead letters. ``DecodeOracleUpdates`` turns raw Chainlink rounds or Pyth Hermes
updates (archives of raw oracle reads) into PriceEvents with the poller's decoders.

``CompositePrices``: per asset, the composite price of every event-time window.

The engine (``transforms.prices.composite``, no Beam) holds the rules; this module keeps one
engine per asset in Beam state and drives it with event-time timers:

- each valid update is added to a bag, and a ``compose`` timer is set to the end of the latest
  window seen so far (never moved backwards);
- when the watermark passes it, every window that ended is composed in one pass over the bag, in
  order; updates for later windows stay in the bag;
- in streaming a second, ``expire`` timer fires when the freshest source would go stale, so a feed
  that falls silent still yields its ``price_unavailable`` row.

One pass per firing keeps the work linear: in batch the bag is composed once, at the end. Output
rows carry their window's end as the Beam timestamp; ordered-check rejections are dead letters.

    pytest tests/transforms/prices/test_composite.py
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.events import PriceEvent
from schemas.serde import to_json
from schemas.tables import PriceRow
from transforms.common.dead_letter import (
    ALERTS_TAG,
    DEAD_LETTER_TAG,
    MAIN_TAG,
    composite_outputs,
    make_dead_letter,
)
from transforms.common.event_timers import output_timestamp, push_timer_forward
from transforms.prices.composite import (
    MICROS,
    CompositeEngine,
    Obs,
    Reject,
    WindowResult,
    price_id,
    source_priority,
)
from transforms.prices.oracles import (
    OracleDecodeError,
    decode_chainlink_round,
    decode_pyth_update,
    load_registry,
    normalise_feed_id,
)
from transforms.prices.validation import check_update

DEFAULT_WINDOW_SECONDS = 60


def to_obs(event: PriceEvent, heartbeat_s: int) -> Obs:
    return Obs(
        source=event.source,
        feed_key=normalise_feed_id(event.feed_id) or f"{event.source}:{event.asset}",
        price=event.price,
        publish_us=int(Timestamp.from_utc_datetime(event.publish_time).micros),
        round_id=int(event.round_id) if event.round_id is not None else None,
        event_id=event.event_id,
        heartbeat_s=heartbeat_s,
        priority=source_priority(event.source),
    )


def price_row(asset: str, r: WindowResult) -> PriceRow:
    return PriceRow(
        price_id=price_id(asset, r.window_end_us),
        asset=asset,
        price=r.price,
        status=r.status,
        n_sources=len(r.sources),
        sources=list(r.sources),
        sources_set_aside=list(r.set_aside),
        spread_bps=None if r.spread_bps is None else round(r.spread_bps, 6),
        window_start=Timestamp(micros=r.window_start_us).to_utc_datetime(has_tz=True),
        event_time=Timestamp(micros=r.window_end_us).to_utc_datetime(has_tz=True),
    )


def reject_row(asset: str, rej: Reject):
    o = rej.obs
    payload = json.dumps(
        {
            "event_id": o.event_id,
            "asset": asset,
            "source": o.source,
            "feed": o.feed_key,
            "price": str(o.price),
            "publish_time_us": o.publish_us,
            "round_id": o.round_id,
        }
    )
    return make_dead_letter(
        source="market.prices.v1",
        stage="CompositePrices",
        reason=rej.reason,
        error=rej.message,
        raw=payload,
        event_time=Timestamp(micros=o.publish_us).to_utc_datetime(has_tz=True),
    )


@beam.typehints.with_output_types(tuple[str, Any])  # a str key: deterministic for state
class KeyByAssetFn(beam.DoFn):
    def __init__(self, registry_path: str | None):
        self.registry_path = registry_path

    def setup(self):
        self.registry = load_registry(self.registry_path)

    def process(self, event: PriceEvent):
        heartbeat = self.registry.heartbeat(event.asset, event.source) or 60
        yield event.asset, to_obs(event, heartbeat)


class CompositeFn(beam.DoFn):
    """Stateful per asset: buffers updates, composes windows when the watermark passes them."""

    PENDING = BagStateSpec("pending", PickleCoder())
    ENGINE = ReadModifyWriteStateSpec("engine", PickleCoder())
    LATEST_END = ReadModifyWriteStateSpec("latest_end", VarIntCoder())
    COMPOSE = TimerSpec("compose", TimeDomain.WATERMARK)
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(
        self, window_s: int, grace_s: int, max_dev_bps: float, min_sources: int, streaming: bool
    ):
        self.window_s, self.grace_s = window_s, grace_s
        self.max_dev_bps, self.min_sources, self.streaming = max_dev_bps, min_sources, streaming
        self.rows = Metrics.counter("prices", "CompositePrices.rows")
        self.unavailable = Metrics.counter("prices", "CompositePrices.price_unavailable")
        self.rejected = Metrics.counter("prices", "CompositePrices.rejected")

    def process(
        self,
        element,
        pending=beam.DoFn.StateParam(PENDING),
        latest_end=beam.DoFn.StateParam(LATEST_END),
        compose=beam.DoFn.TimerParam(COMPOSE),
    ):
        _, obs = element
        pending.add(obs)
        w = self.window_s * MICROS
        end = obs.publish_us - obs.publish_us % w + w
        push_timer_forward(latest_end, compose, end)

    @on_timer(COMPOSE)
    def on_compose(
        self,
        key=beam.DoFn.KeyParam,
        fire=beam.DoFn.TimestampParam,
        pending=beam.DoFn.StateParam(PENDING),
        engine=beam.DoFn.StateParam(ENGINE),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ):
        yield from self._compose(key, fire, pending, engine, expire)

    @on_timer(EXPIRE)
    def on_expire(
        self,
        key=beam.DoFn.KeyParam,
        fire=beam.DoFn.TimestampParam,
        pending=beam.DoFn.StateParam(PENDING),
        engine=beam.DoFn.StateParam(ENGINE),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ):
        yield from self._compose(key, fire, pending, engine, expire)

    def _compose(self, asset, fire, pending, engine_state, expire):
        engine = engine_state.read() or CompositeEngine(
            self.window_s, self.grace_s, self.max_dev_bps, self.min_sources
        )
        observations = list(pending.read())
        rows, rejects, later = engine.compose(observations, int(fire.micros))
        pending.clear()
        for o in later:
            pending.add(o)
        engine_state.write(engine)
        for r in rows:
            self.rows.inc()
            if r.status == "price_unavailable":
                self.unavailable.inc()
            yield TimestampedValue(
                price_row(asset, r), output_timestamp(r.window_end_us, fire, self.streaming)
            )
        for rej in rejects:
            self.rejected.inc()
            Metrics.counter("dead_letter", f"CompositePrices.{rej.reason}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, reject_row(asset, rej))
        if self.streaming and engine.last_by_source and not engine.unavailable:
            # Wake up when the freshest source goes stale, in case no update arrives before.
            expiry = max(
                o.publish_us + (o.heartbeat_s + self.grace_s) * MICROS
                for o in engine.last_by_source.values()
            )
            w = self.window_s * MICROS
            expire.set(Timestamp(micros=expiry - expiry % w + w))


class CompositePrices(beam.PTransform):
    """Valid PriceEvents -> PriceRows (``MAIN_TAG``), no alerts, and dead letters.

    ``streaming`` enables the expiry timer (a silent feed yields ``price_unavailable``); in batch
    the end of the input is not the end of a feed, so no expiry row is emitted after it.
    """

    def __init__(
        self,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        registry_path: str | None = None,
        grace_s: int | None = None,
        max_dev_bps: float | None = None,
        min_sources: int = 2,
        streaming: bool = False,
    ):
        super().__init__()
        registry = load_registry(registry_path)
        self.window_seconds = window_seconds
        self.registry_path = registry_path
        self.grace_s = registry.grace_s if grace_s is None else grace_s
        self.max_dev_bps = registry.max_source_deviation_bps if max_dev_bps is None else max_dev_bps
        self.min_sources = min_sources
        self.streaming = streaming

    def expand(self, prices):
        return composite_outputs(
            prices
            | "KeyByAsset" >> beam.ParDo(KeyByAssetFn(self.registry_path))
            | "Compose"
            >> beam.ParDo(
                CompositeFn(
                    self.window_seconds,
                    self.grace_s,
                    self.max_dev_bps,
                    self.min_sources,
                    self.streaming,
                )
            ).with_outputs(ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG)
        )


class ValidatePriceFn(beam.DoFn):
    def __init__(
        self, registry_path: str | None, grace_s: int | None, max_conf_ratio: float | None
    ):
        self.registry_path = registry_path
        self.grace_s = grace_s
        self.max_conf_ratio = max_conf_ratio
        self.counters: dict[str, object] = {}

    def setup(self):
        self.registry = load_registry(self.registry_path)

    def process(self, event: PriceEvent):
        verdict = check_update(event, self.registry, self.grace_s, self.max_conf_ratio)
        if verdict is None:
            yield event
            return
        reason, message = verdict
        counter = self.counters.get(reason)
        if counter is None:
            counter = self.counters[reason] = Metrics.counter(
                "dead_letter", f"ValidatePrices.{reason}"
            )
        counter.inc()
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER_TAG,
            make_dead_letter(
                source="market.prices.v1",
                stage="ValidatePrices",
                reason=reason,
                error=message,
                raw=to_json(event),
                event_time=event.publish_time,
            ),
        )


class ValidatePrices(beam.PTransform):
    """PriceEvent -> valid PriceEvent (``MAIN_TAG``), no alerts, and dead letters."""

    def __init__(
        self,
        registry_path: str | None = None,
        grace_s: int | None = None,
        max_conf_ratio: float | None = None,
    ):
        super().__init__()
        self.registry_path = registry_path
        self.grace_s = grace_s
        self.max_conf_ratio = max_conf_ratio

    def expand(self, prices):
        return composite_outputs(
            prices
            | "Check"
            >> beam.ParDo(
                ValidatePriceFn(self.registry_path, self.grace_s, self.max_conf_ratio)
            ).with_outputs(ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG)
        )


DECODERS = {"chainlink": decode_chainlink_round, "pyth": decode_pyth_update}


class DecodeOracleFn(beam.DoFn):
    def __init__(self, kind: str, registry_path: str | None):
        self.kind, self.registry_path = kind, registry_path
        self.stage = f"Decode{kind.capitalize()}"
        self.decoded = Metrics.counter("oracle", f"{self.stage}.out")

    def setup(self):
        self.registry = load_registry(self.registry_path)
        self.decode = DECODERS[self.kind]

    def process(self, raw: bytes):
        try:
            event = self.decode(json.loads(raw), self.registry)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            # OracleDecodeError is a ValueError; json errors are too.
            reason = err.reason if isinstance(err, OracleDecodeError) else "invalid_json"
            Metrics.counter("dead_letter", f"{self.stage}.{reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                make_dead_letter(
                    source=f"oracle.{self.kind}",
                    stage=self.stage,
                    reason=reason,
                    error=str(err)[:2000],
                    raw=raw,
                ),
            )
            return
        self.decoded.inc()
        yield TimestampedValue(event, Timestamp.from_utc_datetime(event.publish_time))


class DecodeOracleUpdates(beam.PTransform):
    """kind: ``chainlink`` or ``pyth``. PriceEvents (``MAIN_TAG``), no alerts, dead letters."""

    def __init__(self, kind: str, registry_path: str | None = None):
        super().__init__()
        if kind not in DECODERS:
            raise ValueError(f"kind must be one of {sorted(DECODERS)}, got {kind!r}")
        self.kind, self.registry_path = kind, registry_path

    def expand(self, payloads):
        return composite_outputs(
            payloads
            | "Decode"
            >> beam.ParDo(DecodeOracleFn(self.kind, self.registry_path)).with_outputs(
                ALERTS_TAG, DEAD_LETTER_TAG, main=MAIN_TAG
            )
        )
