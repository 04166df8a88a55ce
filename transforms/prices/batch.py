"""The composite price rules on arrays: one asset over one span (a day) per call, for backfills.

The same rules as ``transforms.prices.composite.CompositeEngine`` (the streaming path), computed
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
updates and the previous day's carry. ``tests/transforms/prices/test_batch.py`` checks the two paths give
identical rows on random multi-day streams with outages, outliers and redeliveries.

A day for the backfill: ``validate_prices`` applies ``validation.check_update``'s rules as column
masks, ``compose_day`` composes each asset's day from its updates and the previous day's carry and
returns the ``prices`` rows (contract schema, the streaming rows' ids), each asset's close (the last
non-null composite, the window ending at midnight included: ``ComputeVaR``'s bucket close) and the
dead letters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codegen import arrow_schema
from schemas.tables import (
    DeadLetterRow,
    PriceRow,
)
from transforms.common.columns import (
    MICROS,
    NANO,
    day_bounds_us,
    decimal_array,
    name_lists,
    to_micros,
    to_nano,
)
from transforms.prices.composite import price_id, source_priority
from transforms.prices.oracles import FeedRegistry

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


PRICE_SCHEMA = arrow_schema(PriceRow)


DEAD_LETTER_SCHEMA = arrow_schema(DeadLetterRow)


# ----------------------------------------------------------------------------- validation
def validate_prices(
    table: pa.Table,
    registry: FeedRegistry,
    grace_s: int | None = None,
    max_conf: float | None = None,
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """``check_update``'s rules as column masks: (valid mask, [(row, reason, message)]).

    The feed rules are decided once per distinct (asset, source, feed id) of the table, then
    broadcast; the numeric rules are array comparisons.
    """
    n = table.num_rows
    grace = registry.grace_s if grace_s is None else grace_s
    limit = registry.max_conf_ratio if max_conf is None else max_conf
    feed_ids = pc.fill_null(table["feed_id"], "")
    combo = pc.binary_join_element_wise(table["asset"], table["source"], feed_ids, "\x1f")
    enc = pc.dictionary_encode(combo).combine_chunks()
    idx = enc.indices.to_numpy(zero_copy_only=False)
    known = set(registry.assets())
    n_combo = len(enc.dictionary)
    feed_reason: list[tuple[str, str] | None] = []
    hb = np.zeros(n_combo)
    lo = np.full(n_combo, -np.inf)
    hi = np.full(n_combo, np.inf)
    for k, key in enumerate(enc.dictionary.to_pylist()):
        asset, source, fid = key.split("\x1f")
        f = registry.by_id(fid) if fid else registry.for_asset(asset, source)
        if asset not in known:
            feed_reason.append(("unknown_asset", f"asset {asset!r} has no feed in the registry"))
        elif f is None or f.asset != asset or f.source != source:
            feed_reason.append(("unknown_feed", f"{source} feed {fid!r} is not in the registry"))
        else:
            feed_reason.append(None)
            hb[k] = f.heartbeat_s
            lo[k] = float(f.min_price) if f.min_price is not None else -np.inf
            hi[k] = float(f.max_price) if f.max_price is not None else np.inf
    price = pc.cast(table["price"], pa.float64()).to_numpy(zero_copy_only=False)
    codes = np.zeros(n, dtype=np.int8)  # 0 valid; else 1 + index into RULES
    rules = ["non_positive_price", "stale", "answered_in_round_lag", "pinned_at_bound",
             "confidence_too_wide"]  # fmt: skip
    feed_bad = (
        np.array([r is not None for r in feed_reason] or [False])[idx] if n else np.zeros(0, bool)
    )

    def mark(cond: np.ndarray, rule: str) -> None:
        codes[(codes == 0) & ~feed_bad & cond] = 1 + rules.index(rule)

    mark(price <= 0, "non_positive_price")
    if "observed_at" in table.column_names:
        obs = table["observed_at"]
        has = ~pc.is_null(obs).to_numpy(zero_copy_only=False)
        age = np.where(
            has, (to_micros(pc.fill_null(obs, 0)) - to_micros(table["publish_time"])) / MICROS, 0
        )
        mark(has & (age > hb[idx] + grace), "stale")
    if "answered_in_round" in table.column_names and "round_id" in table.column_names:
        r, a = table["round_id"], table["answered_in_round"]
        both = pc.and_(
            pc.and_(pc.is_valid(r), pc.is_valid(a)), pc.equal(table["source"], "chainlink")
        )
        rows = np.nonzero(both.to_numpy(zero_copy_only=False))[0]
        lag = np.zeros(n, dtype=bool)
        if len(rows):  # uint80 round ids: compared as Python ints, on the few Chainlink rows
            rs = pc.take(r, pa.array(rows)).to_pylist()
            as_ = pc.take(a, pa.array(rows)).to_pylist()
            lag[rows] = [int(x) < int(y) for x, y in zip(as_, rs, strict=True)]
        mark(lag, "answered_in_round_lag")
    mark((price <= lo[idx]) | (price >= hi[idx]), "pinned_at_bound")
    conf = pc.cast(table["confidence"], pa.float64()).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        mark(np.nan_to_num(conf / price, nan=0.0) > limit, "confidence_too_wide")
    bad: list[tuple[int, str, str]] = []
    for i in np.nonzero(feed_bad | (codes > 0))[0].tolist():
        fr = feed_reason[idx[i]]
        if fr is not None:
            bad.append((i, fr[0], fr[1]))
        else:
            rule = rules[codes[i] - 1]
            bad.append((i, rule, f"{rule.replace('_', ' ')} (ValidatePrices rule)"))
    mask = np.ones(n, dtype=bool)
    mask[[b[0] for b in bad]] = False
    return mask, bad


# ------------------------------------------------------------------------------ composite
def round_order_key(round_id: str) -> int:
    """A Chainlink uint80 round id (phase << 64 | aggregator round) as an int64 with the same
    order: phase << 40 | aggregator round (aggregator rounds stay far below 2**40)."""
    r = int(round_id)
    phase, agg = r >> 64, r & ((1 << 64) - 1)
    if agg >= 1 << 40 or phase >= 1 << 22:
        raise ValueError(f"round id {round_id} is outside the supported range")
    return phase << 40 | agg


def source_updates(table: pa.Table) -> dict[str, dict[str, SourceUpdates]]:
    """Valid updates of a day by asset and source (``table`` already validated)."""
    out: dict[str, dict[str, SourceUpdates]] = {}
    if table.num_rows == 0:
        return out
    keys = pc.binary_join_element_wise(table["asset"], table["source"], "\x1f")
    enc = pc.dictionary_encode(keys).combine_chunks()
    idx = enc.indices.to_numpy(zero_copy_only=False)
    pub = to_micros(table["publish_time"])
    nano = to_nano(table["price"])
    eids = table["event_id"].to_numpy(zero_copy_only=False)
    rounds = table["round_id"].to_pylist()
    for k, key in enumerate(enc.dictionary.to_pylist()):
        asset, source = key.split("\x1f")
        rows = np.nonzero(idx == k)[0]
        is_round = source == "chainlink"
        order = (
            np.array([round_order_key(rounds[i]) for i in rows], dtype=np.int64)
            if is_round
            else pub[rows]
        )
        out.setdefault(asset, {})[source] = SourceUpdates(
            pub[rows], nano[rows], order, eids[rows].astype(object), is_round
        )
    return out


def carry_from(
    previous: dict[str, SourceUpdates] | None,
    day_start_us: int,
    heartbeat: dict[str, int],
    grace_s: int,
) -> Carry:
    """The composite state at the start of a day, from the previous day's updates only: the
    latest accepted update per source, and whether an outage is open at midnight. (An update
    older than the previous day is older than any heartbeat, so it cannot be fresh.)"""
    if not previous:
        return Carry()
    last: dict[str, Last] = {}
    for s, u in previous.items():
        _, _, latest = order_checks(s, u, None)
        if latest is not None:
            last[s] = latest
    if not last:
        return Carry()
    fresh = any(
        day_start_us - x.publish_us <= (heartbeat[s] + grace_s) * MICROS for s, x in last.items()
    )
    return Carry(last=last, next_start_us=day_start_us, unavailable=not fresh)


def price_rows(asset: str, span: ComposedSpan) -> pa.Table:
    """``prices`` rows of one asset-span with the contract schema and the streaming ids."""
    n = len(span)
    status = np.asarray(STATUS, dtype=object)[span.status]
    names = np.asarray(span.sources, dtype=object)
    unavailable = span.status == 2
    price = decimal_array(span.price_nano, unavailable)
    spread = np.round(span.spread_bps, 6)
    ends = span.window_end_us.tolist()
    return pa.table(
        {
            "price_id": [price_id(asset, e) for e in ends],
            "asset": [asset] * n,
            "quote": ["USD"] * n,
            "price": price,
            "status": status.tolist(),
            "n_sources": span.used.sum(axis=1).astype(np.int64),
            "sources": name_lists(names, span.used),
            "sources_set_aside": name_lists(names, span.set_aside),
            "spread_bps": pa.array(np.where(unavailable, np.nan, spread), mask=unavailable),
            "window_start": pa.array(span.window_start_us, pa.timestamp("us", tz="UTC")),
            "event_time": pa.array(span.window_end_us, pa.timestamp("us", tz="UTC")),
        },
        schema=PRICE_SCHEMA,
    )


def day_close(span: ComposedSpan) -> float | None:
    """The day's close: the last non-null composite (the window ending at midnight included)."""
    ok = np.nonzero(span.status != 2)[0]
    return None if len(ok) == 0 else int(span.price_nano[ok[-1]]) / NANO


