"""Lending accounts: settlements (deposit/withdraw/borrow/repay/liquidation) and margin truth.

Health = (collateral_usd - borrow_usd) / borrow_usd * 100 at the minute mid price (mean of the
Chainlink and Pyth prices). Settlements happen on minute boundaries (Ethereum blocks 5 apart),
and the health at minute m counts every settlement with event_time <= m.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import count

import numpy as np

from runners.synthetic.assets import (
    BLOCKS_PER_MINUTE,
    CHAINS,
    DECIMALS,
    ETHEREUM,
    PRICE_ASSETS,
    STABLECOINS,
    Clock,
    iso,
)
from runners.synthetic.market import Market
from runners.synthetic.rng import Ledger, substream
from schemas.base import deterministic_id

MARGIN_CALL = 30.0
LIQUIDATION = 15.0
LIQUIDATION_TARGET = 45.0  # a liquidation repays debt until health is back here (above 30)
LIQUIDATION_BONUS = 0.05  # collateral seized = debt repaid * (1 + bonus)
SAFE_HEALTH = 60.0  # ordinary withdrawals and borrows never take an account below this
MARGIN_ACCOUNT_SHARE = 0.075  # accounts deliberately driven into margin calls (5-10%)
ACTIONS_PER_DAY = 3.0
TRUTH_CELLS = 2_000_000  # minutes x accounts per block of the vectorised truth (16 MB a matrix)

VENUE_DEBT = {"aave_v3": ("USDC", "USDT", "DAI"), "compound_v3": ("USDC",), "maker": ("DAI",)}
VENUES = tuple(VENUE_DEBT)
A = {a: i for i, a in enumerate(PRICE_ASSETS)}


def raw_amount(qty: float, asset: str) -> int:
    """Raw units of a human amount, rounded to cents (stablecoins) or 1e-6 (others)."""
    dec = DECIMALS[asset]
    digits = min(dec, 2 if asset in STABLECOINS else 6)
    return int(np.floor(qty * 10**digits)) * 10 ** (dec - digits)


@dataclass
class Plan:
    account_id: str
    venue: str
    collateral: tuple[str, ...]
    debt: tuple[str, ...]
    margin: bool  # driven into a margin call on purpose
    liquidate: bool  # ... and then below the liquidation line


@dataclass
class AccountsResult:
    settlements: list[dict]
    plans: list[Plan]
    deltas: np.ndarray  # (n, 4): minute, account index, asset index, collateral qty delta
    debt_deltas: np.ndarray  # same for debt
    liquidations: dict[str, list[int]]  # account -> minutes of liquidation settlements


def _plans(n: int, rng: np.random.Generator) -> list[Plan]:
    n_margin = max(1, round(MARGIN_ACCOUNT_SHARE * n))
    margin_idx = [int(i) for i in rng.choice(n, size=min(n_margin, n), replace=False)]
    liquidate_idx = margin_idx[: max(1, len(margin_idx) // 2)]
    plans = []
    for i in range(n):
        venue = VENUES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        vol = [("ETH",), ("BTC",), ("ETH", "BTC")][int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        stable: tuple[str, ...] = ()
        if venue == "aave_v3" and rng.random() < 0.3 and i not in margin_idx:
            stable = (("USDC", "DAI")[int(rng.integers(2))],)
        debt_choices = [d for d in VENUE_DEBT[venue] if d not in stable]
        k = 2 if len(debt_choices) > 1 and rng.random() < 0.25 else 1
        debt = tuple(str(d) for d in rng.choice(debt_choices, size=k, replace=False))
        plans.append(
            Plan(
                f"acct-{i + 1:04d}", venue, vol + stable, debt, i in margin_idx, i in liquidate_idx
            )
        )
    return plans


class _Account:
    """One account's positions (raw ints) while its settlement stream is simulated in order."""

    def __init__(self, plan: Plan, mid: np.ndarray):
        self.plan, self.mid = plan, mid
        self.coll = {a: 0 for a in plan.collateral}
        self.debt = {a: 0 for a in plan.debt}

    def vec(self, book: dict[str, int]) -> np.ndarray:
        v = np.zeros(len(PRICE_ASSETS))
        for a, raw in book.items():
            v[A[a]] = raw / 10 ** DECIMALS[a]
        return v

    def usd(self, book: dict[str, int], m: int) -> float:
        return float(self.mid[m] @ self.vec(book))

    def health(self, m: int) -> float:
        b = self.usd(self.debt, m)
        return np.inf if b <= 1e-9 else (self.usd(self.coll, m) - b) / b * 100

    def first_below(self, lo: int, hi: int, line: float) -> int | None:
        """First minute in [lo, hi) with health below `line`, positions held constant."""
        if hi <= lo:
            return None
        c = self.mid[lo:hi] @ self.vec(self.coll)
        b = self.mid[lo:hi] @ self.vec(self.debt)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where(b > 1e-9, (c - b) / b * 100, np.inf)
        hit = np.flatnonzero(h < line)
        return lo + int(hit[0]) if hit.size else None


