"""The composite price engine (pure, no Beam): ordered checks, carry-forward, outliers, gaps.

Per asset, prices are composed in fixed windows of event time (default one minute):

1. Each feed's updates are put in order (Chainlink by round id, Pyth by publish time). A redelivered
   update is ``duplicate_update``; a round id or publish time that goes backwards is
   ``round_not_increasing`` / ``publish_time_not_increasing``; an update for a window that was
   already composed is ``late_update``. Each becomes a dead letter.
2. In each window every source contributes its latest update, or carries its previous one forward
   while that is younger than the feed's heartbeat plus the grace period (Chainlink updates only on
   deviation or heartbeat, so a quiet feed is not a dead feed).
3. The composite is the median of the sources. A source further than ``max_dev_bps`` from the
   median of three or more is set aside; with two sources that disagree, the preferred one (the
   registry's first source, Chainlink) is kept. Either way the price is ``degraded``, as it is with
   fewer than ``min_sources`` sources.
4. With no fresh source left, no price is emitted: one ``price_unavailable`` row marks the start
   of the outage, so downstream margin logic never acts on a stale price.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from decimal import Decimal

from schemas.base import deterministic_id

MICROS = 1_000_000
# When two sources disagree the lower number is kept (the registry's preferred source first).
SOURCE_PRIORITY = {"chainlink": 0, "pyth": 1, "cex": 2, "dex": 3}


def source_priority(source: str) -> int:
    return SOURCE_PRIORITY.get(source, 9)


def price_id(asset: str, window_end_us: int) -> str:
    """The id of a composite price row: the same for the stream and the backfill."""
    return deterministic_id("prices", asset, window_end_us)


@dataclass(frozen=True)
class Obs:
    """One valid price update, reduced to what the composite needs."""

    source: str
    feed_key: str
    price: Decimal
    publish_us: int
    round_id: int | None  # Chainlink only
    event_id: str
    heartbeat_s: int
    priority: int  # lower is preferred when two sources disagree

    def order_key(self) -> int:
        return self.round_id if self.round_id is not None else self.publish_us


@dataclass(frozen=True)
class Reject:
    obs: Obs
    reason: str
    message: str


@dataclass(frozen=True)
class WindowResult:
    window_start_us: int
    window_end_us: int
    price: Decimal | None
    status: str  # ok, degraded, price_unavailable
    sources: tuple[str, ...]
    set_aside: tuple[str, ...]
    spread_bps: float | None


def median_with_outliers(
    candidates: dict[str, tuple[Decimal, int]], max_dev_bps: float, min_sources: int
) -> tuple[Decimal, str, tuple[str, ...], tuple[str, ...], float]:
    """candidates: source -> (price, priority). Returns price, status, used, set aside, spread."""
    kept = dict(candidates)
    aside: list[str] = []
    if len(kept) >= 3:
        m = statistics.median(p for p, _ in kept.values())
        aside = [s for s, (p, _) in kept.items() if abs(p - m) / m * 10_000 > max_dev_bps]
        if len(aside) == len(kept):  # no majority: nothing can be trusted more than the rest
            aside = []
    elif len(kept) == 2:
        (s1, (p1, r1)), (s2, (p2, r2)) = sorted(kept.items(), key=lambda kv: kv[1][1])
        if abs(p1 - p2) / min(p1, p2) * 10_000 > max_dev_bps:
            aside = [s2]  # keep the preferred source
    for s in aside:
        kept.pop(s)
    prices = sorted(p for p, _ in kept.values())
    price = statistics.median(prices)
    spread = float((prices[-1] - prices[0]) / price * 10_000)
    status = "degraded" if aside or len(kept) < min_sources else "ok"
    return price, status, tuple(sorted(kept)), tuple(sorted(aside)), spread


@dataclass
class CompositeEngine:
    """The composite state of one asset; ``compose`` is called with each batch of updates."""

    window_s: int = 60
    grace_s: int = 120
    max_dev_bps: float = 100.0
    min_sources: int = 2
    next_start_us: int | None = None  # the first window not composed yet
    last_by_source: dict[str, Obs] = field(default_factory=dict)
    last_by_feed: dict[str, Obs] = field(default_factory=dict)
    unavailable: bool = False  # a price_unavailable row was emitted for the current outage

    def window_start(self, t_us: int) -> int:
        w = self.window_s * MICROS
        return t_us - t_us % w

    def compose(
        self, observations: list[Obs], until_us: int
    ) -> tuple[list[WindowResult], list[Reject], list[Obs]]:
        """Composes every window that ends at or before ``until_us``.

        Returns the rows, the rejected updates, and the updates kept for later windows.
        """
        w = self.window_s * MICROS
        later = [o for o in observations if self.window_start(o.publish_us) + w > until_us]
        now = [o for o in observations if self.window_start(o.publish_us) + w <= until_us]
        accepted, rejects = self._order_checks(now)
        buckets: dict[int, list[Obs]] = {}
        for o in accepted:
            buckets.setdefault(self.window_start(o.publish_us), []).append(o)
        starts = sorted(buckets)
        rows: list[WindowResult] = []
        start = (
            self.next_start_us
            if self.next_start_us is not None
            else (starts[0] if starts else None)
        )
        if start is None:
            return rows, rejects, later
        i = 0
        while start + w <= until_us:
            for o in buckets.get(start, ()):
                prev = self.last_by_source.get(o.source)
                if prev is None or o.publish_us >= prev.publish_us:
                    self.last_by_source[o.source] = o
            while i < len(starts) and starts[i] <= start:
                i += 1
            row = self._window(start, start + w)
            if row is not None:
                rows.append(row)
            if row is None and self.unavailable:
                # Nothing fresh and the outage is already reported: jump to the next update.
                if i >= len(starts):
                    start = max(start + w, self.window_start(until_us))
                    break
                start = starts[i]
                continue
            start += w
        self.next_start_us = start
        return rows, rejects, later

    def _window(self, start: int, end: int) -> WindowResult | None:
        fresh = {
            s: (o.price, o.priority)
            for s, o in self.last_by_source.items()
            if end - o.publish_us <= (o.heartbeat_s + self.grace_s) * MICROS
        }
        if not fresh:
            if self.unavailable:
                return None
            self.unavailable = True
            return WindowResult(start, end, None, "price_unavailable", (), (), None)
        self.unavailable = False
        price, status, used, aside, spread = median_with_outliers(
            fresh, self.max_dev_bps, self.min_sources
        )
        return WindowResult(start, end, price, status, used, aside, spread)

    def _order_checks(self, observations: list[Obs]) -> tuple[list[Obs], list[Reject]]:
        accepted: list[Obs] = []
        rejects: list[Reject] = []
        for o in sorted(
            observations, key=lambda o: (o.feed_key, o.order_key(), o.publish_us, o.event_id)
        ):
            last = self.last_by_feed.get(o.feed_key)
            if self.next_start_us is not None and o.publish_us < self.next_start_us:
                rejects.append(Reject(o, "late_update", "its window was already composed"))
                continue
            if last is not None:
                if o.order_key() == last.order_key():
                    rejects.append(Reject(o, "duplicate_update", f"redelivery of {last.event_id}"))
                    continue
                if o.order_key() < last.order_key():
                    reason = (
                        "round_not_increasing"
                        if o.round_id is not None
                        else "publish_time_not_increasing"
                    )
                    rejects.append(Reject(o, reason, f"after {last.event_id} ({last.order_key()})"))
                    continue
                if o.publish_us < last.publish_us:
                    rejects.append(
                        Reject(
                            o,
                            "publish_time_not_increasing",
                            f"updatedAt went back from {last.publish_us} to {o.publish_us}",
                        )
                    )
                    continue
            self.last_by_feed[o.feed_key] = o
            accepted.append(o)
        return accepted, rejects