def compose_day(
    today: pa.Table,
    yesterday: pa.Table | None,
    day: date,
    registry: FeedRegistry,
    window_s: int = 60,
    max_dev_bps: float | None = None,
    min_sources: int = 2,
) -> tuple[pa.Table, dict[str, float], list[dict]]:
    """One day of price updates -> (prices rows, {asset: close}, dead-letter dicts)."""
    grace = registry.grace_s
    dev = registry.max_source_deviation_bps if max_dev_bps is None else max_dev_bps
    lo, hi = day_bounds_us(day)
    mask, bad = validate_prices(today, registry)
    dead = [_dead(today, i, "ValidatePrices", reason, msg) for i, reason, msg in bad]
    valid = today.filter(pa.array(mask)) if bad else today
    prev_valid = None
    if yesterday is not None and yesterday.num_rows:
        m, b = validate_prices(yesterday, registry)
        prev_valid = yesterday.filter(pa.array(m)) if b else yesterday
    by_asset = source_updates(valid)
    before = source_updates(prev_valid) if prev_valid is not None else {}
    tables, closes = [], {}
    for asset in sorted(set(by_asset) | set(before)):
        heartbeat = {f.source: f.heartbeat_s for f in registry.feeds if f.asset == asset}
        carry = carry_from(before.get(asset), lo, heartbeat, grace)
        span, rejects, _ = compose_span(
            by_asset.get(asset, {}),
            carry,
            hi,
            heartbeat,
            {s: source_priority(s) for s in heartbeat},
            window_s,
            grace,
            dev,
            min_sources,
        )
        for r in rejects:
            u = by_asset[asset][r.source]
            dead.append(
                {
                    "stage": "CompositePrices",
                    "reason": r.reason,
                    "error": r.message,
                    "event_id": str(u.event_id[r.index]),
                    "event_time_us": int(u.publish_us[r.index]),
                }
            )
        if len(span):
            tables.append(price_rows(asset, span))
            close = day_close(span)
            if close is not None:
                closes[asset] = close
    rows = pa.concat_tables(tables) if tables else PRICE_SCHEMA.empty_table()
    return rows, closes, dead


def _dead(table: pa.Table, i: int, stage: str, reason: str, msg: str) -> dict:
    row = table.slice(i, 1).to_pylist()[0]
    return {
        "stage": stage,
        "reason": reason,
        "error": msg,
        "event_id": row["event_id"],
        "event_time_us": int(row["publish_time"].timestamp() * MICROS),
        "raw": json.dumps(row, default=str, sort_keys=True),
    }
