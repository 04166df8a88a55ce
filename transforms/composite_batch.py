"""The composite price rules on arrays: one asset over one span (a day) per call, for backfills.

The same rules as ``transforms.composite_price.CompositeEngine`` (the streaming path), computed
on numpy arrays instead of one ``Obs`` at a time, so a backfill carries an asset-day per element:

1. Order checks per source: an update whose round id (Chainlink) or publish time (Pyth) does not
   increase is ``duplicate_update`` (equal) or ``round_not_increasing`` /
   ``publish_time_not_increasing``; a publish time going back is ``publish_time_not_increasing``.
2. In each window [start, end) every source contributes its latest accepted update published
   before ``end``, while ``end - publish <= heartbeat + grace``.
3. Median of the fresh sources; with three or more, a source further than ``max_dev_bps`` from
   the median is set aside (unless all are); with two that disagree, the preferred one (lowest
   priority) is kept; ``degraded`` when a source was set aside or fewer than ``min_sources``.
4. No fresh source: one ``price_unavailable`` row at the first window of the outage, none after.

Prices are integers in units of 1e-9 (``NANO``), so the median of two sources is exact when the
sources have at most 8 decimals, as Chainlink and Pyth prices do: the batch path gives the
streaming path's Decimal prices digit for digit. ``Carry`` is what one span hands the next (the
latest update per source, whether an outage is open): a day can be composed knowing only its own
updates and the previous day's carry. ``tests/test_composite_batch.py`` checks the two paths give
identical rows on random multi-day streams with outages, outliers and redeliveries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MICROS = 1_000_000
NANO = 1_000_000_000  # prices are int64 multiples of 1e-9 (BigQuery NUMERIC's scale)
STATUS = ("ok", "degraded", "price_unavailable")


@dataclass(frozen=True)
class SourceUpdates:
    """One source's updates for one asset over a span (any order)."""

    publish_us: np.ndarray  # int64
    price_nano: np.ndarray  # int64, price * 1e9
    order_key: np.ndarray  # int64: round id (Chainlink) or publish_us (Pyth)
    event_id: np.ndarray  # object (str)
    is_round: bool  # True when order_key is a round id

    def __len__(self) -> int:
        return len(self.publish_us)


@dataclass(frozen=True)
class Last:
    publish_us: int
    price_nano: int
    order_key: int
    event_id: str


@dataclass
class Carry:
    """The composite state between two spans of one asset."""

    last: dict[str, Last] = field(default_factory=dict)  # source -> latest accepted update
    next_start_us: int | None = None  # first window not composed yet
    unavailable: bool = False  # a price_unavailable row was emitted for the current outage


@dataclass(frozen=True)
class Rejected:
    source: str
    index: int  # into the source's SourceUpdates
    reason: str
    message: str


@dataclass(frozen=True)
class ComposedSpan:
    """The rows of one asset over one span, one entry per emitted window."""

    window_start_us: np.ndarray  # int64
    window_end_us: np.ndarray  # int64
    price_nano: np.ndarray  # int64; 0 where price_unavailable
    status: np.ndarray  # int8 index into STATUS
    used: np.ndarray  # bool, windows x sources: source used in the price
    set_aside: np.ndarray  # bool, windows x sources
    spread_bps: np.ndarray  # float64; NaN where price_unavailable
    sources: tuple[str, ...]  # column order of used / set_aside (sorted names)

    def __len__(self) -> int:
        return len(self.window_end_us)


def order_checks(
    name: str, u: SourceUpdates, last: Last | None
) -> tuple[np.ndarray, list[Rejected], Last | None]:
    """Indices of the accepted updates in order, the rejections, and the new last update."""
    if len(u) == 0:
        return np.zeros(0, dtype=np.int64), [], last
    order = np.lexsort((u.event_id.astype(str), u.publish_us, u.order_key))
    keys, pubs = u.order_key[order], u.publish_us[order]
    prev_key = np.concatenate(([last.order_key if last else np.iinfo(np.int64).min], keys[:-1]))
    prev_pub = np.maximum.accumulate(
        np.concatenate(([last.publish_us if last else np.iinfo(np.int64).min], pubs[:-1]))
    )
    clean = bool(np.all(keys > prev_key) and np.all(pubs >= prev_pub))
    if clean:  # the usual case: nothing to reject, no loop
        i = int(order[-1])
        new_last = Last(
            int(u.publish_us[i]), int(u.price_nano[i]), int(u.order_key[i]), str(u.event_id[i])
        )
        return order, [], new_last
    accepted, rejects = [], []
    for i in order.tolist():
        key, pub = int(u.order_key[i]), int(u.publish_us[i])
        if last is not None:
            if key == last.order_key:
                rejects.append(
                    Rejected(name, i, "duplicate_update", f"redelivery of {last.event_id}")
                )
                continue
            if key < last.order_key:
                reason = "round_not_increasing" if u.is_round else "publish_time_not_increasing"
                rejects.append(
                    Rejected(name, i, reason, f"after {last.event_id} ({last.order_key})")
                )
                continue
            if pub < last.publish_us:
                rejects.append(
                    Rejected(
                        name,
                        i,
                        "publish_time_not_increasing",
                        f"updatedAt went back from {last.publish_us} to {pub}",
                    )
                )
                continue
        last = Last(pub, int(u.price_nano[i]), key, str(u.event_id[i]))
        accepted.append(i)
    return np.asarray(accepted, dtype=np.int64), rejects, last


