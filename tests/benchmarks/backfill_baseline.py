"""The backfill's outputs with plain numpy and pyarrow in one process: a baseline and a cross-check.

    python -m tests.benchmarks.backfill_baseline --input DIR --output DIR --start D --end D \\
        [--var-window 250] [--var-min-scenarios 30] [--margin-interval-s 86400] [--no-margin]

Reads the day-partitioned Parquet of ``generate_history`` (``market.prices.v1/date=D/``,
``settlements.v1/date=D/``, ``feeds.toml``) and writes, per day, ``prices/date=D/part-00000.parquet``
(per asset and minute window: price, status, sources), ``portfolio_var/date=D/...`` (per
account and method: value, VaR, ES), ``margin_health/date=D/...`` (account, time, trigger, ref,
collateral and debt in USD, health, zone, price status, liquidation prices) and
``margin_events/date=D/...`` (account, type, zone, previous zone, health, time, alerted); its own
simple schemas, floats where the tables have decimals. Written from the rules, not from
``transforms/`` (only the feed registry is read with ``transforms.prices.oracles.load_registry``), so
that it checks the backfill. ``--no-margin`` leaves the margin tables out (to time the rest).

One pass over the days, carrying only what the next day needs:
- per asset and source the latest accepted price update, and whether an outage is open;
- positions as int64 arrays, accounts x assets, exact: per asset in units of 10^-e token, e the
  most decimal places an amount of the asset has needed so far (trailing zeros of amount_raw
  dropped; a finer amount multiplies the asset's balances by a power of ten, checked). A
  settlement that would drive a balance below zero is refused, a balance back at zero closes the
  position; the day's running sums are int64 when they cannot overflow, Python ints otherwise.
  Generated amounts have at most 6 places (2 for stablecoins) and the generator keeps positions
  in int64 of those units, so each of its balances fits (1e-9 units did not: 1.1e10 ADA); a
  balance that does not fit stops the run (OverflowError), never a wrong refusal. Values are
  float (balance / 10^e x price), zones near a threshold decided in integers;
- the day's settlements in order, with whether each was applied (for the margin replay);
- per asset its last ``window + 1`` daily closes;
- for margin: per asset its last good composite price and last status, per account its zone and
  the time of its last alert of each type, and the next snapshot time.

Rules (the streaming path's, as documented in README.md and ``transforms/prices/composite.py``):
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

Margin rules (``transforms/margin/engine.py``, ``margin_event_detector.py``, ``margin_health.py``),
replayed over the day's composite prices (the ``prices`` rows, one instant per window end) and
its settlements:
- events in time order, the prices of an instant before the settlements at it; an account is
  valued with the last good price of each held asset (an unavailable row keeps the price and
  sets the status) and not at all while a held asset has never had one; its price status is the
  worst status (ok < degraded < price_unavailable) of the assets it holds;
- health = (collateral - debt) / debt x 100, none without debt; zones: no_debt, healthy >= 50,
  warning < 50, margin_call < 30, liquidation < 15, each strict;
- the detector, at every observation: a worse zone is entered at once, but never margin_call or
  liquidation on a price status other than ok (the zone is held; healthy / no_debt go to
  warning); a better zone is reached only when health clears the zone left by the band (2):
  out of liquidation at 17, out of margin_call at 32; entering margin_call or liquidation is an
  event of that type, leaving them for warning, healthy or no_debt a ``recovered`` event;
  alerted unless the account's previous alert of that type is less than the cooldown (300 s)
  before;
- rows: after an account's applied settlements of one instant (trigger settlement, ref the last
  one's event id, in chain order; the account is
  observed), when a price instant moves an account to another zone (trigger price, ref the
  assets priced at the instant, by name), and every ``--margin-interval-s`` for every account
  with debt (trigger snapshot, the zone not re-observed), the grid starting at the first event;
  liquidation prices per collateral asset, by name: p = ((1 + T/100) debt - other collateral)
  / quantity for T = 15 and 30, 0 when the other collateral alone suffices;
- how: between two settlements of an account its positions are constant, so its health over
  the instants is a ratio of two matrix products; the zone can only change where health leaves
  the zone's interval, so (1) a bound from each asset's lowest and highest price over the span
  settles nearly every account, (2) blocks of the others get health at every instant, (3) the
  few that change are walked from change to change. Float64, with every ratio within 1e-9 of
  a threshold decided in integers (positions x prices of 1e-9 USD), so zones are exact; values
  differ from the backfill's Decimals by ~1e-12 relative (rounding to 9 decimals there).

Known differences from the backfill, by design (none arise in generated histories): the backfill
values accounts per shard (``--var-shards``), so "the held assets" are those of the shard, not
of all accounts, which only matters when an asset misses a day's close; duplicate settlements
are recognised within a day here (by event id), across days there (the margin engine forgets an
account's ids when it purges it, closed for 10 minutes at a day's end; purging changes nothing
else: a closed account has no zone and its cooldowns have run out by then); the margin
snapshot grid starts at the first event of all accounts here, of the shard's there (they differ
only when a shard's first event falls exactly on the grid); a settlement is never late here
(each day holds its own), while the stream applies one up to ``allowed_lateness_s`` late at
the processed time and refuses it beyond; a balance that does not fit int64 in units of the
finest amount of its asset (more than 9.2e9 tokens with amounts of 1e-9, 9.2e12 with 1e-6) stops
the run here, while the backfill's Decimals hold any.
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
INT64_MAX = int(np.iinfo(np.int64).max)
DAY_US = 86_400 * MICROS
PRIORITY = {"chainlink": 0, "pyth": 1, "cex": 2, "dex": 3}  # as transforms.prices.composite
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


CREDIT_FIRST = {"deposit": 0, "repay": 0, "borrow": 1, "withdraw": 1, "liquidation": 1}


def _chain_position(t: pa.Table, column: str) -> np.ndarray:
    """A block / log / tx index column with nulls (or no column) last."""
    if column not in t.column_names:
        return np.full(t.num_rows, 1 << 62, dtype=np.int64)
    return pc.fill_null(t[column], 1 << 62).to_numpy().astype(np.int64)


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


def _amount_exponents(raw, decimals: np.ndarray) -> np.ndarray:
    """Per raw token amount (uint256 text), the decimal places it needs: its token decimals less
    its trailing zeros (0 for a zero amount)."""
    trimmed = pc.utf8_length(pc.utf8_rtrim(raw, characters="0"))
    zeros = _int64(pc.subtract(pc.utf8_length(raw), trimmed))
    return np.where(_int64(trimmed) > 0, np.maximum(decimals - zeros, 0), 0)


def _units(raw, decimals: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """Raw token amounts as exact int64 units of 10^-exponent token (``exponent`` per row, at
    least what ``_amount_exponents`` says, so only zeros are dropped); OverflowError when one
    does not fit."""
    out = np.zeros(len(decimals), dtype=np.int64)
    shift = exponent - decimals
    for k in np.unique(shift).tolist():
        rows = np.flatnonzero(shift == k)
        text = pc.take(raw, pa.array(rows))
        if k < 0:  # drop -k trailing digits, zeros
            text = pc.utf8_slice_codeunits(pc.utf8_lpad(text, width=1 - k, padding="0"), 0, k)
        try:
            units = pc.cast(text, pa.int64())  # raises on overflow
            if k > 0:
                units = pc.multiply_checked(units, pa.scalar(10**k, pa.int64()))
        except pa.ArrowInvalid as e:
            raise OverflowError(f"a token amount does not fit int64 units: {e}") from None
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
    """Collateral and debt of every account, accounts x assets, exact int64 in units of
    10^-exponent token per asset: the finest an amount of the asset has needed so far (a finer
    one multiplies the asset's balances, checked); a balance that would not fit raises."""

    def __init__(self, assets: list[str]):
        self.assets = list(assets)
        self.asset_ix = {a: j for j, a in enumerate(self.assets)}
        self.accounts: list[str] = []
        self.account_ix: dict[str, int] = {}
        self.bal = np.zeros((2, 0, len(self.assets)), dtype=np.int64)  # [collateral, debt]
        self.exponent = np.zeros(len(self.assets), dtype=np.int64)
        self.start = self.bal.copy()  # before the last day's settlements (in today's units)
        self.log: dict[str, np.ndarray] = {}  # the last day's settlements, in time order
        self._ids, self._rank = pa.array([], pa.string()), np.zeros(0, np.int64)

    def ids(self) -> pa.Array:
        """The account ids as an Arrow array (cached until accounts are added)."""
        if len(self._ids) != len(self.accounts):
            self._ids = pa.array(self.accounts, pa.string())
            self._rank = np.empty(len(self.accounts), np.int64)
            self._rank[np.argsort(np.array(self.accounts, dtype=str), kind="stable")] = np.arange(
                len(self.accounts)
            )
        return self._ids

    def name_rank(self) -> np.ndarray:
        """Each account's position in account id order."""
        self.ids()
        return self._rank

    def grow(self) -> None:
        grow_a = len(self.accounts) - self.bal.shape[1]
        grow_s = len(self.assets) - self.bal.shape[2]
        if grow_a > 0 or grow_s > 0:
            self.bal = np.pad(self.bal, ((0, 0), (0, max(grow_a, 0)), (0, max(grow_s, 0))))
            self.exponent = np.pad(self.exponent, (0, max(grow_s, 0)))

    def scale(self) -> np.ndarray:
        """Units per token, per asset (float, exact): a balance / scale is tokens."""
        return np.array([float(10**e) for e in self.exponent.tolist()])

    def _too_big(self, key: int, value: int, exponent: int) -> OverflowError:
        """The error for a balance (``key`` into ``bal`` flat) that does not fit int64."""
        side, a, j = np.unravel_index(key, self.bal.shape)
        return OverflowError(
            f"{('collateral', 'debt')[side]} of {self.accounts[a]} in {self.assets[j]}: "
            f"{value} units of 1e-{exponent} token do not fit int64"
        )

    def _refine(self, need: np.ndarray) -> None:
        """Each asset in units of 10^-need token at least: its balances multiplied, checked."""
        for j in np.flatnonzero(need > self.exponent).tolist():
            factor = 10 ** int(need[j] - self.exponent[j])
            col = self.bal[:, :, j]  # balances are never negative
            if col.size and int(col.max()) > INT64_MAX // factor:
                side, a = np.unravel_index(int(np.argmax(col)), col.shape)
                key = np.ravel_multi_index((side, a, j), self.bal.shape)
                raise self._too_big(int(key), int(col.max()) * factor, int(need[j]))
            col *= factor
            self.exponent[j] = need[j]

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
        """A day of settlements, in event-time order and, within an instant, the chain's (block,
        log index, tx index), credits before debits, then event id; returns how many were refused.
        ``log`` keeps them (time, event id, account, asset, side, signed amount, applied) for the
        margin replay."""
        self.log = {
            "t_us": np.zeros(0, np.int64),
            "event_id": np.zeros(0, object),
            "account": np.zeros(0, np.int64),
            "asset": np.zeros(0, np.int64),
            "side": np.zeros(0, np.int64),
            "delta": np.zeros(0, np.int64),
            "applied": np.zeros(0, bool),
        }
        if t is None or t.num_rows == 0:
            self.start = self.bal.copy()
            return 0
        eid = _strings(t["event_id"])
        _, first = np.unique(eid, return_index=True)  # a redelivery within the day: once
        t = t.take(pa.array(np.sort(first)))
        order = np.lexsort(
            (
                _strings(t["event_id"]).astype(str),
                np.array([CREDIT_FIRST[k] for k in _strings(t["kind"]).tolist()]),
                *(_chain_position(t, c) for c in ("tx_index", "log_index", "block_number")),
                _int64(t["event_time"]),
            )
        )
        t = t.take(pa.array(order))
        acct = self._index(_strings(t["account_id"]), self.account_ix, self.accounts)
        asset = self._index(_strings(t["asset"]), self.asset_ix, self.assets)
        self.grow()
        kinds = _strings(t["kind"])
        side = np.array([0 if k in COLLATERAL else 1 for k in kinds.tolist()], dtype=np.int64)
        sign = np.array([COLLATERAL.get(k) or DEBT[k] for k in kinds.tolist()], dtype=np.int64)
        raw, decimals = t["amount_raw"], _int64(t["decimals"])
        need = np.zeros(len(self.assets), dtype=np.int64)
        np.maximum.at(need, asset, _amount_exponents(raw, decimals))
        self._refine(need)
        self.start = self.bal.copy()
        delta = sign * _units(raw, decimals, self.exponent[asset])
        n_acc, n_ast = self.bal.shape[1], self.bal.shape[2]
        flat = (side * n_acc + acct) * n_ast + asset
        bal = self.bal.reshape(-1)
        # running balance per (side, account, asset), in time order: refusals only where it dips
        by_key = np.argsort(flat, kind="stable")
        k_sorted, d_sorted = flat[by_key], delta[by_key]
        new_group = np.r_[True, k_sorted[1:] != k_sorted[:-1]]
        starts = np.flatnonzero(new_group)
        sizes = np.diff(np.r_[starts, len(k_sorted)])
        group = np.repeat(np.arange(len(starts)), sizes)
        # the int64 sums below stay under 2^63 (checked); otherwise every key goes the exact way
        if float(bal[k_sorted].max()) + float(np.abs(d_sorted).astype(np.float64).sum()) < 2.0**62:
            csum = np.cumsum(d_sorted)
            base = np.repeat(csum[starts] - d_sorted[starts], sizes)
            running = bal[k_sorted] + csum - base
            bad = np.unique(group[running < 0])
        else:
            bad = np.arange(len(starts))
        good = ~np.isin(group, bad)
        np.add.at(bal, k_sorted[good], d_sorted[good])
        for g in bad.tolist():  # sequential in Python ints, refusing what would go below zero
            key, b = int(k_sorted[starts[g]]), int(bal[k_sorted[starts[g]]])
            for i in range(starts[g], starts[g] + sizes[g]):
                new = b + int(d_sorted[i])
                if new < 0:
                    continue
                if new > INT64_MAX:
                    raise self._too_big(key, new, int(self.exponent[key % n_ast]))
                b, good[i] = new, True
            bal[key] = b
        applied = np.empty(len(good), dtype=bool)
        applied[by_key] = good
        self.log = {
            "t_us": _int64(t["event_time"]),
            "event_id": _strings(t["event_id"]),
            "account": acct,
            "asset": asset,
            "side": side,
            "delta": delta,
            "applied": applied,
        }
        return int((~applied).sum())


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
    scale = pos.scale()[held_ix]
    expo = (coll[np.ix_(open_rows, held_ix)] / scale) * close - (
        debt[np.ix_(open_rows, held_ix)] / scale
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


# ---------------------------------------------------------------------------------- margin
ND, HE, WA, MC, LI = range(5)  # zone codes
ZONES = np.array(["no_debt", "healthy", "warning", "margin_call", "liquidation"], dtype=object)
RANK = np.array([0, 0, 1, 2, 3], dtype=np.int8)  # no_debt and healthy rank alike
EVENT_TYPES = np.array(["margin_call", "liquidation", "recovered"], dtype=object)
TRIGGERS = np.array(["settlement", "price", "snapshot"], dtype=object)
NEAR = 1e-9  # a collateral / debt ratio this close (relative) to a threshold: decided in integers
NO_ALERT = np.iinfo(np.int64).min // 2
BLOCK = 256  # segments per block of the exact pass: (instants x BLOCK) float matrices

HEALTH_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("event_ts", pa.timestamp("us", tz="UTC")),
        ("trigger", pa.string()),
        ("ref", pa.string()),  # settlement event id, the assets priced at the instant, or ""
        ("collateral_usd", pa.float64()),
        ("borrow_usd", pa.float64()),
        ("health_score", pa.float64()),
        ("zone", pa.string()),
        ("price_status", pa.string()),
        (
            "liquidation_prices",
            pa.list_(
                pa.struct(
                    [
                        ("asset", pa.string()),
                        ("liquidation_price", pa.float64()),
                        ("margin_call_price", pa.float64()),
                    ]
                )
            ),
        ),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("event_type", pa.string()),
        ("zone", pa.string()),
        ("previous_zone", pa.string()),
        ("health_score", pa.float64()),
        ("event_ts", pa.timestamp("us", tz="UTC")),
        ("alerted", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class MarginSettings:
    warning: Fraction = Fraction(50)
    margin_call: Fraction = Fraction(30)
    liquidation: Fraction = Fraction(15)
    band: Fraction = Fraction(2)
    cooldown_s: int = 300
    snapshot_s: int = 86_400  # 0: no snapshots

    @property
    def bounds(self) -> tuple[Fraction, ...]:
        """The health levels the rules compare with; bit i of a health's ``ge`` code is set when
        health >= bounds[i]: liquidation, liquidation + band, margin call, margin call + band,
        warning."""
        lq, mc, b = self.liquidation, self.margin_call, self.band
        return (lq, lq + b, mc, mc + b, self.warning)

    @property
    def ratios(self) -> np.ndarray:
        """The bounds as collateral / debt ratios: health >= T <=> C / D >= 1 + T / 100."""
        return np.array([1 + float(x) / 100 for x in self.bounds])


def _raw_zone(ge: np.ndarray) -> np.ndarray:
    """The zone of a health (its bits), with no memory: thresholds are strict."""
    zone = np.where((ge & 4) == 0, MC, np.where((ge & 16) == 0, WA, HE))
    return np.where(ge < 0, ND, np.where((ge & 1) == 0, LI, zone)).astype(np.int8)


def next_zone(z: np.ndarray, ge: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """The detector's zone after one observation, elementwise: ``z`` the zone before, ``ge`` the
    health's bits (see ``MarginSettings.bounds``; -1: no debt), ``bad`` a price status other than
    ok. Worse zones are entered at once, except margin_call / liquidation on a bad price (the zone
    is held, healthy goes to warning); better ones only past the band."""
    raw = _raw_zone(ge)
    rr, zr = RANK[raw], RANK[z]
    out = np.where((rr > zr) & bad & (rr >= RANK[MC]), np.where(zr >= RANK[WA], z, WA), raw)
    better = rr < zr
    out = np.where(better & (z == LI) & ((ge & 2) == 0), LI, out)
    from_mc = better & ((z == MC) | ((z == LI) & ((ge & 2) != 0))) & ((ge & 8) == 0)
    out = np.where(from_mc, MC, out)
    return np.where(ge < 0, ND, out).astype(np.int8)


def event_type(previous: int, new: int) -> int:
    """Index into EVENT_TYPES of a zone change, -1 when it is no event."""
    if new in (MC, LI) and RANK[new] > RANK[previous]:
        return 0 if new == MC else 1
    if RANK[previous] >= RANK[MC] and RANK[new] < RANK[MC]:
        return 2
    return -1


@dataclass
class Timeline:
    """A day's composite prices as states: row 0 is the state carried from the day before, row
    k + 1 the state after the instant ``t[k]``; per asset the last good price (1e-9 units and
    float), the status of its last row, and whether it has had no good price yet; and the units
    of the day's positions (``Positions.exponent``)."""

    t: np.ndarray  # K instants (window ends), us
    nano: np.ndarray  # (K + 1) x A int64
    price: np.ndarray  # (K + 1) x A float64
    status: np.ndarray  # (K + 1) x A int8 (STATUS codes)
    unpriced: np.ndarray  # (K + 1) x A bool
    refs: np.ndarray  # per instant: the assets with a row at it, by name, comma-joined
    scale: np.ndarray  # A float: position units per token (quantity = position / scale)
    mult: list[int]  # A: 10^(max exponent - exponent), positions to a common unit in integers

    def __post_init__(self):
        self.low = RangeTable(np.minimum, self.price)
        self.high = RangeTable(np.maximum, self.price)
        self.unpriced_any = RangeTable(np.maximum, self.unpriced.view(np.uint8))

    def state_at(self, t_us) -> np.ndarray:
        """The state after every instant <= t (prices come before settlements at one instant)."""
        return np.searchsorted(self.t, t_us, side="right")


class MarginState:
    """What the margin replay carries from day to day (accounts and assets as in Positions)."""

    def __init__(self, settings: MarginSettings):
        self.settings = settings
        self.nano = np.zeros(0, np.int64)
        self.priced = np.zeros(0, bool)
        self.status = np.zeros(0, np.int8)
        self.zone = np.zeros(0, np.int8)
        self.last_alert = np.zeros((0, len(EVENT_TYPES)), np.int64)  # per account and type
        self.next_snapshot_us: int | None = None

    def grow(self, n_accounts: int, n_assets: int) -> None:
        a = n_assets - len(self.nano)
        if a > 0:
            self.nano = np.pad(self.nano, (0, a))
            self.priced = np.pad(self.priced, (0, a))
            self.status = np.pad(self.status, (0, a))
        n = n_accounts - len(self.zone)
        if n > 0:
            self.zone = np.pad(self.zone, (0, n))
            self.last_alert = np.pad(self.last_alert, ((0, n), (0, 0)), constant_values=NO_ALERT)


def timeline(prices: pa.Table, ms: MarginState, pos: Positions) -> Timeline:
    """The day's ``prices`` rows (price null when unavailable) as price states; the last one is
    carried to the next day."""
    k_n = 0
    if prices.num_rows:
        enc = pc.dictionary_encode(prices["asset"]).combine_chunks()
        names = np.array(enc.dictionary.to_pylist(), dtype=object)
        cols = pos._index(names, pos.asset_ix, pos.assets)[enc.indices.to_numpy()]
        pos.grow()
        t, k = np.unique(_int64(prices["window_end"]), return_inverse=True)
        k_n = len(t)
        status = pc.index_in(prices["status"], value_set=pa.array(STATUS.tolist(), pa.string()))
        status = _int64(status).astype(np.int8)
        good = pc.is_valid(prices["price_nano"]).to_numpy(zero_copy_only=False)
        nano = _int64(pc.fill_null(prices["price_nano"], 0))
    else:
        t = np.zeros(0, np.int64)
    a_n = len(pos.assets)
    ms.grow(0, a_n)
    carry_nano, carry_status, carry_unpriced = ms.nano, ms.status, ~ms.priced
    has = np.zeros((k_n, a_n), bool)
    if k_n:
        has[k, cols] = True
        tick_status = np.zeros((k_n, a_n), np.int8)
        tick_status[k, cols] = status
        tick_nano = np.zeros((k_n, a_n), np.int64)
        tick_nano[k[good], cols[good]] = nano[good]
        good_tick = np.zeros((k_n, a_n), bool)
        good_tick[k[good], cols[good]] = True
        rows, every = np.arange(k_n)[:, None], np.arange(a_n)[None, :]
        last = np.maximum.accumulate(np.where(has, rows, -1), axis=0)
        st = np.where(last >= 0, tick_status[np.maximum(last, 0), every], carry_status)
        last = np.maximum.accumulate(np.where(good_tick, rows, -1), axis=0)
        nn = np.where(last >= 0, tick_nano[np.maximum(last, 0), every], carry_nano)
        un = (last < 0) & carry_unpriced
    else:
        st = np.zeros((0, a_n), np.int8)
        nn = np.zeros((0, a_n), np.int64)
        un = np.zeros((0, a_n), bool)
    nn = np.vstack([carry_nano, nn])
    st = np.vstack([carry_status, st])
    un = np.vstack([carry_unpriced, un])
    ms.nano, ms.status, ms.priced = nn[-1].copy(), st[-1].copy(), ~un[-1]
    by_name = np.argsort(np.array(pos.assets, dtype=str))
    sorted_names = np.array(pos.assets, dtype=object)[by_name]
    refs = np.empty(k_n, dtype=object)
    if k_n:
        pattern, which = np.unique(has[:, by_name], axis=0, return_inverse=True)
        text = np.array([",".join(sorted_names[p]) for p in pattern], dtype=object)
        refs[:] = text[which.reshape(-1)]
    exponent = pos.exponent.tolist()
    mult = [10 ** (max(exponent, default=0) - e) for e in exponent]
    return Timeline(t, nn, nn / NANO, st, un, refs, pos.scale(), mult)


class RangeTable:
    """Sparse table: ``ufunc`` over any run of rows lo..hi of a matrix in two lookups."""

    def __init__(self, ufunc, a: np.ndarray):
        self.ufunc = ufunc
        levels, width = [a], 1
        while 2 * width <= len(a):
            prev = levels[-1]
            levels.append(ufunc(prev[:-width], prev[width:]))
            width *= 2
        self.levels = np.stack([np.pad(x, ((0, len(a) - len(x)), (0, 0))) for x in levels])

    def query(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Rows ``lo[i]..hi[i]`` (inclusive, lo <= hi) reduced, one row per pair."""
        k = np.floor(np.log2(hi - lo + 1)).astype(np.int64)
        return self.ufunc(self.levels[k, lo], self.levels[k, hi - (1 << k) + 1])


def _ge_bits(c: np.ndarray, d: np.ndarray, ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Health bits of collateral / debt values (float), and where a ratio is too close to call."""
    ge = np.zeros(c.shape, np.int8)
    near = np.zeros(c.shape, bool)
    for i, r in enumerate(ratios.tolist()):
        x = c - r * d
        ge |= (x >= 0).astype(np.int8) << i
        near |= np.abs(x) <= NEAR * r * d
    return ge, near


def _exact_bits(qc: np.ndarray, qd: np.ndarray, nano: np.ndarray, bounds, mult: list[int]) -> int:
    """Health bits in integers (units of 1e-9 USD / 10^max exponent): 100 (C - D) >= T D for
    each bound T."""
    c = sum(q * p * m for q, p, m in zip(qc.tolist(), nano.tolist(), mult, strict=True))
    d = sum(q * p * m for q, p, m in zip(qd.tolist(), nano.tolist(), mult, strict=True))
    if d == 0:
        return -1
    return sum(
        1 << i for i, b in enumerate(bounds) if 100 * b.denominator * (c - d) >= b.numerator * d
    )


@dataclass
class MarginOut:
    """A day's margin rows as they are found: health rows (their positions and price state, for
    valuing them all at once), events and zone changes (account, time, order, zone)."""

    rows: list[tuple] = field(default_factory=list)  # (acct, t, trigger, ref, zone, state, qc, qd)
    events: list[tuple] = field(default_factory=list)  # (acct, t, seq, type, zone, prev, health)
    changes: list[np.ndarray] = field(default_factory=list)  # rows (acct, t, seq, zone)

    def change(self, a: int, t: int, seq: int, prev: int, new: int, health: float) -> None:
        kind = event_type(prev, new)
        if kind >= 0:
            self.events.append((a, t, seq, kind, new, prev, health))
        self.changes.append(np.array([[a, t, seq, new]], dtype=np.int64))


def _fixed_by_bounds(z, rlo, rhi, debt, ratios) -> np.ndarray:
    """True where every health in [rlo, rhi] (collateral / debt ratios) keeps zone ``z``."""
    up, dn = 1 + NEAR, 1 - NEAR
    with np.errstate(invalid="ignore"):
        keep = np.select(
            [z == HE, z == WA, z == MC, z == LI],
            [
                rlo >= ratios[4] * up,
                (rlo >= ratios[2] * up) & (rhi < ratios[4] * dn),
                (rlo >= ratios[0] * up) & (rhi < ratios[3] * dn),
                rhi < ratios[1] * dn,
            ],
            False,
        )
    return np.where(debt, keep, z == ND)


def margin_segments(out: MarginOut, tl: Timeline, ms: MarginState, acc, qc, qd, lo, hi,
                    settle_t=None, settle_ref=None, seq0: int = 0) -> None:  # fmt: skip
    """One segment per account: constant positions ``qc``, ``qd`` (units of ``tl.scale``) from
    the price state ``lo`` to ``hi``. With ``settle_t`` the segment starts with its settlement,
    observed (and written) at state ``lo``; the price instants are observed at the states after.
    Updates ``ms.zone`` and collects rows, events and zone changes.

    The price instants in three passes, each on what the previous could not settle: (1) bounds:
    the collateral / debt ratio between its smallest (each asset at its lowest price of the
    span) and largest value keeps the zone; (2) per block of segments, the ratio at every state
    (a matrix product) never changes the zone; (3) per segment, the detector walked from change
    to change."""
    st = ms.settings
    ratios = st.ratios
    z = ms.zone[acc].copy()
    held = (qc != 0) | (qd != 0)
    debt = (qd != 0).any(axis=1)
    qcf, qdf = qc / tl.scale, qd / tl.scale
    seq_base = seq0 * (len(tl.t) + 2)
    if settle_t is not None:
        z = _settlement_rows(out, tl, st, acc, qc, qd, held, debt, lo, z, settle_t, settle_ref,
                             seq_base)  # fmt: skip
        lo = lo + 1
    # (1) bounds, per distinct span (most accounts share the whole day)
    open_ = np.flatnonzero(lo <= hi)
    fixed = np.ones(len(acc), bool)
    if open_.size:
        wide = len(tl.t) + 2
        key, which = np.unique(lo[open_] * wide + hi[open_], return_inverse=True)
        span_lo, span_hi = key // wide, key % wide
        pmin = tl.low.query(span_lo, span_hi)[which]
        pmax = tl.high.query(span_lo, span_hi)[which]
        unp = tl.unpriced_any.query(span_lo, span_hi)[which] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rlo = (qcf[open_] * pmin).sum(axis=1) / (qdf[open_] * pmax).sum(axis=1)
            rhi = (qcf[open_] * pmax).sum(axis=1) / (qdf[open_] * pmin).sum(axis=1)
        fixed[open_] = _fixed_by_bounds(z[open_], rlo, rhi, debt[open_], ratios) & ~(
            held[open_] & unp
        ).any(axis=1)
    rest = np.flatnonzero(~fixed)
    # (2) blocks: health at every state of the spans
    for b0 in range(0, len(rest), BLOCK):
        blk = rest[b0 : b0 + BLOCK]
        s0, s1 = int(lo[blk].min()), int(hi[blk].max())
        states = np.arange(s0, s1 + 1)[:, None]
        price = tl.price[s0 : s1 + 1]
        c, d = price @ qcf[blk].T, price @ qdf[blk].T
        hf = held[blk].astype(np.float64).T
        priced = (tl.unpriced[s0 : s1 + 1].astype(np.float64) @ hf) == 0
        bad_s = tl.status[s0 : s1 + 1] > 0
        bad = (bad_s.astype(np.float64) @ hf) > 0 if bad_s.any() else np.zeros(c.shape, bool)
        ge, near = _ge_bits(c, d, ratios)
        ge[:, ~debt[blk]] = -1
        near[:, ~debt[blk]] = False
        seen = (states >= lo[blk]) & (states <= hi[blk]) & priced
        zb = z[blk]
        nz = next_zone(zb[None, :], ge, bad)
        moves = (seen & ((nz != zb) | near)).any(axis=0)
        # (3) the detector along the segments that may change zone
        for jj in np.flatnonzero(moves).tolist():
            j = int(blk[jj])
            rows = slice(int(lo[j]) - s0, int(hi[j]) - s0 + 1)
            gj, sj = ge[rows, jj].copy(), seen[rows, jj]
            fix = np.flatnonzero(near[rows, jj] & sj)
            for k in fix.tolist():
                gj[k] = _exact_bits(qc[j], qd[j], tl.nano[int(lo[j]) + k], st.bounds, tl.mult)
            z[j] = _walk(out, tl, int(acc[j]), qc[j : j + 1], qd[j : j + 1], int(lo[j]), int(z[j]),
                         gj, bad[rows, jj], sj, c[rows, jj], d[rows, jj], seq_base)  # fmt: skip
    ms.zone[acc] = z


def _settlement_rows(out, tl, st, acc, qc, qd, held, debt, lo, z, settle_t, settle_ref, seq_base):
    """Each settlement observed at the prices of its instant (those at or before it): a row when
    every held asset has a price; returns the zones after."""
    price = tl.price[lo]
    c, d = (qc / tl.scale * price).sum(axis=1), (qd / tl.scale * price).sum(axis=1)
    ge, near = _ge_bits(c, d, st.ratios)
    ge[~debt], near[~debt] = -1, False
    priced = ~(held & tl.unpriced[lo]).any(axis=1)
    bad = (held & (tl.status[lo] > 0)).any(axis=1)
    for i in np.flatnonzero(near & priced).tolist():
        ge[i] = _exact_bits(qc[i], qd[i], tl.nano[lo[i]], st.bounds, tl.mult)
    new = np.where(priced, next_zone(z, ge, bad), z)
    r = np.flatnonzero(priced)
    out.rows.append((acc[r], settle_t[r], np.zeros(len(r), np.int8), settle_ref[r], new[r], lo[r],
                     qc[r], qd[r]))  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        health = np.where(ge >= 0, (c - d) / d * 100, np.nan)
    for i in np.flatnonzero(new != z).tolist():
        out.change(int(acc[i]), int(settle_t[i]), seq_base + int(lo[i]), int(z[i]), int(new[i]),
                   float(health[i]))  # fmt: skip
    return new


def _walk(out, tl, a, qc, qd, s_lo, z0, ge, bad, seen, c, d, seq_base) -> int:
    """The detector along one segment's price instants (states s_lo...): a ``price`` row at each
    zone change; returns the last zone. From no_debt, healthy or warning the next zone does not
    depend on the zone before (the raw zone, or warning for margin_call / liquidation on a bad
    price), so such stretches are read off at once; from margin_call or liquidation (the band)
    the walk goes from one change to the next."""
    n = len(ge)
    raw = _raw_zone(ge)
    low_next = np.where((RANK[raw] >= RANK[MC]) & bad, WA, raw).astype(np.int8)
    zone, k0 = int(z0), 0
    at_k, prev, new = [], [], []
    while k0 < n:
        if RANK[zone] < RANK[MC]:
            obs = np.flatnonzero(seen[k0:]) + k0
            if not obs.size:
                break
            m = low_next[obs]
            enter = np.flatnonzero(RANK[m] >= RANK[MC])
            stop = int(enter[0]) + 1 if enter.size else len(obs)
            m, obs = m[:stop], obs[:stop]
            before = np.r_[np.int8(zone), m[:-1]]
            ch = np.flatnonzero(m != before)
            at_k.append(obs[ch])
            prev.append(before[ch])
            new.append(m[ch])
            if not enter.size:
                break
            zone, k0 = int(m[-1]), int(obs[-1]) + 1
        else:
            nz = next_zone(np.full(n - k0, zone, np.int8), ge[k0:], bad[k0:])
            hit = np.flatnonzero(seen[k0:] & (nz != zone))
            if not hit.size:
                break
            k = k0 + int(hit[0])
            at_k.append(np.array([k]))
            prev.append(np.array([zone], np.int8))
            new.append(nz[hit[:1]])
            zone, k0 = int(nz[hit[0]]), k + 1
    if not at_k:
        return zone
    k, p, z = np.concatenate(at_k), np.concatenate(prev), np.concatenate(new)
    if not len(k):
        return zone
    s = s_lo + k
    t = tl.t[s - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        health = np.where(ge[k] >= 0, (c[k] - d[k]) / d[k] * 100, np.nan)
    m = len(k)
    out.rows.append((np.full(m, a), t, np.ones(m, np.int8), tl.refs[s - 1], z, s,
                     np.repeat(qc, m, axis=0), np.repeat(qd, m, axis=0)))  # fmt: skip
    out.changes.append(np.column_stack([np.full(m, a), t, seq_base + s, z]))
    for i in np.flatnonzero(RANK[z] != RANK[p]).tolist():
        kind = event_type(int(p[i]), int(z[i]))
        if kind >= 0:
            out.events.append((a, int(t[i]), seq_base + int(s[i]), kind, int(z[i]), int(p[i]),
                               float(health[i])))  # fmt: skip
    return int(z[-1])


def margin_day(ms: MarginState, pos: Positions, start: np.ndarray, prices: pa.Table, day: date):
    """A day of margin monitoring: ``start`` the positions before the day's settlements
    (``pos.log``; ``pos.start``, in the day's units), ``prices`` the day's composite rows.
    Returns (health rows, events)."""
    st = ms.settings
    tl = timeline(prices, ms, pos)
    n, a_n = pos.bal.shape[1], pos.bal.shape[2]
    start = np.pad(start, ((0, 0), (0, n - start.shape[1]), (0, a_n - start.shape[2])))
    ms.grow(n, a_n)
    lo_us = _day_start_us(day)
    hi_us, k_n = lo_us + DAY_US, len(tl.t)
    log = pos.log
    step = st.snapshot_s * MICROS
    if step and ms.next_snapshot_us is None:  # the first event sets the snapshot grid
        first = min([hi_us, *tl.t[:1].tolist(), *log["t_us"][:1].tolist()])
        ms.next_snapshot_us = first - first % step + step
    ok = log["applied"]
    s_acct, s_t, s_asset = log["account"][ok], log["t_us"][ok], log["asset"][ok]
    s_side, s_delta, s_ref = log["side"][ok], log["delta"][ok], log["event_id"][ok]
    m = len(s_acct)
    # settlements by account (time order kept): rank within the account, the next one
    by_acct = np.argsort(s_acct, kind="stable")
    grouped = s_acct[by_acct]
    first_in = np.r_[True, grouped[1:] != grouped[:-1]] if m else np.zeros(0, bool)
    starts = np.flatnonzero(first_in)
    rank = np.empty(m, np.int64)
    rank[by_acct] = np.arange(m) - np.repeat(starts, np.diff(np.r_[starts, m]))
    nxt = np.full(m, -1)
    same = np.r_[grouped[1:] == grouped[:-1], False] if m else np.zeros(0, bool)
    nxt[by_acct[same]] = by_acct[np.flatnonzero(same) + 1]
    first_of = np.full(n, -1)
    first_of[grouped[first_in]] = by_acct[first_in]
    state = tl.state_at(s_t)
    zone0 = ms.zone.copy()
    out = MarginOut()
    cur = start.copy()
    # segment 0: the positions the day starts with, until the account's first settlement
    acc = np.flatnonzero((start != 0).any(axis=(0, 2)) | (first_of >= 0))
    f = first_of[acc]
    hi0 = np.where(f >= 0, state[np.maximum(f, 0)] if m else 0, k_n)
    margin_segments(out, tl, ms, acc, cur[0][acc], cur[1][acc], np.ones(len(acc), np.int64), hi0)
    # segment r: after the account's r-th settlement (the settlement's observation first)
    # one instant, one decision: only an account's last settlement of an instant is observed
    last_of_instant = np.ones(m, bool)
    j = np.flatnonzero(same)
    last_of_instant[by_acct[j]] = s_t[by_acct[j]] != s_t[by_acct[j + 1]]
    for r in range(1, int(rank.max()) + 2 if m else 1):
        i = np.flatnonzero(rank == r - 1)
        cur[s_side[i], s_acct[i], s_asset[i]] += s_delta[i]
        i = i[last_of_instant[i]]
        a = s_acct[i]
        hi_r = np.where(nxt[i] >= 0, state[np.maximum(nxt[i], 0)], k_n)
        margin_segments(out, tl, ms, a, cur[0][a], cur[1][a], state[i], hi_r, s_t[i], s_ref[i],
                        seq0=r)  # fmt: skip
    if not np.array_equal(cur, pos.bal):
        raise AssertionError("the margin replay's positions differ from the day's end")
    if step:
        out.rows += _snapshots(ms, tl, start, cur, zone0, out.changes, s_acct, s_t, s_side,
                               s_asset, s_delta, hi_us)  # fmt: skip
    return _health_table(out.rows, tl, pos, st), _events_table(out.events, ms, pos)


def _snapshots(ms, tl, start, end, zone0, changes, s_acct, s_t, s_side, s_asset, s_delta, hi_us):
    """Every ``snapshot_s``: a row for every account with debt (fully priced), valued with what
    happened up to and at that time."""
    step = ms.settings.snapshot_s * MICROS
    times = np.arange(ms.next_snapshot_us, hi_us + 1, step, dtype=np.int64)
    if len(times):
        ms.next_snapshot_us = int(times[-1]) + step
    ch = np.concatenate([np.zeros((0, 4), np.int64), *changes])
    ch = ch[np.lexsort((ch[:, 2], ch[:, 1]))]
    rows = []
    for x in times.tolist():
        if len(s_t) == 0 or x >= s_t.max():
            bal = end
        else:
            bal = start.copy()
            upto = s_t <= x
            np.add.at(bal, (s_side[upto], s_acct[upto], s_asset[upto]), s_delta[upto])
        zone = ms.zone if len(ch) == 0 or x >= ch[-1, 1] else zone0.copy()
        if zone is not ms.zone:
            upto = ch[ch[:, 1] <= x]
            last = len(upto) - 1 - np.unique(upto[::-1, 0], return_index=True)[1]
            zone[upto[last, 0]] = upto[last, 3]
        s = int(tl.state_at(x))
        held = (bal[0] != 0) | (bal[1] != 0)
        acc = np.flatnonzero((bal[1] != 0).any(axis=1) & ~(held & tl.unpriced[s]).any(axis=1))
        k = len(acc)
        rows.append(
            (acc, np.full(k, x), np.full(k, 2, np.int8), np.full(k, "", dtype=object), zone[acc],
             np.full(k, s), bal[0][acc], bal[1][acc])
        )  # fmt: skip
    return rows


def _health_table(rows: list[tuple], tl: Timeline, pos: Positions, st: MarginSettings):
    """The rows' values: collateral and debt at the state's prices, health, worst status of the
    held assets, and per collateral asset (by name) its liquidation and margin-call prices."""
    if not rows:
        return HEALTH_SCHEMA.empty_table()
    cols = [np.concatenate(c) for c in zip(*rows, strict=True)]
    # (account id, time, trigger) order; rows of one account, instant and trigger (settlements)
    # stay in the order they happened
    acc, t, trig = cols[0], cols[1], cols[2]
    order = np.lexsort((np.arange(len(acc)), trig, t, pos.name_rank()[acc]))
    acc, t, trig, ref, zone, state, qc, qd = (c[order] for c in cols)
    a_n = qc.shape[1]
    price = tl.price[state]
    tc, td = qc / tl.scale * price, qd / tl.scale * price
    coll, debt = tc.sum(axis=1), td.sum(axis=1)
    has_debt = (qd != 0).any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        health = np.where(has_debt, (coll - debt) / debt * 100, np.nan)
    held = (qc != 0) | (qd != 0)
    status = np.where(held, tl.status[state], 0).max(axis=1, initial=0)
    # liquidation prices: p = ((1 + T/100) D - other collateral) / quantity, 0 when other suffices
    by_name = np.argsort(np.array(pos.assets, dtype=str))
    other = (tc @ (1.0 - np.eye(a_n)))[:, by_name]
    qty = (qc / tl.scale)[:, by_name]
    r, j = np.nonzero((qc[:, by_name] > 0) & has_debt[:, None])
    prices = []
    for threshold in (st.liquidation, st.margin_call):
        needed = (1 + float(threshold) / 100) * debt[r] - other[r, j]
        prices.append(np.where(needed > 0, needed / qty[r, j], 0.0))
    offsets = np.r_[0, np.cumsum(np.bincount(r, minlength=len(acc)))].astype(np.int32)
    names = np.array(pos.assets, dtype=object)[by_name]
    liq = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(names[j], pa.string()), pa.array(prices[0]), pa.array(prices[1])],
            names=["asset", "liquidation_price", "margin_call_price"],
        ),
    )
    return pa.table(
        {
            "account_id": pos.ids().take(pa.array(acc)),
            "event_ts": pa.array(t, pa.timestamp("us", tz="UTC")),
            "trigger": _text(TRIGGERS, trig),
            "ref": pa.array(ref, pa.string()),
            "collateral_usd": coll,
            "borrow_usd": debt,
            "health_score": pa.array(health, mask=~has_debt),
            "zone": _text(ZONES, zone),
            "price_status": _text(STATUS, status),
            "liquidation_prices": liq,
        },
        schema=HEALTH_SCHEMA,
    )


def _text(names: np.ndarray, codes: np.ndarray) -> pa.Array:
    return pa.array(names.tolist(), pa.string()).take(pa.array(codes.astype(np.int64)))


def _events_table(events: list[tuple], ms: MarginState, pos: Positions) -> pa.Table:
    """Events in (account, time) order, ``alerted`` unless the same type alerted for the account
    less than ``cooldown_s`` before."""
    if not events:
        return EVENTS_SCHEMA.empty_table()
    rank = pos.name_rank()
    events = sorted(events, key=lambda e: (rank[e[0]], e[1], e[2]))
    cooldown = ms.settings.cooldown_s * MICROS
    alerted = []
    for a, t, _, kind, _, _, _ in events:
        ok = t >= ms.last_alert[a, kind] + cooldown
        if ok:
            ms.last_alert[a, kind] = t
        alerted.append(ok)
    a, t, _, kind, zone, prev, health = (np.array(c) for c in zip(*events, strict=True))
    return pa.table(
        {
            "account_id": pos.ids().take(pa.array(a.astype(np.int64))),
            "event_type": _text(EVENT_TYPES, kind),
            "zone": _text(ZONES, zone),
            "previous_zone": _text(ZONES, prev),
            "health_score": pa.array(health.astype(np.float64), mask=np.isnan(health)),
            "event_ts": pa.array(t, pa.timestamp("us", tz="UTC")),
            "alerted": pa.array(alerted, pa.bool_()),
        },
        schema=EVENTS_SCHEMA,
    )


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
    margin: bool = True,
    margin_interval_s: int = 86_400,
) -> dict:
    """Replays every input day up to ``end`` (days before ``start`` warm the state up without
    being written); returns counts and seconds. ``margin=False`` leaves out margin_health and
    margin_events (for timing the rest)."""
    from transforms.prices.oracles import load_registry

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
    ms = MarginState(MarginSettings(snapshot_s=margin_interval_s)) if margin else None
    counts = dict.fromkeys(
        ("days", "price_rows", "var_rows", "margin_health_rows", "margin_event_rows",
         "price_updates", "settlements", "invalid_updates", "refused_settlements"), 0)  # fmt: skip
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
        if ms is not None:
            health, events = margin_day(ms, pos, pos.start, table, day)
        if day >= start:
            _write(table, output_dir, "prices", day)
            _write(var if var is not None else VAR_SCHEMA.empty_table(), output_dir,
                   "portfolio_var", day)  # fmt: skip
            counts["days"] += 1
            counts["price_rows"] += table.num_rows
            counts["var_rows"] += var.num_rows if var is not None else 0
            if ms is not None:
                _write(health, output_dir, "margin_health", day)
                _write(events, output_dir, "margin_events", day)
                counts["margin_health_rows"] += health.num_rows
                counts["margin_event_rows"] += events.num_rows
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
    p.add_argument("--margin-interval-s", type=int, default=86_400)
    p.add_argument("--no-margin", action="store_true", help="Leave out the margin tables.")
    a = p.parse_args(argv)
    summary = run_baseline(a.input, a.output, a.start, a.end, a.var_window, a.var_min_scenarios,
                           hs_method=a.hs_method, margin=not a.no_margin,
                           margin_interval_s=a.margin_interval_s)  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
