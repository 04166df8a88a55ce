"""The backfill's outputs with plain numpy and pyarrow in one process: a baseline and a cross-check.

    python -m tests.benchmarks.backfill_baseline --input DIR --output DIR --start D --end D \\
        [--var-window 250] [--var-min-scenarios 30]

Reads the day-partitioned Parquet of ``generate_history`` (``market.prices.v1/date=D/``,
``settlements.v1/date=D/``, ``feeds.toml``) and writes, per day, ``prices/date=D/part-00000.parquet``
(per asset and minute window: price, status, sources) and ``portfolio_var/date=D/...`` (per
account and method: value, VaR, ES). Written from the rules, not from ``transforms/`` (only the
feed registry is read with ``transforms.oracles.load_registry``), so that it checks the backfill.

One pass over the days, carrying only what the next day needs:
- per asset and source the latest accepted price update, and whether an outage is open;
- positions as int64 arrays, accounts x assets, in units of 1e-9 token (exact: a settlement
  that would drive a balance below zero is refused, a balance back at zero closes the position);
- per asset its last ``window + 1`` daily closes.

Rules (the streaming path's, as documented in README.md and ``transforms/composite_price.py``):
- validation: unknown asset or feed, price <= 0, stale (observed - publish > heartbeat + grace),
  Chainlink answeredInRound < roundId, price at or beyond the feed's bounds, confidence / price >
  max_conf_ratio: the update is dropped;
- order: per asset and source, updates in round (Chainlink) or publish-time (Pyth) order; an
  update whose key does not increase, or whose publish time goes back, is dropped;
- composite, per minute window [s, e): each source's latest update published before e is fresh
  while e - publish <= heartbeat + grace; 3+ fresh: those further than max_dev_bps from the median
  are set aside (unless all are); 2 that disagree: the preferred (chainlink < pyth < dex < cex) is
  kept; degraded when something was set aside or fewer than min_sources are used; none fresh: one
  price_unavailable row at the first window of the outage. Prices are integers of 1e-9 (the mean
  of the two middle values floored, exact for 8-decimal sources);
- the day's close is its last available composite (the window ending at midnight included);
- VaR at the end of each day, for every open account: exposure = (collateral - debt) x the
  day's close, per asset; returns close_t / close_{t-1} - 1 over the joint closes of the held
  assets (each asset keeping its last window + 1), the last ``window``; none before
  ``min_scenarios`` returns, or when a held asset has no close that day. Historical VaR: the
  inverted-CDF quantile with alpha = 1 - level exact (k = ceil(alpha N), the project's
  convention, ``hs_method="inverted_cdf"``) or numpy's linear one (``hs_method="linear"``);
  historical ES: the Acerbi-Tasche tail mean; parametric: normal with the sample mean and
  covariance (ddof 1). Values are rounded to 6 decimals, as the tables are.

Known differences from the backfill, by design (none arise in generated histories): the backfill
values accounts per shard (``--var-shards``), so "the held assets" are those of the shard, not
of all accounts, which only matters when an asset misses a day's close; duplicate settlements
are recognised within a day here (by event id), across days there.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PRICES_TOPIC, SETTLEMENTS_TOPIC = "market.prices.v1", "settlements.v1"
MICROS = 1_000_000
NANO = 1_000_000_000
DAY_US = 86_400 * MICROS
PRIORITY = {"chainlink": 0, "pyth": 1, "cex": 2, "dex": 3}  # as transforms.composite_price
STATUS = np.array(["ok", "degraded", "price_unavailable"], dtype=object)
COLLATERAL = {"deposit": 1, "withdraw": -1, "liquidation": -1}
DEBT = {"borrow": 1, "repay": -1}
ROUND_WIDTH = 25  # digits of a uint80 round id: zero-padded, text order is numeric order
METHODS = ("historical", "parametric")

PRICES_SCHEMA = pa.schema(
    [
        ("asset", pa.string()),
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
        ("price_nano", pa.int64()),
        ("status", pa.string()),
        ("n_sources", pa.int64()),
        ("sources", pa.string()),
    ]
)
VAR_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
        ("method", pa.string()),
        ("portfolio_value_usd", pa.float64()),
        ("var_usd", pa.float64()),
        ("es_usd", pa.float64()),
        ("n_scenarios", pa.int64()),
        ("n_positions", pa.int64()),
        ("window_start", pa.timestamp("us", tz="UTC")),
    ]
)


# ------------------------------------------------------------------------------------ input
def _read(input_dir: Path, topic: str, day: date) -> pa.Table | None:
    files = sorted((input_dir / topic / f"date={day.isoformat()}").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def _write(table: pa.Table, output_dir: Path, name: str, day: date) -> None:
    folder = output_dir / name / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-00000.parquet", compression="zstd")


def _day_start_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * MICROS


def _int64(col) -> np.ndarray:
    return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)


def _strings(col) -> np.ndarray:
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)


def _nano_prices(col) -> np.ndarray:
    """Decimal prices as exact int64 multiples of 1e-9 (the low word of the decimal128 at
    scale 9; refused if it needs the high word)."""
    arr = pc.cast(col, pa.decimal128(38, 9))
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    words = np.frombuffer(arr.buffers()[1], dtype="<i8")[
        2 * arr.offset : 2 * (arr.offset + len(arr))
    ]
    low, high = words[0::2], words[1::2]
    if not np.array_equal(high, low >> 63):
        raise ValueError("a price does not fit in int64 units of 1e-9")
    return low.copy()


def _nano_amounts(raw, decimals: np.ndarray) -> np.ndarray:
    """Raw token amounts (uint256 text) as exact int64 units of 1e-9 token (refused otherwise)."""
    out = np.zeros(len(decimals), dtype=np.int64)
    for d in np.unique(decimals).tolist():
        rows = np.flatnonzero(decimals == d)
        text = pc.take(raw, pa.array(rows))
        if d > 9:  # drop d - 9 trailing digits, which must be zeros
            cut = d - 9
            text = pc.utf8_lpad(text, width=cut + 1, padding="0")
            if not pc.all(pc.ends_with(text, "0" * cut)).as_py():
                raise ValueError(f"an amount with {d} decimals is finer than 1e-9 token")
            text = pc.utf8_slice_codeunits(text, 0, -cut)
        units = pc.cast(text, pa.int64())  # raises on overflow
        if d < 9:
            units = pc.multiply_checked(units, pa.scalar(10 ** (9 - d), pa.int64()))
        out[rows] = units.to_numpy(zero_copy_only=False)
    return out


# ---------------------------------------------------------------------------- validation
def _valid_mask(t: pa.Table, registry) -> np.ndarray:
    """The validation rules as a mask of the rows kept."""
    n = t.num_rows
    asset, source = _strings(t["asset"]), _strings(t["source"])
    fid = _strings(pc.fill_null(t["feed_id"], ""))
    combos: dict[tuple[str, str, str], int] = {}
    code = np.empty(n, dtype=np.int64)
    for i, key in enumerate(zip(asset, source, fid, strict=True)):
        code[i] = combos.setdefault(key, len(combos))
    known = set(registry.assets())
    ok_feed = np.zeros(len(combos), dtype=bool)
    hb, lo, hi = np.zeros(len(combos)), np.full(len(combos), -np.inf), np.full(len(combos), np.inf)
    for (a, s, f), k in combos.items():
        feed = registry.by_id(f) if f else registry.for_asset(a, s)
        if a in known and feed is not None and feed.asset == a and feed.source == s:
            ok_feed[k] = True
            hb[k] = feed.heartbeat_s
            lo[k] = float(feed.min_price) if feed.min_price is not None else -np.inf
            hi[k] = float(feed.max_price) if feed.max_price is not None else np.inf
    price = pc.cast(t["price"], pa.float64()).to_numpy(zero_copy_only=False)
    keep = ok_feed[code] & (price > 0) & (price > lo[code]) & (price < hi[code])
    if "observed_at" in t.column_names:
        obs = t["observed_at"]
        has = pc.is_valid(obs).to_numpy(zero_copy_only=False)
        age = (_int64(pc.fill_null(obs, 0)) - _int64(t["publish_time"])) / MICROS
        keep &= ~(has & (age > hb[code] + registry.grace_s))
    if "round_id" in t.column_names and "answered_in_round" in t.column_names:
        rounds, answered = t["round_id"], t["answered_in_round"]
        both = pc.and_(pc.is_valid(rounds), pc.is_valid(answered)).to_numpy(zero_copy_only=False)
        both &= source == "chainlink"
        for i in np.flatnonzero(both).tolist():
            if int(answered[i].as_py()) < int(rounds[i].as_py()):
                keep[i] = False
    conf = pc.cast(t["confidence"], pa.float64()).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.nan_to_num(conf / price, nan=0.0)
    keep &= ~(ratio > registry.max_conf_ratio)
    return keep


# ----------------------------------------------------------------------------- composite
@dataclass
class SourceState:
    """The latest accepted update of one asset's source."""

    publish_us: int
    price_nano: int
    key: object  # int publish_us (Pyth) or zero-padded round id text (Chainlink)