def simulate_accounts(
    market: Market, n_accounts: int, seed: int, clock: Clock, ledger: Ledger
) -> AccountsResult:
    rng = substream(seed, "accounts")
    plans = _plans(n_accounts, rng)
    mid = market.mid
    n_min = market.n_minutes
    base_block = CHAINS[ETHEREUM].base_block
    settlements: list[dict] = []
    coll_rows: list[tuple[int, int, int, float]] = []
    debt_rows: list[tuple[int, int, int, float]] = []
    liquidations: dict[str, list[int]] = {}

    for idx, plan in enumerate(plans):
        acct = _Account(plan, mid)
        heap: list[tuple[int, int, str, float]] = []
        push = partial(_push, heap, count())
        m0 = int(rng.integers(1, min(120, n_min // 4)))
        push(m0, "open")
        push(
            m0 + int(rng.integers(1, 6)),
            "open_borrow",
            float(rng.uniform(34, 42) if plan.margin else rng.uniform(80, 250)),
        )
        rate = 0.5 if plan.margin else ACTIONS_PER_DAY
        n_actions = int(rng.poisson(rate * market.days))
        for m in np.sort(rng.integers(m0 + 10, n_min, n_actions)):
            push(int(m), "action", float(rng.random()))
        if plan.margin:
            push(int(rng.uniform(0.25, 0.5) * n_min), "drag", float(rng.uniform(25, 29)))
            if plan.liquidate:
                push(int(rng.uniform(0.55, 0.85) * n_min), "drag", float(rng.uniform(9, 13)))

        cursor, pending, stop = None, False, False
        while True:
            nxt = heap[0][0] if heap else n_min
            # Bad debt (no collateral left) has nothing to liquidate: stop looking.
            live = not pending and not stop and any(acct.coll.values())
            if cursor is not None and live and nxt > cursor:
                j = acct.first_below(cursor, nxt, LIQUIDATION)
                if j is not None:
                    lm = j + int(rng.integers(2, 6))  # a liquidator bot acts a few minutes later
                    if lm < n_min:
                        push(lm, "liquidation")
                        pending = True
                    else:
                        stop = True
                    continue
            if not heap:
                break
            m, _, kind, x = heapq.heappop(heap)
            rows = _execute(acct, kind, x, m, rng)
            if kind == "liquidation":
                pending = False
                if rows:
                    liquidations.setdefault(plan.account_id, []).append(m)
            cursor = m if cursor is None or m > cursor else cursor
            if not rows:
                continue
            block = base_block + BLOCKS_PER_MINUTE * m
            tx_hash, first_log = ledger.tx(ETHEREUM, block, len(rows))
            for i, (skind, asset, raw) in enumerate(rows):
                sign = -1 if skind in ("withdraw", "liquidation", "repay") else 1
                qty = sign * raw / 10 ** DECIMALS[asset]
                (
                    coll_rows if skind in ("deposit", "withdraw", "liquidation") else debt_rows
                ).append((m, idx, A[asset], qty))
                settlements.append(
                    {
                        "event_id": deterministic_id(
                            "settlement", ETHEREUM, tx_hash, first_log + i
                        ),
                        "account_id": plan.account_id,
                        "venue": plan.venue,
                        "chain_id": ETHEREUM,
                        "kind": skind,
                        "asset": asset,
                        "amount_raw": str(raw),
                        "decimals": DECIMALS[asset],
                        "tx_hash": tx_hash,
                        "block_number": block,
                        "event_time": clock.block_time(ETHEREUM, block),
                        "_sort": (m, block, first_log + i),
                    }
                )

    settlements.sort(key=lambda r: r["_sort"])
    return AccountsResult(
        settlements,
        plans,
        np.array(coll_rows, dtype=np.float64).reshape(-1, 4),
        np.array(debt_rows, dtype=np.float64).reshape(-1, 4),
        liquidations,
    )


def _push(heap: list, seq: Iterator[int], minute: int, kind: str, x: float = 0.0) -> None:
    """Queue an event; the sequence number keeps same-minute events in planning order."""
    heapq.heappush(heap, (minute, next(seq), kind, x))


def _take(book: dict[str, int], asset: str, raw: int) -> int:
    """Remove up to `raw` from a position; a near-complete removal takes everything (no dust)."""
    held = book[asset]
    raw = held if raw >= held * 0.999 else max(raw, 0)
    book[asset] = held - raw
    return raw


def _execute(
    acct: _Account, kind: str, x: float, m: int, rng: np.random.Generator
) -> list[tuple[str, str, int]]:
    """Apply one planned event at minute m; returns the settlements (kind, asset, raw)."""
    plan, mid = acct.plan, acct.mid[m]
    rows: list[tuple[str, str, int]] = []

    def deposit(asset: str, usd: float) -> None:
        raw = raw_amount(usd / mid[A[asset]], asset)
        if raw > 0:
            acct.coll[asset] += raw
            rows.append(("deposit", asset, raw))

    def borrow(usd: float) -> None:
        shares = rng.dirichlet(np.ones(len(plan.debt))) if len(plan.debt) > 1 else [1.0]
        for asset, s in zip(plan.debt, shares, strict=True):
            raw = raw_amount(usd * s / mid[A[asset]], asset)
            if raw > 0:
                acct.debt[asset] += raw
                rows.append(("borrow", asset, raw))

    c, b = acct.usd(acct.coll, m), acct.usd(acct.debt, m)
    if kind == "open":
        total = float(np.clip(rng.lognormal(np.log(50_000), 1.1), 1_000, 5_000_000))
        for asset, s in zip(
            plan.collateral, rng.dirichlet(np.ones(len(plan.collateral)) * 2), strict=True
        ):
            deposit(asset, total * s)
    elif kind == "open_borrow":
        borrow(c / (1 + x / 100))
    elif kind == "drag":  # borrow until health = x: the margin call comes from the borrow itself
        target_debt = c / (1 + x / 100)
        if target_debt > b * 1.001:
            borrow(target_debt - b)
    elif kind == "liquidation":
        if b <= 1e-9 or acct.health(m) >= LIQUIDATION:
            return rows
        repay_usd = ((1 + LIQUIDATION_TARGET / 100) * b - c) / (
            LIQUIDATION_TARGET / 100 - LIQUIDATION_BONUS
        )
        repay_usd = min(repay_usd, b, c / (1 + LIQUIDATION_BONUS))
        seize_usd = repay_usd * (1 + LIQUIDATION_BONUS)
        for book, usd, skind in (
            (acct.debt, repay_usd, "repay"),
            (acct.coll, seize_usd, "liquidation"),
        ):
            # Largest positions first, as liquidators pick the biggest collateral and debt.
            for asset in sorted(book, key=lambda a: (-book[a] / 10 ** DECIMALS[a] * mid[A[a]], a)):
                value = book[asset] / 10 ** DECIMALS[asset] * mid[A[asset]]
                if usd <= 0.01 or value <= 0:
                    continue
                part = min(usd, value)
                raw = _take(book, asset, raw_amount(part / mid[A[asset]], asset))
                if raw:
                    rows.append((skind, asset, raw))
                usd -= part
    elif kind == "action":
        small = plan.margin  # driven accounts only top up or pay back a little
        r = rng.random()
        size = rng.uniform(0.01, 0.04) if small else rng.uniform(0.03, 0.3)
        if small:
            r = 0.0 if x < 0.5 else 0.9
        if r < 0.3:  # deposit
            deposit(plan.collateral[int(rng.integers(len(plan.collateral)))], max(c, 1000.0) * size)
        elif r < 0.5:  # withdraw, never below SAFE_HEALTH
            held = [a for a in plan.collateral if acct.coll[a] > 0]
            if held:
                asset = held[int(rng.integers(len(held)))]
                value = acct.coll[asset] / 10 ** DECIMALS[asset] * mid[A[asset]]
                room = c - (1 + SAFE_HEALTH / 100) * b if b > 0 else c
                usd = min(value * size, room)
                if usd > 0.005 * c:
                    raw = _take(acct.coll, asset, raw_amount(usd / mid[A[asset]], asset))
                    if raw:
                        rows.append(("withdraw", asset, raw))
        elif r < 0.75:  # borrow, never below SAFE_HEALTH
            room = c / (1 + SAFE_HEALTH / 100) - b
            usd = min(max(b, 0.2 * c) * size, room)
            if usd > 0.005 * c:
                borrow(usd)
        else:  # repay
            held = [a for a in plan.debt if acct.debt[a] > 0]
            if held:
                asset = held[int(rng.integers(len(held)))]
                raw = _take(
                    acct.debt,
                    asset,
                    raw_amount(acct.debt[asset] / 10 ** DECIMALS[asset] * size * 2, asset),
                )
                if raw:
                    rows.append(("repay", asset, raw))
    return rows


def margin_truth(market: Market, result: AccountsResult, clock: Clock) -> list[dict]:
    """Per account, from the settlement stream and minute mids (numpy over minutes x accounts):
    first minute below 30, first minute below 15 and the minimum health (minutes with debt)."""
    mid = market.mid
    n_min, n_acct = market.n_minutes, len(result.plans)
    out = []
    chunk = max(16, TRUTH_CELLS // n_min)  # bounded memory whatever the run length
    for lo in range(0, n_acct, chunk):
        hi = min(lo + chunk, n_acct)
        coll = np.zeros((n_min, hi - lo))
        debt = np.zeros((n_min, hi - lo))
        for book, rows in ((coll, result.deltas), (debt, result.debt_deltas)):
            rows = rows[(rows[:, 1] >= lo) & (rows[:, 1] < hi)]
            for j in range(len(PRICE_ASSETS)):
                sel = rows[rows[:, 2] == j]
                if not len(sel):
                    continue
                d = np.zeros((n_min, hi - lo))
                np.add.at(d, (sel[:, 0].astype(int), sel[:, 1].astype(int) - lo), sel[:, 3])
                book += np.cumsum(d, axis=0) * mid[:, j : j + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            health = np.where(debt > 1e-9, (coll - debt) / debt * 100, np.nan)
        below_mc = np.nan_to_num(health, nan=np.inf) < MARGIN_CALL
        below_liq = np.nan_to_num(health, nan=np.inf) < LIQUIDATION
        min_h = np.nanmin(np.where(np.isnan(health), np.inf, health), axis=0)
        for k in np.flatnonzero(below_mc.any(axis=0)):
            plan = result.plans[lo + k]
            first_liq = int(np.argmax(below_liq[:, k])) if below_liq[:, k].any() else None
            out.append(
                {
                    "account_id": plan.account_id,
                    "venue": plan.venue,
                    "first_margin_call": iso(clock.at(60 * int(np.argmax(below_mc[:, k])))),
                    "first_liquidation": iso(clock.at(60 * first_liq))
                    if first_liq is not None
                    else None,
                    "min_health": round(float(min_h[k]), 4),
                    "planned": plan.margin,
                    "liquidation_settlements": [
                        iso(clock.at(60 * m)) for m in result.liquidations.get(plan.account_id, [])
                    ],
                }
            )
    return out