def compose_span(
    updates: dict[str, SourceUpdates],
    carry: Carry,
    until_us: int,
    heartbeat_s: dict[str, int],
    priority: dict[str, int],
    window_s: int = 60,
    grace_s: int = 120,
    max_dev_bps: float = 100.0,
    min_sources: int = 2,
) -> tuple[ComposedSpan, list[Rejected], Carry]:
    """Composes every window ending at or before ``until_us``; ``updates`` are those published
    before it and at or after the carry's ``next_start_us``."""
    w = window_s * MICROS
    names = tuple(sorted(set(updates) | set(carry.last)))
    accepted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rejects: list[Rejected] = []
    new_last = dict(carry.last)
    first_pub = None
    for s in names:
        u = updates.get(s)
        if u is None or len(u) == 0:
            accepted[s] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            continue
        idx, rej, last = order_checks(s, u, carry.last.get(s))
        rejects += rej
        if last is not None:
            new_last[s] = last
        pubs, prices = u.publish_us[idx], u.price_nano[idx]
        accepted[s] = (pubs, prices)
        if len(pubs):
            first_pub = int(pubs.min()) if first_pub is None else min(first_pub, int(pubs.min()))
    start = carry.next_start_us
    if start is None:
        if first_pub is None:
            return _empty(names), rejects, Carry(new_last, None, carry.unavailable)
        start = first_pub - first_pub % w
    n_windows = max(0, (until_us - start) // w)
    ends = start + w * (np.arange(n_windows, dtype=np.int64) + 1)
    k = len(names)
    price = np.zeros((n_windows, k), dtype=np.int64)
    fresh = np.zeros((n_windows, k), dtype=bool)
    for j, s in enumerate(names):
        pubs, prices = accepted[s]
        carried = carry.last.get(s)
        if carried is not None:
            pubs = np.concatenate(([carried.publish_us], pubs))
            prices = np.concatenate(([carried.price_nano], prices))
        if len(pubs) == 0:
            continue
        # Accepted updates are in order and publish times never go back: searchsorted is exact.
        pos = np.searchsorted(pubs, ends, side="left") - 1  # latest update published before end
        has = pos >= 0
        pos = np.clip(pos, 0, None)
        age = ends - pubs[pos]
        fresh[:, j] = has & (age <= (heartbeat_s[s] + grace_s) * MICROS)
        price[:, j] = prices[pos]
    out_price, status, used, aside, spread = _median_rules(
        price, fresh, [priority[s] for s in names], max_dev_bps, min_sources
    )
    # An outage gives one row, at its first window (or none if it was already open).
    none = ~fresh.any(axis=1)
    prev_none = np.concatenate(([carry.unavailable], none[:-1]))
    keep = ~none | ~prev_none
    unavailable = bool(none[-1]) if n_windows else carry.unavailable
    span = ComposedSpan(
        window_start_us=(ends - w)[keep],
        window_end_us=ends[keep],
        price_nano=out_price[keep],
        status=status[keep],
        used=used[keep],
        set_aside=aside[keep],
        spread_bps=spread[keep],
        sources=names,
    )
    return span, rejects, Carry(new_last, int(start + w * n_windows), unavailable)


def _median_rules(
    price: np.ndarray, fresh: np.ndarray, prio: list[int], max_dev_bps: float, min_sources: int
):
    n_windows, k = price.shape
    n_fresh = fresh.sum(axis=1)
    aside = np.zeros_like(fresh)
    pf = price.astype(np.float64)
    # Three or more: set aside sources far from the median (unless that is all of them).
    many = n_fresh >= 3
    if many.any():
        masked = np.where(fresh, pf, np.nan)
        med = np.nanmedian(masked[many], axis=1)
        dev = np.abs(masked[many] - med[:, None]) / med[:, None] * 10_000
        far = fresh[many] & (dev > max_dev_bps)
        far[far.sum(axis=1) == n_fresh[many]] = False
        aside[many] = far
    # Two: when they disagree, keep the preferred (lowest priority number).
    two = n_fresh == 2
    if two.any():
        rank = np.asarray(prio, dtype=np.int64)
        order = np.argsort(np.where(fresh[two], rank[None, :], np.iinfo(np.int64).max), axis=1)
        a, b = order[:, 0], order[:, 1]
        rows = np.nonzero(two)[0]
        pa, pb = pf[rows, a], pf[rows, b]
        disagree = np.abs(pa - pb) / np.minimum(pa, pb) * 10_000 > max_dev_bps
        aside[rows[disagree], b[disagree]] = True
    used = fresh & ~aside
    n_used = used.sum(axis=1)
    # Median of the used prices, exactly in integers (mean of the two middle values).
    big = np.iinfo(np.int64).max
    srt = np.sort(np.where(used, price, big), axis=1)
    lo_i = np.clip((n_used - 1) // 2, 0, k - 1)
    hi_i = np.clip(n_used // 2, 0, k - 1)
    r = np.arange(n_windows)
    lo, hi = srt[r, lo_i], srt[r, hi_i]
    has = n_used > 0
    med = np.where(has, lo + (hi - lo) // 2, 0)
    pmax = np.where(used, price, np.iinfo(np.int64).min).max(axis=1) if k else np.zeros(n_windows)
    pmin = np.where(used, price, big).min(axis=1) if k else np.zeros(n_windows)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(has, (pmax - pmin).astype(np.float64) / med * 10_000, np.nan)
    status = np.where(~has, 2, np.where(aside.any(axis=1) | (n_used < min_sources), 1, 0)).astype(
        np.int8
    )
    return med, status, used, aside, spread


def _empty(names: tuple[str, ...]) -> ComposedSpan:
    z = np.zeros(0, dtype=np.int64)
    b = np.zeros((0, len(names)), dtype=bool)
    return ComposedSpan(z, z, z, np.zeros(0, np.int8), b, b, np.zeros(0), names)
