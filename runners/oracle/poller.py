"""The oracle poller: one cycle per interval reads every registry feed and publishes PriceEvents.

    defi-risk oracle poll --rpc-url URL --hermes-url URL --interval 10 --publish jsonl:prices.jsonl
    pytest -q tests/runners/oracle/test_poller.py

Guarantees, per cycle:

* no missed Chainlink rounds: the last handled round of each feed is kept; when
  ``latestRoundData`` jumps by more than one aggregator round within a phase, the missing rounds
  are read with ``getRoundData`` and handled in order (a new phase restarts at aggregator round 1);
  if a read fails, the feed stops there and resumes from the same round next cycle;
* no duplicates and nothing out of order: a (feed, round) or (Pyth feed, publish_time) is handled
  once, and never after a newer one;
* nothing stale as fresh: ``observed_at`` is the clock time of the read, and a reading older than
  the feed's ``heartbeat_s`` + the registry's ``grace_s`` is a dead letter (reason ``stale``), as
  are decode errors (their ``OracleDecodeError.reason``). Every reading is counted:
  ``polled == published + duplicates_skipped + dead letters + events waiting to be published``.

A source whose circuit breaker is open is not called and shows ``degraded`` in ``status()``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runners.oracle.hermes import HermesClient
from runners.oracle.publish import DeadLetterSink, Publisher, open_publisher
from runners.oracle.resilience import (
    CLOSED,
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    Clock,
    RetryPolicy,
    SourceError,
    SystemClock,
    call_with_retry,
)
from runners.oracle.rpc import ChainlinkReader, JsonRpcClient, RoundData
from schemas.events import PriceEvent
from transforms.prices.oracles import (
    Feed,
    FeedRegistry,
    OracleDecodeError,
    compose_round_id,
    decode_chainlink_round,
    decode_pyth_update,
    load_registry,
    normalise_feed_id,
    split_round_id,
)

log = logging.getLogger(__name__)
SOURCES = ("chainlink", "pyth")
PYTH_RECENT = 64  # publish times remembered per Pyth feed, to spot a lagging Hermes node's repeats


@dataclass
class PollerConfig:
    interval_s: float = 10.0
    timeout_s: float = 5.0  # per HTTP request
    max_retries: int = 3
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 5.0  # and never more than one interval
    breaker_threshold: int = 5  # consecutive failed requests that open a source's breaker
    breaker_cooldown_s: float = 30.0
    max_backfill: int = 100  # getRoundData reads per feed and cycle; the rest next cycle
    max_outbox: int = 10_000  # unpublished events kept for the next cycle before dead-lettering

    def __post_init__(self):
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("interval and timeout must be positive")
        if self.max_retries < 0 or self.max_backfill < 1:
            raise ValueError("max_retries must be >= 0 and max_backfill >= 1")


@dataclass
class _Reading:
    """One Chainlink round as read (``data`` None: the aggregator has no data for it)."""

    feed: Feed
    round_id: int
    data: RoundData | None
    decimals: int
    observed: float


@dataclass
class CycleReport:
    cycle: int
    started_at: datetime
    duration_s: float
    polled: int
    published: int
    duplicates_skipped: int
    dead_letters: Counter
    unpublished: int
    status: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        dead = sum(self.dead_letters.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.dead_letters.items()))
        status = " ".join(f"{s}={v}" for s, v in self.status.items())
        text = (
            f"cycle {self.cycle}: polled {self.polled}, published {self.published}, "
            f"duplicates {self.duplicates_skipped}, dead letters {dead}"
            + (f" ({reasons})" if reasons else "")
            + f", status {status}, {self.duration_s * 1000:.0f} ms"
        )
        if self.unpublished:
            text += f", {self.unpublished} waiting to publish"
        for source, err in self.errors.items():
            text += f"\n  {source}: {err}"
        return text


class OraclePoller:
    def __init__(
        self,
        registry: FeedRegistry,
        publisher: Publisher,
        *,
        chainlink: ChainlinkReader | None = None,
        hermes: HermesClient | None = None,
        config: PollerConfig | None = None,
        dead_letters: DeadLetterSink | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        status_file: str | Path | None = None,
        sleep: Callable[[float], Any] | None = None,
    ):
        if chainlink is None and hermes is None:
            raise ValueError("the poller needs a Chainlink RPC, a Hermes URL, or both")
        self.registry = registry
        self.publisher = publisher
        self.chainlink = chainlink
        self.hermes = hermes
        self.config = config or PollerConfig()
        self.dead_letters = dead_letters or DeadLetterSink()
        self.clock = clock or SystemClock()
        self.status_file = Path(status_file) if status_file else None
        self._stop = threading.Event()
        # With the real clock, sleeping on the stop event lets stop() (Ctrl-C, SIGTERM) end a wait.
        self._sleep = sleep or (
            self._stop.wait if isinstance(self.clock, SystemClock) else self.clock.sleep
        )
        cfg = self.config
        self.retry = RetryPolicy(
            cfg.max_retries,
            Backoff(
                cfg.backoff_base_s, min(cfg.backoff_cap_s, cfg.interval_s), rng or random.Random()
            ),
        )
        self.chainlink_feeds = (
            [f for f in registry.feeds if f.source == "chainlink"] if chainlink else []
        )
        self.pyth_feeds = [f for f in registry.feeds if f.source == "pyth"] if hermes else []
        enabled = [s for s, on in (("chainlink", chainlink), ("pyth", hermes)) if on is not None]
        self.breakers = {
            s: CircuitBreaker(s, cfg.breaker_threshold, cfg.breaker_cooldown_s, self.clock)
            for s in enabled
        }
        self.counters: Counter[str] = Counter()
        self.cycle = 0
        self._last_round: dict[str, int] = {}  # feed key -> last handled round id (with phase)
        self._decimals: dict[str, int] = {}
        self._pyth_last: dict[str, int] = {}  # feed key -> newest handled publish_time
        self._pyth_recent: dict[str, deque[int]] = {}
        self._outbox: list[PriceEvent] = []
        self._executor = ThreadPoolExecutor(
            max_workers=len(self.chainlink_feeds) + 1, thread_name_prefix="oracle-poll"
        )

    # ---------------------------------------------------------------------------------- status
    def status(self) -> dict[str, str]:
        """``ok`` or ``degraded`` (breaker not closed) per source; ``disabled`` if not configured."""

        def state(source: str) -> str:
            if source not in self.breakers:
                return "disabled"
            return "ok" if self.breakers[source].state == CLOSED else "degraded"

        return {s: state(s) for s in SOURCES}

    @property
    def last_rounds(self) -> dict[str, int]:
        return dict(self._last_round)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ----------------------------------------------------------------------------------- cycle
    def run(
        self,
        iterations: int | None = None,
        duration_s: float | None = None,
        on_cycle: Callable[[CycleReport], Any] | None = None,
    ) -> None:
        """Cycles at a fixed rate until ``iterations``, ``duration_s`` or ``stop()``."""
        started = self.clock.monotonic()
        done = 0
        while not self._stop.is_set():
            cycle_start = self.clock.monotonic()
            report = self.poll_once()
            done += 1
            if on_cycle is not None:
                on_cycle(report)
            next_start = cycle_start + self.config.interval_s
            if iterations is not None and done >= iterations:
                break
            if duration_s is not None and next_start - started >= duration_s:
                break
            wait = next_start - self.clock.monotonic()
            if wait > 0:
                self._sleep(wait)
            else:
                self.counters["overruns"] += 1  # a slow cycle: start the next one at once

    def poll_once(self) -> CycleReport:
        self.cycle += 1
        t0, started_at = self.clock.monotonic(), self.clock.time()
        deadline = t0 + self.config.interval_s
        before, dead_before = Counter(self.counters), Counter(self.dead_letters.counts)
        errors: dict[str, str] = {}

        pyth_future = None
        if self.hermes is not None:
            if self.breakers["pyth"].would_allow():
                pyth_future = self._executor.submit(self._read_pyth, deadline)
            else:
                self.counters["skipped_pyth"] += 1
        chainlink_results = self._read_chainlink(deadline) if self.chainlink else []

        failures = [err for _, err in chainlink_results if err is not None]
        if failures:  # report a real failure rather than "breaker open" when a cycle has both
            real = [err for err in failures if not isinstance(err, CircuitOpenError)]
            errors["chainlink"] = str((real or failures)[0])
        for readings, _ in chainlink_results:
            for reading in readings:
                self._handle_chainlink(reading)
        if pyth_future is not None:
            updates, observed, err = pyth_future.result()
            if err is not None:
                errors["pyth"] = str(err)
            for raw in updates:
                self._handle_pyth(raw, observed)
        self._flush_outbox()

        for source, err in errors.items():
            log.info("%s: %s", source, err)  # the cycle report carries them too
        dead = self.dead_letters.counts - dead_before
        report = CycleReport(
            cycle=self.cycle,
            started_at=datetime.fromtimestamp(started_at, UTC),
            duration_s=self.clock.monotonic() - t0,
            polled=self.counters["polled"] - before["polled"],
            published=self.counters["published"] - before["published"],
            duplicates_skipped=self.counters["duplicates_skipped"] - before["duplicates_skipped"],
            dead_letters=dead,
            unpublished=len(self._outbox),
            status=self.status(),
            errors=errors,
        )
        self._write_status(report)
        return report

    # ------------------------------------------------------------------------------- chainlink
    def _call(self, source: str, fn: Callable[[], Any], deadline: float, what: str) -> Any:
        return call_with_retry(
            fn,
            policy=self.retry,
            clock=self.clock,
            breaker=self.breakers[source],
            deadline=deadline,
            what=what,
        )

    def _read_chainlink(self, deadline: float) -> list[tuple[list[_Reading], SourceError | None]]:
        breaker, feeds = self.breakers["chainlink"], self.chainlink_feeds
        if not breaker.would_allow():
            self.counters["skipped_chainlink"] += 1
            return []
        results: dict[str, tuple[list[_Reading], SourceError | None]] = {}
        rest = feeds
        if breaker.state != CLOSED:
            # half-open: one feed is the trial; the others follow only if it closes the breaker
            probe = feeds[self.cycle % len(feeds)]
            results[probe.key] = self._read_chainlink_feed(probe, deadline)
            rest = [f for f in feeds if f is not probe] if breaker.state == CLOSED else []
        futures = [(f, self._executor.submit(self._read_chainlink_feed, f, deadline)) for f in rest]
        for feed, future in futures:
            results[feed.key] = future.result()
        return [results[f.key] for f in feeds if f.key in results]

    def _read_chainlink_feed(
        self, feed: Feed, deadline: float
    ) -> tuple[list[_Reading], SourceError | None]:
        """The feed's rounds to handle, in order: missing rounds first, then the latest.

        Runs in a worker thread and only reads the poller's state; the main thread updates it.
        """
        reader, readings = self.chainlink, []
        address = feed.feed_id
        try:
            decimals = self._decimals.get(feed.key)
            if decimals is None:
                decimals = self._call(
                    "chainlink",
                    lambda: reader.decimals(address),
                    deadline,
                    f"decimals {feed.asset}",
                )
                self._decimals[feed.key] = decimals
            latest = self._call(
                "chainlink",
                lambda: reader.latest_round(address),
                deadline,
                f"latestRoundData {feed.asset}",
            )
            observed = self.clock.time()
            last = self._last_round.get(feed.key)
            if last is None or latest.round_id <= last:
                # first reading of the feed (it is the baseline), or nothing new
                return [_Reading(feed, latest.round_id, latest, decimals, observed)], None
            phase, agg = split_round_id(latest.round_id)
            last_phase, last_agg = split_round_id(last)
            budget = self.config.max_backfill

            def read(rid: int) -> RoundData | None:
                return self._call(
                    "chainlink",
                    lambda: reader.get_round(address, rid),
                    deadline,
                    f"getRoundData {feed.asset} {split_round_id(rid)}",
                )

            # A phase change: first finish the older phases (the proxy still routes getRoundData
            # to their aggregators; the first round without data ends a phase), then the new
            # phase restarts at aggregator round 1.
            for old_phase in range(last_phase, phase):
                agg_round = last_agg + 1 if old_phase == last_phase else 1
                while True:
                    if budget <= 0:
                        return readings, None  # the rest, and the latest, next cycle
                    rid = compose_round_id(old_phase, agg_round)
                    data, budget = read(rid), budget - 1
                    if data is None:
                        break
                    readings.append(_Reading(feed, rid, data, decimals, self.clock.time()))
                    agg_round += 1
            for agg_round in range(last_agg + 1 if phase == last_phase else 1, agg):
                if budget <= 0:
                    return readings, None
                rid = compose_round_id(phase, agg_round)
                readings.append(_Reading(feed, rid, read(rid), decimals, self.clock.time()))
                budget -= 1
            readings.append(_Reading(feed, latest.round_id, latest, decimals, observed))
            return readings, None
        except SourceError as err:
            # what was read is handled; the feed resumes from its last handled round next cycle
            return readings, err

    def _handle_chainlink(self, reading: _Reading) -> None:
        feed, rid = reading.feed, reading.round_id
        self.counters["polled"] += 1
        last = self._last_round.get(feed.key)
        if last is not None and rid <= last:
            self.counters["duplicates_skipped"] += 1
            return
        self._last_round[feed.key] = rid  # handled from here on: published or dead-lettered
        observed = datetime.fromtimestamp(reading.observed, UTC)
        data = reading.data
        if data is None:
            self._dead_letter(
                "chainlink",
                "round_missing",
                f"getRoundData({rid}) has no data",
                {"feed": feed.feed_id, "round_id": rid},
                observed,
            )
            return
        raw = data.raw(feed.feed_id, reading.decimals)
        if data.round_id != rid:
            self._dead_letter(
                "chainlink",
                "round_mismatch",
                f"asked for round {rid}, got {data.round_id}",
                raw,
                observed,
            )
            return
        try:
            event = decode_chainlink_round(raw, self.registry, observed)
        except OracleDecodeError as err:
            self._dead_letter("chainlink", err.reason, str(err), raw, observed)
            return
        self._emit_if_fresh("chainlink", feed, event, raw, observed)

    # ------------------------------------------------------------------------------------ pyth
    def _read_pyth(self, deadline: float) -> tuple[list[Any], float, SourceError | None]:
        ids = [f.feed_id for f in self.pyth_feeds]
        try:
            updates = self._call("pyth", lambda: self.hermes.latest(ids), deadline, "Hermes latest")
        except SourceError as err:
            return [], self.clock.time(), err
        return updates, self.clock.time(), None

    def _handle_pyth(self, raw: Any, observed_ts: float) -> None:
        self.counters["polled"] += 1
        observed = datetime.fromtimestamp(observed_ts, UTC)
        key, publish_time = _pyth_key(raw)
        if key is not None and publish_time is not None:
            recent = self._pyth_recent.setdefault(key, deque(maxlen=PYTH_RECENT))
            if publish_time in recent:
                self.counters["duplicates_skipped"] += 1
                return
            recent.append(publish_time)
            last = self._pyth_last.get(key)
            if last is not None and publish_time < last:
                self._dead_letter(
                    "pyth",
                    "out_of_order",
                    f"publish_time {publish_time} is older than the last handled {last}",
                    raw,
                    observed,
                )
                return
            self._pyth_last[key] = publish_time
        try:
            event = decode_pyth_update(raw, self.registry, observed)
        except OracleDecodeError as err:
            self._dead_letter("pyth", err.reason, str(err), raw, observed)
            return
        self._emit_if_fresh("pyth", self.registry.by_id(event.feed_id), event, raw, observed)

    # -------------------------------------------------------------------------------- emitting
    def _emit_if_fresh(
        self, source: str, feed: Feed, event: PriceEvent, raw: Any, observed: datetime
    ) -> None:
        age = (observed - event.publish_time).total_seconds()
        limit = feed.heartbeat_s + self.registry.grace_s
        if age > limit:
            self._dead_letter(
                source,
                "stale",
                f"{feed.asset} {source} price is {age:.0f} s old at observation, more than "
                f"heartbeat {feed.heartbeat_s} s + grace {self.registry.grace_s} s",
                raw,
                observed,
                event.publish_time,
            )
            return
        self._outbox.append(event)

    def _flush_outbox(self) -> None:
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        failed = self.publisher.publish(batch)
        self.counters["published"] += len(batch) - len(failed)
        if failed:
            self.counters["publish_failures"] += len(failed)
            log.error("%d events not published; retried next cycle", len(failed))
        self._outbox = list(failed)
        while len(self._outbox) > self.config.max_outbox:
            self._drop_unpublished(self._outbox.pop(0))

    def _drop_unpublished(self, event: PriceEvent) -> None:
        self._dead_letter(
            event.source,
            "publish_failed",
            "could not be published",
            json.loads(event.model_dump_json()),
            datetime.fromtimestamp(self.clock.time(), UTC),
            event.publish_time,
        )

    def _dead_letter(
        self,
        source: str,
        reason: str,
        error: str,
        raw: Any,
        observed: datetime,
        event_time: datetime | None = None,
    ) -> None:
        self.dead_letters.write(
            source=source,
            reason=reason,
            error=error,
            raw=raw,
            observed_at=observed,
            event_time=event_time,
        )

    def _write_status(self, report: CycleReport) -> None:
        if self.status_file is None:
            return
        doc = {
            **report.status,
            "cycle": report.cycle,
            "updated_at": report.started_at.isoformat(),
            "counters": dict(self.counters),
            "dead_letters": dict(self.dead_letters.counts),
            "errors": report.errors,
        }
        tmp = self.status_file.with_name(self.status_file.name + ".tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True) + "\n")
        os.replace(tmp, self.status_file)  # readers never see a half-written file

    def close(self) -> None:
        """Stop the workers, publish what is waiting (dead-letter what still fails), close sinks."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._flush_outbox()
        for event in self._outbox:
            self._drop_unpublished(event)
        self._outbox = []
        self.publisher.close()
        self.dead_letters.close()