@dataclass
class AssetState:
    sources: dict[str, SourceState] = field(default_factory=dict)
    composed: bool = False  # a window has been composed: the next day starts at midnight
    outage_open: bool = False


def _accept(keys: np.ndarray, pubs: np.ndarray, last: SourceState | None) -> np.ndarray:
    """Indices (into the arrays sorted by key) of the updates the order rules keep: the key must
    increase, the publish time must not go back."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    first_ok = last is None or (keys[0] > last.key and pubs[0] >= last.publish_us)
    if first_ok and bool(np.all(keys[1:] > keys[:-1])) and bool(np.all(pubs[1:] >= pubs[:-1])):
        return np.arange(len(keys))  # the usual case: all kept
    kept = []
    k_last = last.key if last else None
    p_last = last.publish_us if last else None
    for i in range(len(keys)):
        if k_last is not None and (keys[i] <= k_last or pubs[i] < p_last):
            continue
        k_last, p_last = keys[i], int(pubs[i])
        kept.append(i)
    return np.asarray(kept, dtype=np.int64)


def _compose_rules(price: np.ndarray, fresh: np.ndarray, prio: np.ndarray, dev_bps: float,
                   min_sources: int):  # fmt: skip
    """Per window (rows): the composite in 1e-9 units, status code, used sources mask."""
    n, k = price.shape
    pf = price.astype(np.float64)
    n_fresh = fresh.sum(axis=1)
    aside = np.zeros_like(fresh)
    for r in np.flatnonzero(n_fresh >= 3):
        cols = np.flatnonzero(fresh[r])
        med = float(np.median(pf[r, cols]))
        far = cols[np.abs(pf[r, cols] - med) / med * 10_000 > dev_bps]
        if len(far) < len(cols):
            aside[r, far] = True
    two = np.flatnonzero(n_fresh == 2)
    if len(two):
        cols = np.nonzero(fresh[two])[1].reshape(-1, 2)
        first_preferred = prio[cols[:, 0]] <= prio[cols[:, 1]]
        keep = np.where(first_preferred, cols[:, 0], cols[:, 1])
        drop = np.where(first_preferred, cols[:, 1], cols[:, 0])
        a, b = pf[two, keep], pf[two, drop]
        far = np.abs(a - b) / np.minimum(a, b) * 10_000 > dev_bps
        aside[two[far], drop[far]] = True
    used = fresh & ~aside
    n_used = used.sum(axis=1)
    srt = np.sort(np.where(used, price, np.iinfo(np.int64).max), axis=1)
    rows = np.arange(n)
    lo = srt[rows, np.clip((n_used - 1) // 2, 0, max(k - 1, 0))] if k else np.zeros(n, np.int64)
    hi = srt[rows, np.clip(n_used // 2, 0, max(k - 1, 0))] if k else np.zeros(n, np.int64)
    comp = np.where(n_used > 0, (lo + hi) // 2, 0)
    status = np.where(n_used == 0, 2, np.where(aside.any(axis=1) | (n_used < min_sources), 1, 0))
    return comp, status, used


def compose_asset_day(
    asset: str,
    updates: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],  # source -> keys, pubs, nano
    state: AssetState,
    day_lo: int,
    day_hi: int,
    heartbeat: dict[str, int],
    grace_s: int,
    dev_bps: float,
    window_s: int,
    min_sources: int,
) -> tuple[dict, int | None]:
    """One asset over one day: its rows as column arrays, and the close (1e-9 units) or None."""
    w = window_s * MICROS
    names = sorted(set(updates) | set(state.sources))
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    first_pub = None
    for s in names:
        keys, pubs, nano = updates.get(s, (np.zeros(0, np.int64),) * 3)
        last = state.sources.get(s)
        if len(keys):
            order = np.lexsort((pubs, keys))
            keys, pubs, nano = keys[order], pubs[order], nano[order]
            idx = _accept(keys, pubs, last)
            keys, pubs, nano = keys[idx], pubs[idx], nano[idx]
        if len(pubs):
            first_pub = int(pubs[0]) if first_pub is None else min(first_pub, int(pubs[0]))
        if last is not None:
            pubs = np.concatenate(([last.publish_us], pubs))
            nano = np.concatenate(([last.price_nano], nano))
        if len(keys):
            state.sources[s] = SourceState(int(pubs[-1]), int(nano[-1]), keys[-1])
        series[s] = (pubs, nano)
    if state.composed:
        begin = day_lo
    elif first_pub is not None:
        begin = first_pub - first_pub % w
    else:
        return {}, None
    ends = np.arange(begin + w, day_hi + 1, w, dtype=np.int64)
    n = len(ends)
    price = np.zeros((n, len(names)), dtype=np.int64)
    fresh = np.zeros((n, len(names)), dtype=bool)
    for j, s in enumerate(names):
        pubs, nano = series[s]
        if len(pubs) == 0:
            continue
        pos = np.searchsorted(pubs, ends, side="left") - 1
        ok = pos >= 0
        pos = np.maximum(pos, 0)
        fresh[:, j] = ok & (ends - pubs[pos] <= (heartbeat[s] + grace_s) * MICROS)
        price[:, j] = nano[pos]
    prio = np.array([PRIORITY.get(s, len(PRIORITY)) for s in names], dtype=np.int64)
    comp, status, used = _compose_rules(price, fresh, prio, dev_bps, min_sources)
    dark = ~fresh.any(axis=1)
    before = np.concatenate(([state.outage_open], dark[:-1]))
    keep = ~(dark & before)
    if n:
        state.outage_open = bool(dark[-1])
    state.composed = True
    names_arr = np.array(names, dtype=object)
    used_k = used[keep]
    cols = {
        "window_end": ends[keep],
        "price_nano": comp[keep],
        "status": status[keep],
        "n_sources": used_k.sum(axis=1),
        "sources": [",".join(names_arr[row]) for row in used_k],
    }
    ok_rows = np.flatnonzero(cols["status"] != 2)
    close = int(cols["price_nano"][ok_rows[-1]]) if len(ok_rows) else None
    return cols, close


def compose_day(table: pa.Table | None, day: date, states: dict[str, AssetState], registry,
                window_s: int, min_sources: int) -> tuple[pa.Table, dict[str, float], int]:  # fmt: skip
    """A day of price updates -> (its prices table, closes by asset, invalid updates)."""
    lo = _day_start_us(day)
    hi = lo + DAY_US
    by_asset: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    invalid = 0
    if table is not None and table.num_rows:
        keep = _valid_mask(table, registry)
        invalid = int((~keep).sum())
        t = table.filter(pa.array(keep))
        pubs = _int64(t["publish_time"])
        inside = pubs < hi
        t, pubs = t.filter(pa.array(inside)), pubs[inside]
        asset, source = _strings(t["asset"]), _strings(t["source"])
        nano = _nano_prices(t["price"])
        padded = pc.utf8_lpad(pc.fill_null(t["round_id"], ""), width=ROUND_WIDTH, padding="0")
        rounds = np.asarray(padded.to_numpy(zero_copy_only=False), dtype=f"<U{ROUND_WIDTH}")
        has_round = pc.is_valid(t["round_id"]).to_numpy(zero_copy_only=False)
        pair = np.char.add(np.char.add(asset.astype(str), "\x1f"), source.astype(str))
        uniq, inv = np.unique(pair, return_inverse=True)
        for g, key in enumerate(uniq.tolist()):
            a, s = key.split("\x1f")
            rows = np.flatnonzero(inv == g)
            by_round = s == "chainlink" and bool(has_round[rows].all())
            keys = rounds[rows] if by_round else pubs[rows]
            by_asset.setdefault(a, {})[s] = (keys, pubs[rows], nano[rows])
    heart = {(f.asset, f.source): f.heartbeat_s for f in registry.feeds}
    dev = registry.max_source_deviation_bps
    parts, closes = [], {}
    for a in sorted(set(by_asset) | set(states)):
        state = states.setdefault(a, AssetState())
        hb = {s: heart[(a, s)] for s in set(by_asset.get(a, {})) | set(state.sources)}
        cols, close = compose_asset_day(
            a, by_asset.get(a, {}), state, lo, hi, hb, registry.grace_s, dev, window_s, min_sources
        )
        if close is not None:
            closes[a] = close / NANO
        if cols:
            parts.append((a, cols))
    return _price_table(parts, window_s), closes, invalid


def _price_table(parts: list[tuple[str, dict]], window_s: int) -> pa.Table:
    if not parts:
        return PRICES_SCHEMA.empty_table()
    ends = np.concatenate([c["window_end"] for _, c in parts])
    nano = np.concatenate([c["price_nano"] for _, c in parts])
    status = np.concatenate([c["status"] for _, c in parts])
    unavailable = status == 2
    assets = np.concatenate([np.full(len(c["window_end"]), a, dtype=object) for a, c in parts])
    return pa.table(
        {
            "asset": pa.array(assets, pa.string()),
            "window_start": pa.array(ends - window_s * MICROS, pa.timestamp("us", tz="UTC")),
            "window_end": pa.array(ends, pa.timestamp("us", tz="UTC")),
            "price": pa.array(nano / NANO, mask=unavailable),
            "price_nano": pa.array(nano, mask=unavailable),
            "status": pa.array(STATUS[status], pa.string()),
            "n_sources": pa.array(np.concatenate([c["n_sources"] for _, c in parts]), pa.int64()),
            "sources": pa.array([s for _, c in parts for s in c["sources"]], pa.string()),
        },
        schema=PRICES_SCHEMA,
    )


# ------------------------------------------------------------------------------- positions
class Positions:
    """Collateral and debt of every account, int64 units of 1e-9 token, accounts x assets."""

    def __init__(self, assets: list[str]):
        self.assets = list(assets)
        self.asset_ix = {a: j for j, a in enumerate(self.assets)}
        self.accounts: list[str] = []
        self.account_ix: dict[str, int] = {}
        self.bal = np.zeros((2, 0, len(self.assets)), dtype=np.int64)  # [collateral, debt]

    def _index(self, values: np.ndarray, ix: dict, names: list) -> np.ndarray:
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values.tolist()):
            j = ix.get(v)
            if j is None:
                j = ix[v] = len(names)
                names.append(v)
            out[i] = j
        return out

    def apply(self, t: pa.Table) -> int:
        """A day of settlements, in (event time, event id) order; returns how many were refused."""
        if t is None or t.num_rows == 0:
            return 0
        eid = _strings(t["event_id"])
        _, first = np.unique(eid, return_index=True)  # a redelivery within the day: once
        t = t.take(pa.array(np.sort(first)))
        order = np.lexsort((_strings(t["event_id"]).astype(str), _int64(t["event_time"])))
        t = t.take(pa.array(order))
        acct = self._index(_strings(t["account_id"]), self.account_ix, self.accounts)
        asset = self._index(_strings(t["asset"]), self.asset_ix, self.assets)
        grow_a = len(self.accounts) - self.bal.shape[1]
        grow_s = len(self.assets) - self.bal.shape[2]
        if grow_a > 0 or grow_s > 0:
            self.bal = np.pad(self.bal, ((0, 0), (0, max(grow_a, 0)), (0, max(grow_s, 0))))
        kinds = _strings(t["kind"])
        side = np.array([0 if k in COLLATERAL else 1 for k in kinds.tolist()], dtype=np.int64)
        sign = np.array([COLLATERAL.get(k) or DEBT[k] for k in kinds.tolist()], dtype=np.int64)
        delta = sign * _nano_amounts(t["amount_raw"], _int64(t["decimals"]))
        n_acc, n_ast = self.bal.shape[1], self.bal.shape[2]
        flat = (side * n_acc + acct) * n_ast + asset
        bal = self.bal.reshape(-1)
        # running balance per (side, account, asset), in time order: refusals only where it dips
        by_key = np.argsort(flat, kind="stable")
        k_sorted, d_sorted = flat[by_key], delta[by_key]
        new_group = np.r_[True, k_sorted[1:] != k_sorted[:-1]]
        csum = np.cumsum(d_sorted)
        starts = np.flatnonzero(new_group)
        sizes = np.diff(np.r_[starts, len(k_sorted)])
        base = np.repeat(csum[starts] - d_sorted[starts], sizes)
        running = bal[k_sorted] + csum - base
        refused = 0
        bad_keys = np.unique(k_sorted[running < 0])
        good = ~np.isin(k_sorted, bad_keys)
        np.add.at(bal, k_sorted[good], d_sorted[good])
        for key in bad_keys.tolist():  # sequential, refusing what would go below zero
            for d in d_sorted[k_sorted == key].tolist():
                if bal[key] + d < 0:
                    refused += 1
                else:
                    bal[key] += d
        return refused


# ------------------------------------------------------------------------------------- VaR
@dataclass
class VarSettings:
    window: int = 250
    min_scenarios: int = 30
    level: float = 0.99
    es_level: float = 0.975
    hs_method: str = "inverted_cdf"


def var_day(pos: Positions, history: dict[str, deque], end_us: int, cfg: VarSettings):
    """Every open account's VaR and ES at ``end_us``: a table, or None when nothing is valued."""
    coll, debt = pos.bal[0], pos.bal[1]
    open_rows = np.flatnonzero((coll != 0).any(axis=1) | (debt != 0).any(axis=1))
    if len(open_rows) == 0:
        return None
    held_ix = np.flatnonzero(
        (coll[open_rows] != 0).any(axis=0) | (debt[open_rows] != 0).any(axis=0)
    )
    held = [pos.assets[j] for j in held_ix]
    if any(a not in history or not history[a] or history[a][-1][0] != end_us for a in held):
        return None
    stamps = [np.array([t for t, _ in history[a]], dtype=np.int64) for a in held]
    common = stamps[0]
    for s in stamps[1:]:
        common = np.intersect1d(common, s)
    common = common[-(cfg.window + 1) :]
    n = len(common) - 1
    if n < cfg.min_scenarios:
        return None
    levels = np.empty((len(common), len(held)))
    for j, a in enumerate(held):
        prices = np.array([p for _, p in history[a]])
        levels[:, j] = prices[np.searchsorted(stamps[j], common)]
    returns = levels[1:] / levels[:-1] - 1.0  # N x H
    close = levels[-1]
    expo = (coll[np.ix_(open_rows, held_ix)] / NANO) * close - (
        debt[np.ix_(open_rows, held_ix)] / NANO
    ) * close  # P x H, USD
    results = {}
    alpha = 1 - Fraction(str(cfg.level))
    alpha_es = 1 - Fraction(str(cfg.es_level))
    pnl = np.sort(expo @ returns.T, axis=1)  # P x N, worst first
    if cfg.hs_method == "inverted_cdf":
        hs_var = -pnl[:, math.ceil(alpha * n) - 1]
    else:
        hs_var = -np.quantile(pnl, float(alpha), axis=1, method=cfg.hs_method)
    tail = alpha_es * n
    whole = math.floor(tail)
    hs_es = -(pnl[:, :whole].sum(axis=1) + float(tail - whole) * pnl[:, whole]) / float(tail)
    results["historical"] = (hs_var, hs_es)
    mu = returns.mean(axis=0)
    cov = np.atleast_2d(np.cov(returns, rowvar=False, ddof=1))
    mean = expo @ mu
    vol = np.sqrt(np.maximum(np.einsum("ph,hk,pk->p", expo, cov, expo), 0.0))
    z = NormalDist().inv_cdf(cfg.level)
    z_es = NormalDist().inv_cdf(cfg.es_level)
    pdf = math.exp(-0.5 * z_es * z_es) / math.sqrt(2 * math.pi)
    results["parametric"] = (-mean + z * vol, -mean + vol * pdf / float(alpha_es))
    accounts = np.array(pos.accounts, dtype=object)[open_rows]
    order = np.argsort(accounts.astype(str), kind="stable")
    value = np.round(expo.sum(axis=1), 6)[order]
    npos = np.count_nonzero(expo, axis=1)[order]
    p = len(open_rows)
    ids = accounts[order]
    # rows in (account, method) order, like the backfill's
    rows_acct = np.repeat(ids, len(METHODS))
    rows_method = np.tile(np.array(METHODS, dtype=object), p)
    var = np.column_stack([results[m][0][order] for m in METHODS]).reshape(-1)
    es = np.column_stack([results[m][1][order] for m in METHODS]).reshape(-1)
    cols = {
        "account_id": pa.array(rows_acct, pa.string()),
        "as_of": pa.array(np.full(p * len(METHODS), end_us), pa.timestamp("us", tz="UTC")),
        "method": pa.array(rows_method, pa.string()),
        "portfolio_value_usd": np.repeat(value, len(METHODS)),
        "var_usd": np.round(var, 6),
        "es_usd": np.round(es, 6),
        "n_scenarios": np.full(p * len(METHODS), n, dtype=np.int64),
        "n_positions": np.repeat(npos, len(METHODS)).astype(np.int64),
        "window_start": pa.array(
            np.full(p * len(METHODS), common[1]), pa.timestamp("us", tz="UTC")
        ),
    }
    return pa.table(cols, schema=VAR_SCHEMA)


