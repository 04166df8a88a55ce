"""The margin-health job of issue 17 in our contracts, and a plain numpy reference of its rules.

    python -m tests.benchmarks.margin_job generate --out DIR [--events 1000000]
        [--accounts 10000] [--seed 7]
    python -m tests.benchmarks.margin_job reference --input-dir DIR --out COUNTS.json

Pure: numpy, pyarrow (its JSON reader) and the standard library only (no Beam, no pydantic,
nothing from ``transforms/`` but the feed registry file), so that the Bytewax job can import it
from a venv of its own.

The job (``generate``): ``--accounts`` accounts and BTC, ETH and USDC priced every second by two
sources, Chainlink and Pyth (the feed ids, chain ids and decimals of
``transforms/prices/config/feeds.toml``), both giving the same price, so that every update
passes ``ValidatePrices`` (increasing round ids, ``observed_at`` 1 s after publication,
confidence 2 bps of the price) and every composite is ``ok``. Price events are 1.1 % of
``--events`` (the desk's job: 989k settlements of 1M events, so 10,998 price events, 1,833 s of
ticks), the rest are settlements:
deposit / withdraw / borrow / repay with raw integer amounts (decimals 8 BTC, 18 ETH, 6 USDC),
unique event ids, event times in microseconds never on a whole second (no settlement shares an
instant with a composite price) and at most one per account and microsecond. Each account
deposits BTC or ETH, borrows USDC against it at a drawn health, then moves 0.1-2 % of a side at
each further settlement; balances are tracked so that no withdraw or repay exceeds what is held
(the engine would refuse it as ``negative_balance``). BTC and ETH follow a seeded random walk
around a 13 % / 16 % fall to 60 % of the job and a partial rebound, so that a few percent of the
accounts reach margin call, some liquidation, and some recover. The files
(``market.prices.v1.jsonl``, ``settlements.v1.jsonl``) are in time order and byte-identical for
the same arguments.

The reference (``run_reference``) streams both files in time order, one pass, with the book as
arrays (accounts x assets, float token units) and the rules of ``transforms/margin/`` written
again from their documentation:
- composite: per asset and 1-s window [s, e), each source's latest update published before e,
  carried forward while e - publish <= heartbeat + grace; the median of the fresh sources; the job
  is generated so that every composite is ``ok`` (two fresh sources within
  ``max_source_deviation_bps``), and the reference refuses a job where one is not (it does not
  implement the degraded rules). The composite of a window is known at its end, before a
  settlement at that instant;
- settlements: deposit / withdraw move collateral, borrow / repay debt; one that would leave a
  balance below zero is refused (counted); an account's settlements of one instant are applied
  together and evaluated once, after the last;
- health = (collateral_usd - debt_usd) / debt_usd x 100, none without debt (zone ``no_debt``);
  zones healthy >= 50, warning < 50, margin_call < 30, liquidation < 15, strict; the detector
  (``next_zone``): a worse zone at once, a better one only once health clears the zone left by
  the band (2: out of liquidation at 17, out of margin_call at 32); entering margin_call or
  liquidation is an event of that type, leaving them for warning, healthy or no_debt is
  ``recovered``;
- evaluated after each account's settlements of one instant and, at every composite instant, for
  every account, vectorised: the health of all rows in one matrix product, and ``next_zone`` for
  the rows whose health left the interval in which their zone is kept (``STAY_LO``,
  ``STAY_HI``; a test checks them against ``next_zone``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

ROOT = Path(__file__).resolve().parents[2]
FEEDS = ROOT / "transforms" / "prices" / "config" / "feeds.toml"
PRICES_FILE = "market.prices.v1.jsonl"
SETTLEMENTS_FILE = "settlements.v1.jsonl"

ASSETS = ("BTC", "ETH", "USDC")
COL = {a: j for j, a in enumerate(ASSETS)}
DECIMALS = {"BTC": 8, "ETH": 18, "USDC": 6}
# Balances are tracked in int64 units of 10^-UNIT_PLACES token (ETH in gwei: 1e18 wei per ETH
# would overflow int64 at 9.2 ETH); amount_raw is the units followed by the missing zeros.
UNIT_PLACES = {"BTC": 8, "ETH": 9, "USDC": 6}
SOURCES = ("chainlink", "pyth")
START = datetime(2025, 1, 6, tzinfo=UTC)
MICROS = 1_000_000
START_US = int(START.timestamp()) * MICROS
PRICE_SHARE = 0.011  # the desk's job: 10,998 price events of 1,000,000
MIN_SECONDS = 10
VENUE = "aave_v3"

# The price path: a fall in log price to FALL_AT of the job, a partial rebound, and noise.
START_PRICE = {"BTC": 100_000.0, "ETH": 3_600.0, "USDC": 1.0}
FALL = {"BTC": 0.13, "ETH": 0.16}
REBOUND = {"BTC": 0.07, "ETH": 0.09}
FALL_AT = 0.6
NOISE = 0.02  # standard deviation of the random walk over the whole job
CONFIDENCE = 0.0002  # Pyth conf / price (the registry allows 0.02)

# The opening health of an account: most well collateralised, a tail close to the thresholds.
NEAR_SHARE = 0.05
NEAR_HEALTH = (31.0, 60.0)
FAR_HEALTH = (60.0, 250.0)
STEP = (0.001, 0.02)  # the fraction of a side moved by a later settlement

# The detector (transforms/margin/health.py, detector.py)
WARNING, MARGIN_CALL, LIQUIDATION, BAND = 50.0, 30.0, 15.0, 2.0
ND, HE, WA, MC, LI = 0, 1, 2, 3, 4  # no_debt, healthy, warning, margin_call, liquidation
RANK = np.array([0, 0, 1, 2, 3], dtype=np.int8)
_RANK = (0, 0, 1, 2, 3)  # the same, for the scalar path
EVENT_TYPES = ("margin_call", "liquidation", "recovered")
KIND = {"deposit": (0, 1.0), "withdraw": (0, -1.0), "borrow": (1, 1.0), "repay": (1, -1.0)}


class JobError(ValueError):
    """The input is not a job the reference implements (a composite that is not ok, files out of
    time order, an unknown asset or kind)."""


# ---------------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class Job:
    events: int
    accounts: int
    seed: int

    @property
    def seconds(self) -> int:
        return max(MIN_SECONDS, round(self.events * PRICE_SHARE / (len(ASSETS) * len(SOURCES))))

    @property
    def price_events(self) -> int:
        return self.seconds * len(ASSETS) * len(SOURCES)

    @property
    def settlements(self) -> int:
        return self.events - self.price_events

    def check(self) -> None:
        if self.accounts < 1:
            raise ValueError(f"accounts={self.accounts}: must be >= 1")
        if self.settlements < 2 * self.accounts:
            raise ValueError(
                f"events={self.events}: {self.settlements} settlements after "
                f"{self.price_events} price events, fewer than 2 per account (deposit and "
                f"borrow) for {self.accounts} accounts"
            )


def _feeds() -> tuple[dict[tuple[str, str], dict], dict]:
    data = tomllib.loads(FEEDS.read_text())
    feeds = {(f["asset"], f["source"]): f for f in data["feed"]}
    return feeds, data.get("defaults", {})


def price_paths(job: Job, rng: np.random.Generator) -> np.ndarray:
    """seconds x assets: the price published at each second, rounded to 8 decimals."""
    n = job.seconds
    u = np.arange(n) / max(n - 1, 1)
    out = np.empty((n, len(ASSETS)))
    for j, asset in enumerate(ASSETS):
        walk = np.cumsum(rng.standard_normal(n)) * (NOISE / math.sqrt(n))
        if asset == "USDC":
            out[:, j] = 1.0 + 0.0005 * np.tanh(walk / NOISE)  # within 5 bps of the peg
            continue
        fall, rebound = FALL[asset], REBOUND[asset]
        shape = np.where(
            u <= FALL_AT, -fall * u / FALL_AT, -fall + rebound * (u - FALL_AT) / (1 - FALL_AT)
        )
        out[:, j] = START_PRICE[asset] * np.exp(shape + walk - walk[0])
    return np.round(out, 8)


def _settlement_times(job: Job, counts: np.ndarray, first: np.ndarray, rng: np.random.Generator):
    """(account of each settlement, its time in us), grouped by account in time order: distinct
    microseconds in seconds [1, seconds) (after the first composite), never a whole second."""
    slots = (job.seconds - 1) * (MICROS - 1)  # microseconds 1..999,999 of seconds 1..T-1
    acct = np.repeat(np.arange(job.accounts), counts)
    rank = np.arange(acct.size) - first[acct]
    # n sorted draws from slots - n + 1, plus 0..n-1: n distinct increasing slots
    draw = rng.integers(0, slots - counts[acct] + 1)
    draw = draw[np.lexsort((draw, acct))] + rank
    t_us = START_US + (1 + draw // (MICROS - 1)) * MICROS + draw % (MICROS - 1) + 1
    return acct, t_us


def plan(job: Job) -> dict[str, np.ndarray]:
    """The job as arrays: prices (seconds x assets) and the settlements (account, kind, asset,
    units, time), grouped by account."""
    job.check()
    rng = np.random.default_rng(job.seed)
    prices = price_paths(job, rng)
    a = job.accounts
    counts = 2 + rng.multinomial(job.settlements - 2 * a, np.full(a, 1.0 / a))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each account's first settlement
    acct, t_us = _settlement_times(job, counts, first, rng)
    coll_col = np.where(rng.random(a) < 0.5, COL["BTC"], COL["ETH"])
    coll_usd = np.clip(np.exp(rng.normal(math.log(40_000), 0.9, a)), 500.0, 5e6)
    near = rng.random(a) < NEAR_SHARE
    health = np.where(near, rng.uniform(*NEAR_HEALTH, a), rng.uniform(*FAR_HEALTH, a))
    kind = rng.integers(0, 4, acct.size)  # 0 deposit, 1 withdraw, 2 borrow, 3 repay
    step = rng.uniform(*STEP, acct.size)

    # The price known at a settlement: the composite of the window before its second.
    known = prices[(t_us - START_US) // MICROS - 1]
    unit = np.array([10.0 ** UNIT_PLACES[x] for x in ASSETS])
    asset = np.where(kind < 2, coll_col[acct], COL["USDC"])
    units = np.zeros(acct.size, dtype=np.int64)
    held = np.zeros((a, 2), dtype=np.int64)  # collateral, debt units
    for k in range(int(counts.max())):  # every account's k-th settlement at once
        live = np.flatnonzero(counts > k)
        i = first[live] + k
        if k == 0:  # the opening deposit
            kind[i] = 0
            asset[i] = coll_col[live]
            q = np.maximum(np.rint(coll_usd[live] / known[i, coll_col[live]] * unit[asset[i]]), 1)
        elif k == 1:  # the borrow, at the account's opening health
            kind[i] = 2
            asset[i] = COL["USDC"]
            c_usd = held[live, 0] / unit[coll_col[live]] * known[i, coll_col[live]]
            d_usd = c_usd / (1 + health[live] / 100)
            q = np.maximum(np.rint(d_usd / known[i, COL["USDC"]] * unit[COL["USDC"]]), 1)
        side = (kind[i] >= 2).astype(np.int64)  # 0 collateral, 1 debt
        if k >= 2:  # a step of the side
            q = np.maximum(np.floor(held[live, side] * step[i]), 1)
        q = q.astype(np.int64)
        out = (kind[i] == 1) | (kind[i] == 3)
        # never take out all of a side (nor more: the engine refuses it); a side that small is
        # added to instead
        empty = out & (q >= held[live, side])
        kind[i[empty]] -= 1
        out &= ~empty
        units[i] = q
        held[live, side] += np.where(out, -q, q)
    return {
        "prices": prices,
        "acct": acct,
        "kind": kind,
        "asset": asset,
        "units": units,
        "t_us": t_us,
    }


def _iso_seconds(job: Job) -> list[str]:
    return [
        (START + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S") for s in range(job.seconds + 2)
    ]


def _price_lines(job: Job, prices: np.ndarray, iso: list[str]) -> Iterator[str]:
    feeds, _ = _feeds()
    text = [[f"{p:.8f}" for p in prices[:, j].tolist()] for j in range(len(ASSETS))]
    conf = [[f"{p * CONFIDENCE:.8f}" for p in prices[:, j].tolist()] for j in range(len(ASSETS))]
    base = {a: (6 << 64) | (1 << 40) * (j + 1) for j, a in enumerate(ASSETS)}  # phase 6
    cl = {a: feeds[(a, "chainlink")] for a in ASSETS}
    py = {a: feeds[(a, "pyth")] for a in ASSETS}
    for s in range(job.seconds):
        at, seen = iso[s] + "Z", iso[s + 1] + "Z"
        for j, a in enumerate(ASSETS):
            price = text[j][s]
            rid = base[a] + s
            yield (
                f'{{"event_id":"chainlink-{a}-{s:07d}","asset":"{a}","quote":"USD",'
                f'"source":"chainlink","price":"{price}","confidence":null,'
                f'"publish_time":"{at}","feed_id":"{cl[a]["feed_id"]}","round_id":"{rid}",'
                f'"answered_in_round":"{rid}","started_at":"{at}","ema_price":null,'
                f'"observed_at":"{seen}","chain_id":"{cl[a]["chain_id"]}"}}\n'
            )
            yield (
                f'{{"event_id":"pyth-{a}-{s:07d}","asset":"{a}","quote":"USD",'
                f'"source":"pyth","price":"{price}","confidence":"{conf[j][s]}",'
                f'"publish_time":"{at}","feed_id":"{py[a]["feed_id"]}","round_id":null,'
                f'"answered_in_round":null,"started_at":null,"ema_price":"{price}",'
                f'"observed_at":"{seen}","chain_id":null}}\n'
            )


_KIND_NAMES = ("deposit", "withdraw", "borrow", "repay")


def _settlement_lines(job: Job, p: dict, iso: list[str], chunk: int = 50_000) -> Iterator[str]:
    order = np.lexsort((p["acct"], p["t_us"]))  # time order; one account per microsecond
    width = max(5, len(str(job.accounts - 1)))
    accounts = [f"acct-{i:0{width}d}" for i in range(job.accounts)]
    pad = {j: "0" * (DECIMALS[a] - UNIT_PLACES[a]) for j, a in enumerate(ASSETS)}
    tail = {j: f'","decimals":{DECIMALS[a]},"event_time":"' for j, a in enumerate(ASSETS)}
    head = {
        (k, j): f'","venue":"{VENUE}","chain_id":"eip155:1","kind":"{kn}","asset":"{a}",'
        f'"amount_raw":"'
        for k, kn in enumerate(_KIND_NAMES)
        for j, a in enumerate(ASSETS)
    }
    for lo in range(0, order.size, chunk):
        idx = order[lo : lo + chunk]
        t = p["t_us"][idx] - START_US
        sec, micro = (t // MICROS).tolist(), (t % MICROS).tolist()
        for n, a, k, j, q, s, us in zip(
            range(lo, lo + idx.size),
            p["acct"][idx].tolist(),
            p["kind"][idx].tolist(),
            p["asset"][idx].tolist(),
            p["units"][idx].tolist(),
            sec,
            micro,
            strict=True,
        ):
            yield (
                f'{{"event_id":"stl-{n:08d}","account_id":"{accounts[a]}{head[(k, j)]}'
                f'{q}{pad[j]}{tail[j]}{iso[s]}.{us:06d}Z"}}\n'
            )


def generate(out: str | Path, events: int, accounts: int, seed: int) -> dict:
    """Writes the job's two topic files into ``out``; returns its sizes."""
    job = Job(events, accounts, seed)
    p = plan(job)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    iso = _iso_seconds(job)
    for name, lines in (
        (PRICES_FILE, _price_lines(job, p["prices"], iso)),
        (SETTLEMENTS_FILE, _settlement_lines(job, p, iso)),
    ):
        with open(out / name, "w", encoding="ascii", newline="\n") as f:
            f.writelines(lines)
    return {
        "events": job.events,
        "accounts": job.accounts,
        "seed": job.seed,
        "seconds": job.seconds,
        "price_events": job.price_events,
        "settlements": job.settlements,
    }