def _pyth_key(raw: Any) -> tuple[str | None, int | None]:
    """(feed key, publish_time) straight from the raw update, for dedup before decoding."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        return None, None
    price = raw.get("price")
    publish_time = price.get("publish_time") if isinstance(price, dict) else None
    if isinstance(publish_time, bool) or not isinstance(publish_time, int | str):
        return normalise_feed_id(raw["id"]), None
    try:
        return normalise_feed_id(raw["id"]), int(publish_time)
    except ValueError:
        return normalise_feed_id(raw["id"]), None


# ---------------------------------------------------------------------------------------- CLI
def poll_command(args: argparse.Namespace) -> int:
    """``defi-risk oracle poll``: build the poller from the arguments and run it.

    Ctrl-C or SIGTERM stops after the current cycle (what is waiting is still published and the
    sinks are closed); a second Ctrl-C aborts at once.
    """
    if not args.rpc_url and not args.hermes_url:
        print("defi-risk oracle poll: give --rpc-url, --hermes-url or both", file=sys.stderr)
        return 2
    try:
        config = PollerConfig(
            interval_s=args.interval,
            timeout_s=args.timeout,
            max_retries=args.max_retries,
            breaker_threshold=args.breaker_threshold,
            breaker_cooldown_s=args.breaker_cooldown,
        )
        registry = load_registry(args.feeds_registry)
        publisher = open_publisher(args.publish, args.pubsub_format)
    except ValueError as err:  # includes RegistryError
        print(f"defi-risk oracle poll: {err}", file=sys.stderr)
        return 2
    poller = OraclePoller(
        registry,
        publisher,
        chainlink=ChainlinkReader(JsonRpcClient(args.rpc_url, args.timeout))
        if args.rpc_url
        else None,
        hermes=HermesClient(args.hermes_url, args.timeout) if args.hermes_url else None,
        config=config,
        dead_letters=DeadLetterSink(args.dead_letter_file),
        status_file=args.status_file,
    )

    def graceful(signum, frame) -> None:
        if poller.stopping:
            raise KeyboardInterrupt
        print("oracle poll: stopping after this cycle (Ctrl-C again to abort)", flush=True)
        poller.stop()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, graceful) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(
        f"oracle poll: {len(poller.chainlink_feeds)} Chainlink + {len(poller.pyth_feeds)} Pyth "
        f"feeds every {args.interval:g} s -> {args.publish}",
        flush=True,
    )
    try:
        poller.run(args.iterations, args.duration, on_cycle=lambda r: print(r.line(), flush=True))
    except KeyboardInterrupt:
        print("oracle poll: aborted", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        poller.close()
    c = poller.counters
    print(
        f"oracle poll: {poller.cycle} cycles, polled {c['polled']}, published {c['published']}, "
        f"duplicates skipped {c['duplicates_skipped']}, "
        f"dead letters {dict(sorted(poller.dead_letters.counts.items()))}"
        + (f", {c['publish_failures']} publish failures" if c["publish_failures"] else ""),
        flush=True,
    )
    return 0