# ------------------------------------------------------------------------------------ driver
def _input_days(input_dir: Path) -> list[date]:
    root = input_dir / PRICES_TOPIC
    return sorted(date.fromisoformat(p.name.removeprefix("date=")) for p in root.glob("date=*"))


def run_baseline(
    input_dir: str | Path,
    output_dir: str | Path,
    start: date,
    end: date,
    var_window: int = 250,
    min_scenarios: int = 30,
    *,
    level: float = 0.99,
    es_level: float = 0.975,
    hs_method: str = "inverted_cdf",
    window_s: int = 60,
    min_sources: int = 2,
    feed_registry: str | Path | None = None,
) -> dict:
    """Replays every input day up to ``end`` (days before ``start`` warm the state up without
    being written); returns counts and seconds."""
    from transforms.oracles import load_registry

    t0 = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    registry = load_registry(feed_registry or input_dir / "feeds.toml")
    cfg = VarSettings(var_window, min_scenarios, level, es_level, hs_method)
    days = [d for d in _input_days(input_dir) if d <= end]
    if not days or days[0] > start:
        raise ValueError(f"the input under {input_dir} does not cover {start}")
    states: dict[str, AssetState] = {}
    pos = Positions(list(registry.assets()))
    history: dict[str, deque] = {}
    counts = dict.fromkeys(
        ("days", "price_rows", "var_rows", "price_updates", "settlements", "invalid_updates",
         "refused_settlements"), 0)  # fmt: skip
    for day in days:
        prices = _read(input_dir, PRICES_TOPIC, day)
        settlements = _read(input_dir, SETTLEMENTS_TOPIC, day)
        counts["price_updates"] += prices.num_rows if prices is not None else 0
        counts["settlements"] += settlements.num_rows if settlements is not None else 0
        table, closes, invalid = compose_day(prices, day, states, registry, window_s, min_sources)
        counts["invalid_updates"] += invalid
        end_us = _day_start_us(day) + DAY_US
        for a, c in closes.items():
            history.setdefault(a, deque(maxlen=var_window + 1)).append((end_us, c))
        counts["refused_settlements"] += pos.apply(settlements)
        var = var_day(pos, history, end_us, cfg)
        if day >= start:
            _write(table, output_dir, "prices", day)
            _write(var if var is not None else VAR_SCHEMA.empty_table(), output_dir,
                   "portfolio_var", day)  # fmt: skip
            counts["days"] += 1
            counts["price_rows"] += table.num_rows
            counts["var_rows"] += var.num_rows if var is not None else 0
    counts["events"] = counts["price_updates"] + counts["settlements"]
    counts["seconds"] = round(time.perf_counter() - t0, 3)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--start", required=True, type=date.fromisoformat)
    p.add_argument("--end", required=True, type=date.fromisoformat)
    p.add_argument("--var-window", type=int, default=250)
    p.add_argument("--var-min-scenarios", type=int, default=30)
    p.add_argument("--hs-method", default="inverted_cdf", choices=("inverted_cdf", "linear"))
    a = p.parse_args(argv)
    summary = run_baseline(a.input, a.output, a.start, a.end, a.var_window, a.var_min_scenarios,
                           hs_method=a.hs_method)  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