# ------------------------------------------------------------------------------ the rules
def zone_of(health: np.ndarray) -> np.ndarray:
    """Zones of float healths (nan: no debt); each threshold strict."""
    z = np.full(health.shape, HE, dtype=np.int8)
    z[health < WARNING] = WA
    z[health < MARGIN_CALL] = MC
    z[health < LIQUIDATION] = LI
    z[np.isnan(health)] = ND
    return z


def next_zone(state: np.ndarray, health: np.ndarray) -> np.ndarray:
    """The detector's zone after one observation at an ok price, elementwise."""
    raw = zone_of(health)
    better = RANK[raw] < RANK[state]
    hold_liq = better & (state == LI) & (health < LIQUIDATION + BAND)
    hold_mc = better & ~hold_liq & ((state == LI) | (state == MC)) & (health < MARGIN_CALL + BAND)
    out = np.where(hold_liq, LI, np.where(hold_mc, MC, raw))
    return np.where(np.isnan(health), ND, out).astype(np.int8)


def event_codes(previous: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Per row: -1 no event, else the index in EVENT_TYPES."""
    rp, rn = RANK[previous], RANK[new]
    enter = ((new == MC) | (new == LI)) & (rn > rp)
    recovered = (rp >= RANK[MC]) & (rn < RANK[MC])
    return np.where(enter, np.where(new == MC, 0, 1), np.where(recovered, 2, -1)).astype(np.int8)


# Per zone, the healths at which ``next_zone`` keeps it: [lo, hi) (no_debt: none, it keeps
# only without debt); from margin_call and liquidation up to the band.
STAY_LO = np.array([np.nan, WARNING, MARGIN_CALL, LIQUIDATION, -np.inf])
STAY_HI = np.array([np.nan, np.inf, WARNING, MARGIN_CALL + BAND, LIQUIDATION + BAND])


def next_zone_one(state: int, health: float | None) -> int:
    """``next_zone`` of one observation, in Python scalars (the Bytewax job's per-settlement
    path)."""
    if health is None:
        return ND
    raw = HE if health >= WARNING else WA if health >= MARGIN_CALL else MC
    if health < LIQUIDATION:
        raw = LI
    if _RANK[raw] >= _RANK[state]:
        return raw
    if state == LI and health < LIQUIDATION + BAND:
        return LI
    if state in (LI, MC) and health < MARGIN_CALL + BAND:
        return MC
    return raw


def event_one(previous: int, new: int) -> int:
    """``event_codes`` of one observation."""
    if new in (MC, LI) and _RANK[new] > _RANK[previous]:
        return 0 if new == MC else 1
    if _RANK[previous] >= _RANK[MC] and _RANK[new] < _RANK[MC]:
        return 2
    return -1


class MarginBook:
    """Accounts x assets balances (float token units), zones and event counts of a set of
    accounts; the numpy reference holds one, the Bytewax job one per shard."""

    def __init__(self, capacity: int = 1024):
        self.row_of: dict[str, int] = {}
        self.ids: list[str] = []
        self.bal = np.zeros((2, capacity, len(ASSETS)))  # collateral, debt
        self.zone = np.zeros(capacity, dtype=np.int8)
        self.counts = np.zeros((capacity, len(EVENT_TYPES)), dtype=np.int64)
        self._set_prices(np.full(len(ASSETS), np.nan))
        self.refused = 0

    def _set_prices(self, prices: np.ndarray) -> None:
        """The latest price per asset (nan: never priced), and the forms the two paths use."""
        self.prices = prices
        missing = np.isnan(prices)
        self._valued = np.where(missing, 0.0, prices)
        self._unpriced = np.flatnonzero(missing) if missing.any() else None
        self._price_list = [None if x != x else x for x in prices.tolist()]  # for apply_one

    def row(self, account: str) -> int:
        r = self.row_of.get(account)
        if r is None:
            r = self.row_of[account] = len(self.ids)
            self.ids.append(account)
            if r >= self.zone.size:
                grow = self.zone.size
                self.bal = np.concatenate([self.bal, np.zeros((2, grow, len(ASSETS)))], axis=1)
                self.zone = np.concatenate([self.zone, np.zeros(grow, dtype=np.int8)])
                self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
        return r

    def _observe(self, rows: np.ndarray | slice) -> list[tuple[str, str]]:
        """Evaluates ``rows`` (indices, or a slice: no copies) at the current prices; those
        holding an asset never priced are not valued, as the engine does. Returns the events.

        A row whose health stays inside its zone's ``STAY`` interval keeps its zone; only the
        others (a few per tick) go through ``next_zone``."""
        bal = self.bal[:, rows]
        c, d = bal @ self._valued  # collateral and debt in USD
        health = np.divide(c - d, d, out=np.full(d.shape, np.nan), where=d > 0)
        health *= 100.0
        zone = self.zone[rows]
        stay = (health >= STAY_LO[zone]) & (health < STAY_HI[zone])
        stay |= np.isnan(health) & (zone == ND)
        if self._unpriced is not None:  # an asset never priced: its holders are not valued
            stay |= (bal[:, :, self._unpriced] != 0).any(axis=(0, 2))
        pick = np.flatnonzero(~stay)
        if pick.size == 0:
            return []
        idx = pick + rows.start if isinstance(rows, slice) else rows[pick]
        before = zone[pick]
        after = next_zone(before, health[pick])
        self.zone[idx] = after
        code = event_codes(before, after)
        hit = np.flatnonzero(code >= 0)
        self.counts[idx[hit], code[hit]] += 1
        return [
            (self.ids[r], EVENT_TYPES[c])
            for r, c in zip(idx[hit].tolist(), code[hit].tolist(), strict=True)
        ]

    def on_prices(self, prices: np.ndarray) -> list[tuple[str, str]]:
        """A composite instant: the new prices (nan: not priced in it, the last one stays), then
        every account observed."""
        self._set_prices(np.where(np.isnan(prices), self.prices, prices))
        n = len(self.ids)
        return self._observe(slice(0, n)) if n else []

    def apply(
        self, rows: np.ndarray, cols: np.ndarray, sides: np.ndarray, deltas: np.ndarray, t_us
    ) -> list[tuple[str, str]]:
        """Settlements between two composite instants, in time order: each account's
        settlements of one instant applied together, then observed once."""
        if rows.size == 0:
            return []
        order = np.lexsort((t_us, rows))  # by account, then time (stable)
        r, t = rows[order], t_us[order]
        new = np.ones(r.size, dtype=bool)
        new[1:] = (r[1:] != r[:-1]) | (t[1:] != t[:-1])
        group = np.cumsum(new) - 1
        first_of_account = np.ones(r.size, dtype=bool)
        first_of_account[1:] = r[1:] != r[:-1]
        base = np.maximum.accumulate(np.where(first_of_account, group, 0))
        rank = group - base  # the instant's place among the account's instants
        events: list[tuple[str, str]] = []
        for k in range(int(rank.max()) + 1):
            pick = order[rank == k]
            s, rr, cc, dd = sides[pick], rows[pick], cols[pick], deltas[pick]
            old = self.bal[s, rr, cc]
            after = old + dd
            # exactly emptied in decimals may be a rounding speck in float
            after[np.abs(after) <= 1e-12 * (np.abs(old) + np.abs(dd))] = 0.0
            ok = after >= 0
            self.refused += int((~ok).sum())
            np.add.at(self.bal, (s[ok], rr[ok], cc[ok]), dd[ok])
            touched = np.unique(rr[ok])
            events += self._observe(touched)
        return events

    def apply_one(self, row: int, col: int, side: int, delta: float) -> list[tuple[str, str]]:
        """One settlement of its own instant (the Bytewax job's path), in Python scalars."""
        view = self.bal[:, row]
        q = view.tolist()  # [collateral, debt] per asset, as Python floats
        old = q[side][col]
        after = old + delta
        if abs(after) <= 1e-12 * (abs(old) + abs(delta)):
            after = 0.0
        if after < 0:
            self.refused += 1
            return []
        view[side, col] = q[side][col] = after
        c = d = 0.0
        for q_c, q_d, price in zip(q[0], q[1], self._price_list, strict=True):
            if q_c or q_d:
                if price is None:  # never priced: not valued
                    return []
                c += q_c * price
                d += q_d * price
        health = (c - d) / d * 100.0 if d > 0 else None
        before = int(self.zone[row])
        now = next_zone_one(before, health)
        if now == before:
            return []
        self.zone[row] = now
        code = event_one(before, now)
        if code < 0:
            return []
        self.counts[row, code] += 1
        return [(self.ids[row], EVENT_TYPES[code])]

    def by_account(self) -> dict[str, list[int]]:
        """account -> [margin calls, liquidations, recoveries], accounts with an event only."""
        n = len(self.ids)
        rows = np.flatnonzero(self.counts[:n].any(axis=1))
        return {self.ids[r]: self.counts[r].tolist() for r in rows.tolist()}


# --------------------------------------------------------------------------- the reading
class Composer:
    """Composite prices of 1-s (``window_s``) windows from price updates in publish order; see
    the module docstring for the rules and what is refused."""

    def __init__(self, window_s: int = 1):
        feeds, defaults = _feeds()
        self.window_us = window_s * MICROS
        grace = int(defaults.get("grace_s", 120))
        self.max_dev_bps = float(defaults.get("max_source_deviation_bps", 100.0))
        self.fresh_us = {k: (f["heartbeat_s"] + grace) * MICROS for k, f in feeds.items()}
        self.latest: dict[str, dict[str, tuple[float, int]]] = {a: {} for a in ASSETS}
        self.next_end: int | None = None  # the end of the first window not composed yet
        self.last_end: int | None = None  # the end of the latest window with an update
        self.last_publish = -1
        self.pending: list[tuple[str, str, float, int]] = []
        self.composites = 0

    def add(self, asset: str, source: str, price: float, publish_us: int):
        """Takes an update; returns the composites (window end, prices) it closes."""
        if publish_us < self.last_publish:
            raise JobError("price updates are not in publish-time order")
        if asset not in self.latest:
            raise JobError(f"asset {asset!r} is not one of the job's {ASSETS}")
        self.last_publish = publish_us
        packs = self.until(publish_us)
        end = publish_us - publish_us % self.window_us + self.window_us
        if self.next_end is None:
            self.next_end = end
        self.last_end = end
        self.pending.append((asset, source, price, publish_us))
        return packs

    def until(self, t_us: int, final: bool = False):
        """The composites of the windows that end at or before ``t_us`` (or, ``final``, every
        window up to the latest update's), never beyond the latest update's window."""
        packs = []
        while self.next_end is not None and self.next_end <= self.last_end:
            if not final and self.next_end > t_us:
                break
            end = self.next_end
            keep = []
            for asset, source, price, publish in self.pending:
                if publish < end:
                    prev = self.latest[asset].get(source)
                    if prev is None or publish >= prev[1]:
                        self.latest[asset][source] = (price, publish)
                else:
                    keep.append((asset, source, price, publish))
            self.pending = keep
            packs.append((end, self._compose(end)))
            self.next_end = end + self.window_us
        return packs

    def _compose(self, end: int) -> np.ndarray:
        out = np.full(len(ASSETS), np.nan)
        for j, asset in enumerate(ASSETS):
            sources = self.latest[asset]
            if not sources:
                continue
            fresh = sorted(
                p
                for s, (p, publish) in sources.items()
                if end - publish <= self.fresh_us.get((asset, s), 0)
            )
            if len(fresh) < 2:
                raise JobError(f"{asset} at {end} us: {len(fresh)} fresh source(s), not ok")
            median = statistics.median(fresh)
            if len(fresh) == 2:
                off = (fresh[1] - fresh[0]) / fresh[0] * 10_000
            else:  # three or more: each against the median
                off = max(abs(x - median) for x in fresh) / median * 10_000
            if off > self.max_dev_bps:
                raise JobError(f"{asset} at {end} us: a source {off:.0f} bps off, not ok")
            out[j] = median
        self.composites += 1
        return out


SETTLEMENT_COLUMNS = pa.schema(
    [
        ("account_id", pa.string()),
        ("kind", pa.string()),
        ("asset", pa.string()),
        ("amount_raw", pa.string()),
        ("decimals", pa.int64()),
        ("event_time", pa.timestamp("us", tz="UTC")),
    ]
)
PRICE_COLUMNS = pa.schema(
    [
        ("asset", pa.string()),
        ("source", pa.string()),
        ("price", pa.string()),
        ("publish_time", pa.timestamp("us", tz="UTC")),
    ]
)
BLOCK_BYTES = 1 << 20  # 1 MiB of JSON lines per record batch: ~5k settlements


def read_blocks(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The JSONL file as record batches of ``schema``'s columns (others ignored), one thread,
    ``BLOCK_BYTES`` of lines at a time (pyarrow's own streaming reader reads far ahead: 280 MB
    resident for the 1M-event job)."""
    read = pj.ReadOptions(use_threads=False, block_size=2 * BLOCK_BYTES)
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    with open(path, "rb") as f:
        while lines := f.readlines(BLOCK_BYTES):
            table = pj.read_json(pa.BufferReader(b"".join(lines)), read, parse)
            yield from table.to_batches()


def int64s(column: pa.Array) -> np.ndarray:
    """An int64 or timestamp[us] column (epoch microseconds) as an int64 array, read off its
    buffer: ``to_numpy`` imports pandas (45 MB resident, a third of the reference's memory), and
    so does ``pyarrow.compute``."""
    if column.null_count:
        raise JobError(f"a {column.type} column has {column.null_count} null(s)")
    data = column.buffers()[1]
    return np.frombuffer(data, dtype=np.int64, count=len(column), offset=8 * column.offset)


def numbers(column: pa.Array) -> np.ndarray:
    """A column of decimal strings as float64 (correctly rounded: numpy parses them)."""
    return np.array(column.to_pylist(), dtype=np.float64)


class Settlements:
    """The settlement file as arrays (time, account row, asset column, side, signed token
    amount), read a block at a time; ``before(t)`` takes every settlement before ``t``."""

    def __init__(self, path: Path, book: MarginBook):
        self.blocks = iter(read_blocks(path, SETTLEMENT_COLUMNS))
        self.book = book
        self.buf: list[np.ndarray] | None = None
        self.last = -1
        self.count = 0

    def _next_block(self) -> list[np.ndarray] | None:
        while (b := next(self.blocks, None)) is not None:
            if b.num_rows == 0:
                continue
            t = int64s(b.column("event_time"))
            if t[0] < self.last or (np.diff(t) < 0).any():
                raise JobError("settlements are not in event-time order")
            self.last = int(t[-1])
            try:
                side, sign = np.array([KIND[k] for k in b.column("kind").to_pylist()]).T
                col = np.array([COL[a] for a in b.column("asset").to_pylist()], dtype=np.int64)
            except KeyError as exc:
                raise JobError(f"{exc} is not a kind or an asset of the job") from exc
            row = np.array([self.book.row(a) for a in b.column("account_id").to_pylist()])
            qty = numbers(b.column("amount_raw")) / np.power(10.0, int64s(b.column("decimals")))
            return [t, row, col, side.astype(np.int64), sign * qty]
        return None

    def before(self, t_us: int | None) -> list[np.ndarray] | None:
        """The settlements before ``t_us`` (None: all that are left), in time order."""
        parts = []
        while True:
            if self.buf is None:
                self.buf = self._next_block()
                if self.buf is None:
                    break
            cut = self.buf[0].size if t_us is None else np.searchsorted(self.buf[0], t_us)
            if cut:
                parts.append([x[:cut] for x in self.buf])
            if cut < self.buf[0].size:
                self.buf = [x[cut:] for x in self.buf]
                break
            self.buf = None
        if not parts:
            return None
        out = [np.concatenate(x) for x in zip(*parts, strict=True)] if len(parts) > 1 else parts[0]
        self.count += out[0].size
        return out


def price_updates(path: Path) -> Iterator[tuple[str, str, float, int]]:
    """(asset, source, price, publish time in us) per price line, in file order."""
    for b in read_blocks(path, PRICE_COLUMNS):
        yield from zip(
            b.column("asset").to_pylist(),
            b.column("source").to_pylist(),
            numbers(b.column("price")).tolist(),
            int64s(b.column("publish_time")).tolist(),
            strict=True,
        )


def run_reference(input_dir: str | Path, window_s: int = 1) -> dict:
    """The margin events of the job in ``input_dir`` by the rules above: per account
    [margin calls, liquidations, recoveries], the totals, and what was read."""
    input_dir = Path(input_dir)
    book = MarginBook()
    composer = Composer(window_s)
    settlements = Settlements(input_dir / SETTLEMENTS_FILE, book)
    n_prices = 0

    def apply(before_us: int | None) -> None:
        batch = settlements.before(before_us)
        if batch is not None:
            t, row, col, side, delta = batch
            book.apply(row, col, side, delta, t)

    def prices(packs) -> None:
        for end, p in packs:
            apply(end)  # settlements before the instant; one at it comes after its price
            book.on_prices(p)

    for asset, source, price, publish in price_updates(input_dir / PRICES_FILE):
        n_prices += 1
        prices(composer.add(asset, source, price, publish))
    prices(composer.until(0, final=True))
    apply(None)
    counts = book.by_account()
    totals = np.array(list(counts.values()) or [[0, 0, 0]]).sum(axis=0).tolist()
    return {
        "accounts": counts,
        "events": dict(zip(EVENT_TYPES, totals, strict=True)),
        "margin_call_accounts": sum(1 for c in counts.values() if c[0]),
        "liquidation_accounts": sum(1 for c in counts.values() if c[1]),
        "price_events": n_prices,
        "settlements": settlements.count,
        "composites": composer.composites,
        "refused": book.refused,
    }


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the job's topic files")
    g.add_argument("--out", required=True)
    g.add_argument("--events", type=int, default=1_000_000)
    g.add_argument("--accounts", type=int, default=10_000)
    g.add_argument("--seed", type=int, default=7)
    r = sub.add_parser("reference", help="the numpy reference over a job's topic files")
    r.add_argument("--input-dir", required=True)
    r.add_argument("--out", required=True, help="where the counts go (JSON)")
    r.add_argument("--window-s", type=int, default=1)
    a = p.parse_args(argv)
    start = time.perf_counter()
    if a.command == "generate":
        summary = generate(a.out, a.events, a.accounts, a.seed)
        summary["seconds_taken"] = round(time.perf_counter() - start, 3)
        print(json.dumps(summary), flush=True)
    else:
        write_counts(a.out, run_reference(a.input_dir, a.window_s), start)
    return 0


def write_counts(out: str | Path, result: dict, start: float) -> None:
    """An engine's counts to ``out`` (JSON), and its summary (no per-account counts) on stdout."""
    Path(out).write_text(json.dumps(result))
    summary = {k: v for k, v in result.items() if k != "accounts"}
    summary["seconds_taken"] = round(time.perf_counter() - start, 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
