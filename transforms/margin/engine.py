"""The margin engine of one shard of accounts (pure, no Beam).

It replays a shard's settlements and composite prices in event-time order and keeps, per account,
the ``PositionBook`` (the same idempotent position rules as VaR) and the detector's
``AccountState``. Outputs are ``margin_health`` rows, ``margin_events`` and ``alerts.margin.v1``
alerts.

The price join: why it scales to 100k accounts
----------------------------------------------
Quantities also live in two dense float arrays, accounts x assets (collateral and debt), beside
a float vector of the latest prices. A composite price of asset j touches only the rows that
hold j (one vectorised mask over the column), revalues them all at once (two matrix-vector
products) and screens their health in float: only accounts whose float zone differs from their
detector zone, or that sit within 1e-6 of a threshold, are re-checked exactly in ``Decimal`` and
fed to the detector. Everything else costs a few nanoseconds per account. With 100k accounts over
64 shards, a price tick is 64 elements (one per shard) each doing ~1.6k-row numpy work, instead
of 100k per-account elements; the per-element Beam cost is paid per shard, not per account.

The backfill's path: ``advance_batch``
--------------------------------------
A day of a backfill is 1,440 whole-market price instants and thousands of accounts; ``advance``
would screen every account at every instant. ``advance_batch`` produces the same rows, events,
alerts and state account by account: the batch's prices are laid out first (``_PriceTape``), an
account that no mix of the day's lowest and highest prices can move out of its zone gets only its
snapshot rows, and the others are walked from one flagged instant to the next (its docstring says
why the output is the same; ``tests/transforms/margin/test_batch.py`` checks it on random markets).

Rows
----
- after every applied settlement, for its account (``trigger`` settlement);
- when a price moves an account to another zone (``trigger`` price);
- every ``snapshot_s`` of event time for every account with debt (``trigger`` snapshot), so the
  latest health of each account stays fresh without a row per account per tick.

Price status: a held asset whose latest composite is ``degraded`` or ``price_unavailable`` makes
the account's status that (the worst wins). Unavailable prices keep the last good price for the
value, flagged; the detector never moves an account into margin_call or liquidation on it.

Lateness (streaming): a settlement stamped before the time the shard has already processed is
applied at that time when it is at most ``allowed_lateness_s`` late, and refused
(``late_settlement``) beyond. State of an account that closes (no collateral, no debt) is purged
``max(cooldown, allowed lateness)`` after it closed, so a redelivered old settlement can never
reopen it (it is refused as late) and state does not grow with every account ever seen.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from schemas.base import construct, deterministic_id
from schemas.events import MarginAlert, Settlement
from schemas.tables import LiquidationPrice, MarginEventRow, MarginHealthRow
from schemas.types import epoch_micros
from transforms.common.positions import Outcome, PositionBook, settlement_order
from transforms.margin.detector import AccountState, DetectorConfig, observe
from transforms.margin.health import (
    _CTX,
    health_of,
    price_at_factor,
    reachable,
    threshold_factor,
)

MICROS = 1_000_000
STATUS_RANK = {"ok": 0, "degraded": 1, "price_unavailable": 2}
ZONE_CODE = {"no_debt": 0, "healthy": 1, "warning": 2, "margin_call": 3, "liquidation": 4}
NEAR = 1e-6  # float health this close to a threshold is re-checked in Decimal


@dataclass(frozen=True)
class MarginConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    snapshot_s: int = 3600  # 0: no periodic snapshots
    allowed_lateness_s: int = 600

    def __post_init__(self):
        if self.snapshot_s < 0 or self.allowed_lateness_s < 0:
            raise ValueError("snapshot_s and allowed_lateness_s must be >= 0")
        d = self.detector
        if not d.liquidation < d.margin_call < d.warning or d.band < 0 or d.cooldown_s < 0:
            raise ValueError(
                "margin thresholds must satisfy liquidation < margin_call < warning, band and "
                "cooldown >= 0"
            )

    @property
    def purge_delay_us(self) -> int:
        return max(self.detector.cooldown_s, self.allowed_lateness_s) * MICROS


class PriceTick(NamedTuple):
    """A composite price of one asset at ``t_us`` (the window end); price None when unavailable.
    (A named tuple: a backfill day builds 28,800 of them per shard.)"""

    asset: str
    t_us: int
    price: Decimal | None
    status: str


@dataclass(frozen=True)
class Rejected:
    settlement: Settlement
    outcome: Outcome


@dataclass
class MarginOutput:
    # (t_us, row): a model, or its model_dump() dict with MarginShardEngine(dict_rows=True)
    health: list[tuple[int, MarginHealthRow | dict]] = field(default_factory=list)
    events: list[tuple[int, MarginEventRow]] = field(default_factory=list)
    alerts: list[tuple[int, MarginAlert]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    stale_prices: int = 0  # price ticks older than the asset's current price: ignored, counted


_BLOCK = 1024  # accounts screened at once by advance_batch: 1,024 x 1,440 instants x 8 B = 12 MB


@lru_cache(maxsize=4096)  # a snapshot writes one instant for every account
def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us // MICROS, tz=UTC).replace(microsecond=us % MICROS)


class MarginShardEngine:
    def __init__(self, config: MarginConfig | None = None, *, dict_rows: bool = False):
        """``dict_rows``: ``margin_health`` rows as ``model_dump()`` dicts, not models (the
        backfill turns them into Arrow columns; models would only be dumped again)."""
        self.config = config or MarginConfig()
        self.dict_rows = dict_rows
        d = self.config.detector
        self._thresholds = np.array([float(d.liquidation), float(d.margin_call), float(d.warning)])
        self.books: dict[str, PositionBook] = {}
        self.states: dict[str, AccountState] = {}
        self.row_of: dict[str, int] = {}
        self.accounts: list[str | None] = []
        self.free: list[int] = []
        self.asset_col: dict[str, int] = {}
        self.coll = np.zeros((0, 0))
        self.debt = np.zeros((0, 0))
        self.zone_code = np.zeros(0, dtype=np.int8)
        self.pvec = np.zeros(0)  # float price per column; nan until first priced
        self.prices: dict[str, Decimal] = {}  # last good composite price
        self.price_us: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self.processed_us: int | None = None
        self.next_snapshot_us: int | None = None
        self.closed_at: dict[str, int] = {}
        self._held: dict[tuple[int, ...], np.ndarray] = {}  # moved columns -> rows holding them
        self._factors = (threshold_factor(d.liquidation), threshold_factor(d.margin_call))
        liq, mc, warn = self._thresholds
        band = float(d.band)
        # zone code -> float healths at which the detector surely stays in the zone, NEAR from
        # the bounds. Hysteresis: an account leaves margin_call (liquidation) upwards only at
        # health margin_call + band (liquidation + band), so a price between the threshold and
        # the band cannot move it, whatever the price status (``next_zone``).
        self._safe = {
            ZONE_CODE["healthy"]: (warn + NEAR, np.inf),
            ZONE_CODE["warning"]: (mc + NEAR, warn - NEAR),
            ZONE_CODE["margin_call"]: (liq + NEAR, mc + band - NEAR),
            ZONE_CODE["liquidation"]: (-np.inf, liq + band - NEAR),
        }
        self._safe_lo = np.array([self._safe.get(z, (np.nan, np.nan))[0] for z in range(5)])
        self._safe_hi = np.array([self._safe.get(z, (np.nan, np.nan))[1] for z in range(5)])

    # ------------------------------------------------------------------ public API

    def advance(
        self, settlements: list[Settlement], ticks: list[PriceTick], until_us: int
    ) -> tuple[MarginOutput, list[Settlement], list[PriceTick]]:
        """Processes every event at or before ``until_us`` in event-time order (prices before
        settlements at the same instant: a price at t is known at t).

        Returns (output, settlements kept for later, ticks kept for later).
        """
        out = MarginOutput()
        later_s = [s for s in settlements if epoch_micros(s.event_time) > until_us]
        later_t = [p for p in ticks if p.t_us > until_us]
        events: list[tuple[int, int, str, object]] = []
        for t, group in _instants(ticks, until_us):
            # every asset priced at one instant moves together: one revaluation per instant
            events.append((t, 0, "", group))
        # One instant, one decision: an account's settlements of one instant are applied in
        # chain order and its health evaluated once, after the last of them.
        for (t, account), group in _instant_groups(self._accept(settlements, until_us, out)):
            events.append((t, 1, account, group))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        for t, kind, _, item in events:
            self._snapshots_before(t, out, inclusive=False)
            if kind == 0:
                self._on_prices(item, out)
            else:
                self._on_settlements(item, t, out)
            self.processed_us = max(self.processed_us or t, t)
        self._snapshots_before(until_us, out, inclusive=True)
        self.processed_us = max(self.processed_us or until_us, until_us)
        return out, later_s, later_t

    def advance_batch(
        self, settlements: list[Settlement], ticks: list[PriceTick] | TickColumns, until_us: int
    ) -> tuple[MarginOutput, list[Settlement], list[PriceTick]]:
        """``advance``, computed account by account: the same rows, events and alerts (in
        another order) and the same state afterwards. The backfill's path.

        ``advance`` screens every account holding a moved asset at every price instant: a day
        of whole-market 1-minute packs is 1,440 numpy passes over the shard. Here the batch's
        prices are laid out first (instants x assets, with the same staleness rule; ``ticks``
        may be ``TickColumns``, the backfill's day of composite rows as arrays), so that an account's float health at every instant between two of its
        settlements is one matrix product, done for blocks of accounts at once. An account is
        walked instant by instant only from where its float health leaves its zone or comes
        within ``NEAR`` of a threshold; everything else only gets its snapshot rows.

        Why the output is the same. Accounts share nothing but the prices, which are laid out
        beforehand. An exact evaluation changes an account's state only when its exact zone
        differs from its detector zone (``next_zone`` of its own result, at the same health and
        status, is that result). The screen flags every instant where that can be -- float zone
        different, or float health within NEAR, many orders above the float error, of a
        threshold -- so both methods change the same states at the same instants at the same
        prices, and an evaluation that changes nothing writes nothing.
        """
        out = MarginOutput()
        later_s = [s for s in settlements if epoch_micros(s.event_time) > until_us]
        columns = ticks if isinstance(ticks, TickColumns) else TickColumns.from_ticks(ticks)
        later_t = columns.ticks_after(until_us)
        accepted = self._accept(settlements, until_us, out)
        for _, s in accepted:  # every column exists before the price matrix is laid out
            self._col(s.asset)
        tape = _PriceTape(self, columns, until_us, out)
        first = min(tape.t[:1] + [t for t, _ in accepted] + [until_us])
        snapshots = self._snapshot_times(first, until_us)

        by_account: dict[str, list[tuple[int, Settlement]]] = {}
        for (t, account), group in _instant_groups(accepted):
            by_account.setdefault(account, []).append((t, group))
        # Accounts without settlements in the batch: positions fixed, screened in blocks.
        quiet = [a for a in sorted(self.books) if a not in by_account]
        rows = np.array([self.row_of[a] for a in quiet], dtype=np.int64)
        safe = self._safe_all_batch(rows, tape)
        for account in (a for a, ok in zip(quiet, safe, strict=True) if ok):
            if self.books[account].debt:
                for at in snapshots:
                    k = tape.index_at(at)
                    self._evaluate(account, at, "snapshot", "", out, observe_zone=False,
                                   prices=tape.prices(k), statuses=tape.statuses(k))  # fmt: skip
        unsure = [a for a, ok in zip(quiet, safe, strict=True) if not ok]
        for lo in range(0, len(unsure), _BLOCK):
            block = unsure[lo : lo + _BLOCK]
            rows = np.array([self.row_of[a] for a in block], dtype=np.int64)
            screen = tape.screen(self.coll[rows], self.debt[rows])
            for i, account in enumerate(block):
                self._walk(account, [], snapshots, tape, out, screen.row(i))
        for account, its in by_account.items():
            self._walk(account, its, snapshots, tape, out, None)
        if snapshots:
            self.next_snapshot_us = snapshots[-1] + self.config.snapshot_s * MICROS
        self._held.clear()
        self.processed_us = max(self.processed_us or until_us, until_us)
        return out, later_s, later_t

    def _accept(
        self, settlements: list[Settlement], until_us: int, out: MarginOutput
    ) -> list[tuple[int, Settlement]]:
        """(time applied, settlement) of those at or before ``until_us``; a settlement behind the
        processed time is applied at it within the allowed lateness, refused beyond."""
        floor = self.processed_us
        lateness = self.config.allowed_lateness_s * MICROS
        kept = []
        for s in settlements:
            t = epoch_micros(s.event_time)
            if t > until_us:
                continue
            if floor is not None and t < floor:
                if t < floor - lateness:
                    out.rejected.append(
                        Rejected(
                            s,
                            Outcome(
                                False,
                                "late_settlement",
                                f"settlement at {s.event_time.isoformat()} is "
                                f"{(floor - t) / MICROS:.0f} s behind the processed time "
                                f"{_dt(floor).isoformat()}; allowed lateness is "
                                f"{self.config.allowed_lateness_s} s",
                            ),
                        )
                    )
                    continue
                t = floor  # within the allowed lateness: applied now, valued at current prices
            kept.append((t, s))
        return kept

    def _snapshot_times(self, first_us: int, until_us: int) -> list[int]:
        """The snapshot instants ``advance`` would write up to ``until_us``, the first event of
        the batch (or ``until_us``) starting the clock when it has not started yet."""
        step = self.config.snapshot_s * MICROS
        if not step:
            return []
        if self.next_snapshot_us is None:
            self.next_snapshot_us = first_us - first_us % step + step
        return list(range(self.next_snapshot_us, until_us + 1, step))

    def _walk(self, account, its, snapshots, tape, out, screened) -> None:
        """One account through the batch in event-time order: price instants (screened), its
        settlements (after the prices of their instant) and snapshots (after every event at or
        before them)."""
        timeline = [(t, 1, group) for t, group in its] + [(at, 2, None) for at in snapshots]
        timeline.sort(key=lambda e: (e[0], e[1]))  # one group of settlements per instant
        k = 0
        for t, kind, group in timeline:
            end = tape.index_at(t) + 1  # instants at or before t come first
            self._walk_prices(account, k, end, tape, out, screened)
            k = end
            prices, statuses = tape.prices(end - 1), tape.statuses(end - 1)
            if kind == 1:
                self._on_settlements(group, t, out, prices=prices, statuses=statuses)
                screened = None  # positions changed: the block's screen no longer holds
            else:
                book = self.books.get(account)
                if book is not None and book.debt:
                    self._evaluate(account, t, "snapshot", "", out, observe_zone=False,
                                   prices=prices, statuses=statuses)  # fmt: skip
        self._walk_prices(account, k, tape.size, tape, out, screened)

    def _walk_prices(self, account, k0, k1, tape, out, screened) -> None:
        """Exact evaluations of ``account`` at the flagged instants of [k0, k1)."""
        r = self.row_of.get(account)
        if k0 >= k1 or r is None:
            return
        if screened is None:
            if self._row_safe_all_batch(r, tape):
                return  # no instant of the batch can move it
            s = tape.screen(self.coll[r : r + 1], self.debt[r : r + 1], k0, k1)
            health, eligible = s.health[0], s.eligible[0]
        else:
            health, eligible = (a[k0:k1] for a in screened)
        z, i = self.zone_code[r], 0
        while i < k1 - k0:
            flagged = np.flatnonzero(eligible[i:] & self._unsafe(health[i:], z)) + i
            for j in flagged.tolist():
                k = k0 + j
                self._evaluate(account, tape.t[k], "price", tape.ref(k), out, observe_zone=True,
                               only_change=True, prices=tape.prices(k),
                               statuses=tape.statuses(k))  # fmt: skip
                if self.zone_code[r] != z:  # a new zone: screen the rest against it
                    z, i = self.zone_code[r], j + 1
                    break
            else:
                return

    def _safe_all_batch(self, rows: np.ndarray, tape: _PriceTape) -> np.ndarray:
        """True for the rows whose current positions stay inside their zone, NEAR from its
        bounds, at any mix of the batch's lowest and highest price of each asset: health is
        (c - d) / d, lowest at the lowest collateral and highest debt values, so no instant of
        the batch can move them and they need no per-instant screen (most accounts, most days:
        a day's moves are a few percent)."""
        width = tape.low.size
        coll, debt = self.coll[rows, :width], self.debt[rows, :width]
        c_lo, c_hi, d_lo, d_hi = (
            coll @ tape.low,
            coll @ tape.high,
            debt @ tape.low,
            debt @ tape.high,
        )
        zone = self.zone_code[rows]
        lo, hi = self._safe_lo[zone], self._safe_hi[zone]
        with np.errstate(invalid="ignore", divide="ignore"):
            h_lo, h_hi = _health_range(c_lo, c_hi, d_lo, d_hi)
            inside = (d_lo > 0) & (h_lo >= lo) & (h_hi <= hi)
        without_debt = (zone == ZONE_CODE["no_debt"]) & ~(debt != 0).any(axis=1)
        return inside | without_debt

    def _row_safe_all_batch(self, r: int, tape: _PriceTape) -> bool:
        """``_safe_all_batch`` of one row in scalars (called once per settlement: numpy's
        per-call cost would dominate)."""
        width = tape.low.size
        coll, debt = self.coll[r, :width], self.debt[r, :width]
        zone = int(self.zone_code[r])
        if not debt.any():
            return zone == ZONE_CODE["no_debt"]
        d_lo = float(debt @ tape.low)
        if zone == ZONE_CODE["no_debt"] or not d_lo > 0:
            return False
        lo, hi = self._safe[zone]
        c_lo, c_hi, d_hi = float(coll @ tape.low), float(coll @ tape.high), float(debt @ tape.high)
        h_lo, h_hi = _health_range(c_lo, c_hi, d_lo, d_hi)
        return h_lo >= lo and h_hi <= hi

    def _unsafe(self, health: np.ndarray, zone_code: int) -> np.ndarray:
        """Where float health may not be in the zone: outside it, or within NEAR of one of its
        bounds (``_on_prices``'s "float zone differs or near a threshold", as an interval)."""
        if zone_code == ZONE_CODE["no_debt"]:
            return ~np.isnan(health)
        lo, hi = self._safe[zone_code]
        return ~((health >= lo) & (health <= hi))  # nan (no debt): unsafe

    def purge(self, until_us: int) -> int:
        """Forgets accounts closed for at least the purge delay; returns how many."""
        delay = self.config.purge_delay_us
        gone = [
            a
            for a, t in self.closed_at.items()
            if t + delay <= until_us and self.books.get(a) is not None and self.books[a].is_closed()
        ]
        for a in gone:
            self._drop(a)
        # accounts reopened since they closed are no longer waiting
        for a in [a for a in self.closed_at if a in self.books and not self.books[a].is_closed()]:
            del self.closed_at[a]
        return len(gone)

    def next_purge_us(self) -> int | None:
        if not self.closed_at:
            return None
        return min(self.closed_at.values()) + self.config.purge_delay_us

    def state_size(self) -> int:
        """Accounts held in state (books, detector states and array rows)."""
        return len(self.books)

    # ------------------------------------------------------------------ settlements

    def _on_settlements(
        self, group: list[Settlement], t: int, out: MarginOutput, prices=None, statuses=None
    ) -> None:
        """One account's settlements of one instant, in chain order; the health is evaluated
        once, after the last, so no state between two of them can raise an alert."""
        account = group[0].account_id
        book = self.books.get(account)
        if book is None:
            book = self.books[account] = PositionBook(account)
            self.states[account] = AccountState()
            self._new_row(account)
        applied = []
        for s in group:
            outcome = book.apply(s)
            if outcome.applied:
                applied.append(s)
                self._sync_row(account, s.asset)
            else:
                out.rejected.append(Rejected(s, outcome))
        if not applied:
            if book.is_closed() and not book.seen:
                self._drop(account)  # never opened: keep no state for it
            return
        if book.is_closed():
            self.closed_at[account] = t
        else:
            self.closed_at.pop(account, None)
        self._evaluate(
            account,
            t,
            "settlement",
            applied[-1].event_id,
            out,
            observe_zone=True,
            prices=prices,
            statuses=statuses,
        )

    # ------------------------------------------------------------------ prices

    def _apply_prices(self, group: list[PriceTick], out: MarginOutput) -> list[int]:
        """Takes an instant's ticks as the latest prices; returns the columns that moved (a tick
        older than its asset's current price is stale: ignored, counted)."""
        moved = []
        for p in group:
            if p.t_us < self.price_us.get(p.asset, -1):
                out.stale_prices += 1
                continue
            self.price_us[p.asset] = p.t_us
            self.status[p.asset] = p.status
            j = self._col(p.asset)
            moved.append(j)
            if p.price is not None:
                self.prices[p.asset] = p.price
                self.pvec[j] = float(p.price)
        return moved

    def _on_prices(self, group: list[PriceTick], out: MarginOutput) -> None:
        moved = self._apply_prices(group, out)
        n = len(self.accounts)
        if not moved or n == 0:
            return
        key = tuple(moved)
        held = self._held.get(key)
        if held is None:  # recomputed only after a settlement changed who holds what
            held = self._held[key] = np.flatnonzero(
                (self.coll[:n, moved] != 0).any(axis=1) | (self.debt[:n, moved] != 0).any(axis=1)
            )
        if held.size == 0:
            return
        # Every row holds a moved asset (a whole-market price pack): slices are views, while
        # indexing by ``held`` would copy both matrices at every instant.
        every = held.size == n and held[-1] == n - 1
        rows = slice(0, n) if every else held
        with np.errstate(invalid="ignore", divide="ignore"):
            p_vec = np.nan_to_num(self.pvec, nan=0.0)
            coll = self.coll[rows] @ p_vec
            debt = self.debt[rows] @ p_vec
            health = np.where(debt > 0, (coll - debt) / debt * 100.0, np.nan)
        zone = self.zone_code[rows]
        inside = (health >= self._safe_lo[zone]) & (health <= self._safe_hi[zone])
        no_debt = (zone == ZONE_CODE["no_debt"]) & np.isnan(health)
        check = ~(inside | no_debt) & ~self._unpriced(held)
        t = group[0].t_us
        ref = ",".join(p.asset for p in group)
        for r in held[check]:
            self._evaluate(
                self.accounts[r], t, "price", ref, out, observe_zone=True, only_change=True
            )

    def _unpriced(self, rows: np.ndarray) -> np.ndarray:
        """True for rows that hold an asset without any price yet."""
        missing = np.isnan(self.pvec)
        if not missing.any():
            return np.zeros(rows.size, dtype=bool)
        hold = (self.coll[rows][:, missing] != 0) | (self.debt[rows][:, missing] != 0)
        return hold.any(axis=1)

    # ------------------------------------------------------------------ valuation

    def _evaluate(
        self,
        account: str,
        t: int,
        trigger: str,
        ref: str,
        out: MarginOutput,
        *,
        observe_zone: bool,
        only_change: bool = False,
        prices: dict[str, Decimal] | None = None,
        statuses: dict[str, str] | None = None,
    ) -> None:
        """Values ``account`` at ``prices``/``statuses`` (default: the latest ones)."""
        prices = self.prices if prices is None else prices
        statuses = self.status if statuses is None else statuses
        book = self.books[account]
        held = (*book.collateral, *book.debt)
        if any(a not in prices for a in held):
            return  # never priced: nothing to value yet (the next price of it revalues)
        coll_usd, debt_usd = book.value_priced(prices)
        health = health_of(coll_usd, debt_usd)
        status = max((statuses.get(a, "ok") for a in held), key=STATUS_RANK.get, default="ok")
        state = self.states[account]
        before = state.zone
        events: list[MarginEventRow] = []
        if observe_zone:
            events = [
                e.model_copy(update={"health_score": _q(e.health_score)})
                for e in observe(account, state, health, status, _dt(t), self.config.detector)
            ]
            self.zone_code[self.row_of[account]] = ZONE_CODE[state.zone]
        if only_change and state.zone == before:
            return
        out.health.append(
            (
                t,
                self._health_row(
                    account,
                    t,
                    trigger,
                    ref,
                    book,
                    coll_usd,
                    debt_usd,
                    health,
                    state.zone,
                    status,
                    prices,
                ),
            )
        )
        for e in events:
            out.events.append((t, e))
            if e.alerted:
                out.alerts.append(
                    (
                        t,
                        MarginAlert(
                            alert_id=e.alert_id,
                            account_id=account,
                            event_type=e.event_type,
                            zone=e.zone,
                            previous_zone=e.previous_zone,
                            health_score=e.health_score,
                            collateral_usd=_q(coll_usd),
                            borrow_usd=_q(debt_usd),
                            price_status=status,
                            event_ts=e.event_ts,
                        ),
                    )
                )

    def _health_row(
        self, account, t, trigger, ref, book, coll_usd, debt_usd, health, zone, status, prices
    ) -> MarginHealthRow | dict:
        # The hot path of a backfill (millions of rows): the amounts are the engine's own checked
        # Decimals, so rows are built without re-validation (a test checks that they equal
        # validated ones), and as plain dicts (``model_dump``'s) when ``dict_rows``.
        liq = []
        if debt_usd > 0:
            at_liq, at_call = self._factors
            for asset, qty in sorted(book.collateral.items()):
                # in _CTX (50 digits), by its methods: no context switch per row
                other = max(_CTX.subtract(coll_usd, _CTX.multiply(qty, prices[asset])), _ZERO)
                liq.append(
                    {
                        "asset": asset,
                        "liquidation_price": _q(
                            reachable(price_at_factor(qty, debt_usd, other, at_liq))
                        ),
                        "margin_call_price": _q(
                            reachable(price_at_factor(qty, debt_usd, other, at_call))
                        ),
                    }
                )
        row = {
            "row_id": deterministic_id("margin_health", account, t, trigger, ref),
            "account_id": account,
            "event_ts": _dt(t),
            "trigger": trigger,
            "collateral_usd": _q(coll_usd),
            "borrow_usd": _q(debt_usd),
            "health_score": _q(health),
            "zone": zone,
            "liquidation_prices": liq,
            "price_status": status,
        }
        if self.dict_rows:
            return row
        row["liquidation_prices"] = [construct(LiquidationPrice, x) for x in liq]
        return construct(MarginHealthRow, row)

    def _snapshots_before(self, t: int, out: MarginOutput, inclusive: bool) -> None:
        step = self.config.snapshot_s * MICROS
        if not step:
            return
        if self.next_snapshot_us is None:
            self.next_snapshot_us = t - t % step + step
            return
        while self.next_snapshot_us < t or (inclusive and self.next_snapshot_us == t):
            at = self.next_snapshot_us
            for account, book in sorted(self.books.items()):
                if book.debt:
                    self._evaluate(account, at, "snapshot", "", out, observe_zone=False)
            self.next_snapshot_us += step

    # ------------------------------------------------------------------ arrays

    def _col(self, asset: str) -> int:
        j = self.asset_col.get(asset)
        if j is None:
            j = self.asset_col[asset] = len(self.asset_col)
            rows = self.coll.shape[0]
            self.coll = np.hstack([self.coll, np.zeros((rows, 1))])
            self.debt = np.hstack([self.debt, np.zeros((rows, 1))])
            self.pvec = np.append(self.pvec, np.nan)
        return j

    def _new_row(self, account: str) -> None:
        if self.free:
            r = self.free.pop()
            self.accounts[r] = account
        else:
            r = len(self.accounts)
            self.accounts.append(account)
            if r >= self.coll.shape[0]:
                grow = max(16, self.coll.shape[0])  # amortised doubling
                cols = self.coll.shape[1]
                self.coll = np.vstack([self.coll, np.zeros((grow, cols))])
                self.debt = np.vstack([self.debt, np.zeros((grow, cols))])
                self.zone_code = np.concatenate([self.zone_code, np.zeros(grow, dtype=np.int8)])
        self.row_of[account] = r
        self.zone_code[r] = ZONE_CODE["no_debt"]

    def _sync_row(self, account: str, asset: str) -> None:
        j = self._col(asset)
        r = self.row_of[account]
        book = self.books[account]
        self._held.clear()
        self.coll[r, j] = float(book.collateral.get(asset, 0))
        self.debt[r, j] = float(book.debt.get(asset, 0))

    def _drop(self, account: str) -> None:
        r = self.row_of.pop(account)
        self._held.clear()
        self.coll[r] = 0.0
        self.debt[r] = 0.0
        self.zone_code[r] = 0
        self.accounts[r] = None
        self.free.append(r)
        self.books.pop(account, None)
        self.states.pop(account, None)
        self.closed_at.pop(account, None)


_NINE = Decimal("1e-9")
_ZERO = Decimal(0)


def _q(x: Decimal | None) -> Decimal | None:
    """Nine decimal places: what BigQuery NUMERIC and the Parquet decimal128(38, 9) hold."""
    return None if x is None else x.quantize(_NINE, context=_CTX)


def _health_range(c_lo, c_hi, d_lo, d_hi):
    """Lowest and highest health (c - d) / d x 100 with collateral value in [c_lo, c_hi] and debt
    value in [d_lo, d_hi] (d_lo > 0): floats or arrays."""
    return (c_lo - d_hi) / d_hi * 100.0, (c_hi - d_lo) / d_lo * 100.0


def _instant_groups(
    accepted: list[tuple[int, Settlement]],
) -> list[tuple[tuple[int, str], list[Settlement]]]:
    """((time, account), its settlements in chain order) for each account and instant."""
    groups: dict[tuple[int, str], list[Settlement]] = {}
    for t, s in accepted:
        groups.setdefault((t, s.account_id), []).append(s)
    for group in groups.values():
        group.sort(key=settlement_order)
    return sorted(groups.items(), key=lambda g: g[0])


def _instants(ticks: list[PriceTick], until_us: int) -> list[tuple[int, list[PriceTick]]]:
    """The ticks at or before ``until_us`` grouped by instant, in time order, each group in asset
    order."""
    by_t: dict[int, list[PriceTick]] = {}
    for p in ticks:
        if p.t_us <= until_us:
            by_t.setdefault(p.t_us, []).append(p)
    return [(t, sorted(by_t[t], key=lambda p: p.asset)) for t in sorted(by_t)]


@dataclass
class _Screen:
    """Per account (rows) and instant (columns): float health (nan without debt), and eligible
    (holds an asset that moved, and none never priced)."""

    health: np.ndarray
    eligible: np.ndarray

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.health[i], self.eligible[i]


@dataclass
class TickColumns:
    """Price ticks as columns (no object per tick): ``advance_batch``'s input in the backfill.
    ``price_f`` is the float price (nan: unavailable); the Decimal price of tick ``i`` comes from
    ``nano`` (int64 units of 1e-9, the prices table's decimal128(38, 9)) or ``decimals``."""

    t_us: np.ndarray  # int64
    asset: np.ndarray  # str objects
    status: np.ndarray  # str objects
    price_f: np.ndarray  # float64
    nano: np.ndarray | None = None
    decimals: list[Decimal | None] | None = None

    @classmethod
    def from_ticks(cls, ticks: list[PriceTick]) -> TickColumns:
        return cls(
            np.array([p.t_us for p in ticks], dtype=np.int64),
            np.array([p.asset for p in ticks], dtype=object),
            np.array([p.status for p in ticks], dtype=object),
            np.array([np.nan if p.price is None else float(p.price) for p in ticks]),
            decimals=[p.price for p in ticks],
        )

    def price(self, i: int) -> Decimal | None:
        if self.decimals is not None:
            return self.decimals[i]
        return None if np.isnan(self.price_f[i]) else Decimal(int(self.nano[i])).scaleb(-9)

    def ticks_after(self, until_us: int) -> list[PriceTick]:
        return [
            PriceTick(str(self.asset[i]), int(self.t_us[i]), self.price(i), str(self.status[i]))
            for i in np.flatnonzero(self.t_us > until_us)
        ]


class _PricesAt(Mapping):
    """The Decimal prices after instant ``k`` of a tape, made per asset when looked up: an
    evaluation reads the few assets its account holds, not all of them."""

    def __init__(self, tape: _PriceTape, k: int):
        self._tape, self._row = tape, tape._last_good[k]
        self._start = tape._start[0]

    def __getitem__(self, asset: str) -> Decimal:
        j = self._tape._col_of.get(asset)
        pos = -1 if j is None else int(self._row[j])
        if pos < 0:
            return self._start[asset]  # KeyError: never priced
        return self._tape._decimal(pos)

    def __contains__(self, asset: object) -> bool:
        j = self._tape._col_of.get(asset)
        return (j is not None and self._row[j] >= 0) or asset in self._start

    def __iter__(self):
        return iter(
            set(self._start)
            | {self._tape._name[j] for j in np.flatnonzero(self._row >= 0).tolist()}
        )

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _PriceTape:
    """A batch's price instants as ``advance`` would see them one after the other (its
    ``_apply_prices`` per instant, as arrays): times, refs, the float price matrix, the moved
    columns, and the Decimal prices and statuses after each instant (index -1: before the batch,
    built when asked). Laying it out moves the engine's prices to the batch's end."""

    def __init__(self, engine: MarginShardEngine, ticks: TickColumns, until_us: int, out):
        keep = np.flatnonzero(ticks.t_us <= until_us)
        names, code = np.unique(ticks.asset[keep].astype(str), return_inverse=True)
        order = np.lexsort((code, ticks.t_us[keep]))  # by time, then asset (as advance sorts)
        self._ticks, self._idx = ticks, keep[order]
        t, code = ticks.t_us[self._idx], code[order]
        col_of = np.array([engine._col(str(n)) for n in names], dtype=np.int64)
        cols = col_of[code] if len(names) else np.zeros(0, dtype=np.int64)
        width = len(engine.asset_col)
        # Within the batch an asset's ticks come in time order, so a tick is stale only against
        # the asset's price time before the batch.
        since = np.array([engine.price_us.get(str(n), -1) for n in names], dtype=np.int64)
        fresh = t >= (since[code] if len(names) else t)
        out.stale_prices += int((~fresh).sum())
        instants, inst = np.unique(t, return_inverse=True)
        self.t: list[int] = instants.tolist()
        self.size = size = len(self.t)
        self._ref_bounds = (
            np.searchsorted(t, instants, side="left"),
            np.searchsorted(t, instants, side="right"),
        )
        self._sorted_assets = names[code] if len(names) else np.zeros(0, dtype=object)
        self.moved = np.zeros((size, width), dtype=bool)
        self.moved[inst[fresh], cols[fresh]] = True
        good = fresh & ~np.isnan(ticks.price_f[self._idx])
        self._last_good = _last_index(inst, cols, good, size, width)
        self._last_any = _last_index(inst, cols, fresh, size, width)
        start = np.full(width, np.nan)
        start[: engine.pvec.size] = engine.pvec
        self.price = np.where(
            self._last_good >= 0, ticks.price_f[self._idx][np.maximum(self._last_good, 0)], start
        )
        self._name = {j: a for a, j in engine.asset_col.items()}
        self._col_of = dict(engine.asset_col)
        self._start = (dict(engine.prices), dict(engine.status))
        self._dec: dict[int, Decimal] = {}
        self._prices: dict[int, _PricesAt] = {}
        self._statuses: dict[int, dict[str, str]] = {}
        self._refs: dict[int, str] = {}
        # assets x instants, as floats: the screen multiplies positions with them
        self.valued_t = np.ascontiguousarray(np.nan_to_num(self.price, nan=0.0).T)
        self.moved_t = np.ascontiguousarray(self.moved.T, dtype=np.float64)
        self.unpriced_t = np.ascontiguousarray(np.isnan(self.price).T, dtype=np.float64)
        # each asset's lowest and highest float price of the batch (0 while unpriced)
        self.low = self.valued_t.min(axis=1) if size else np.zeros(width)
        self.high = self.valued_t.max(axis=1) if size else np.zeros(width)
        if size:  # the engine's prices after the batch, as advance leaves them
            engine.prices, engine.status = (
                dict(self.prices(size - 1)),
                dict(self.statuses(size - 1)),
            )
            for j in np.flatnonzero(self._last_any[-1] >= 0):
                engine.price_us[self._name[j]] = int(t[self._last_any[-1, j]])
            engine.pvec = self.price[-1].copy()

    def _decimal(self, pos: int) -> Decimal:
        d = self._dec.get(pos)
        if d is None:
            d = self._dec[pos] = self._ticks.price(int(self._idx[pos]))
        return d

    def prices(self, k: int) -> Mapping[str, Decimal]:
        if k < 0:
            return self._start[0]
        d = self._prices.get(k)
        if d is None:
            d = self._prices[k] = _PricesAt(self, k)
            if k == self.size - 1:  # the batch's end: every snapshot reads it, a dict is faster
                d = self._prices[k] = dict(d)
        return d

    def statuses(self, k: int) -> dict[str, str]:
        if k < 0:
            return self._start[1]
        d = self._statuses.get(k)
        if d is None:
            d = dict(self._start[1])
            row, status = self._last_any[k], self._ticks.status
            for j in np.flatnonzero(row >= 0).tolist():
                d[self._name[j]] = str(status[self._idx[row[j]]])
            self._statuses[k] = d
        return d

    def ref(self, k: int) -> str:
        """The assets priced at instant k, stale ticks included (``advance``'s ref)."""
        r = self._refs.get(k)
        if r is None:
            lo, hi = self._ref_bounds[0][k], self._ref_bounds[1][k]
            r = self._refs[k] = ",".join(str(a) for a in self._sorted_assets[lo:hi])
        return r

    def index_at(self, t: int) -> int:
        """Index of the last instant at or before ``t`` (-1: none)."""
        return bisect_right(self.t, t) - 1

    def screen(self, coll, debt, k0: int = 0, k1: int | None = None) -> _Screen:
        """The float screen of accounts with positions ``coll``/``debt`` (rows x assets) held
        over instants [k0, k1): ``_on_prices``'s valuation for all of them at once."""
        k1 = self.size if k1 is None else k1
        width = self.valued_t.shape[0]
        holds = (coll[:, :width] != 0) | (debt[:, :width] != 0)
        cols = np.flatnonzero(holds.any(axis=0))  # only the assets held: often 2 of 20
        coll, debt, holds = coll[:, cols], debt[:, cols], holds[:, cols].astype(np.float64)
        valued = self.valued_t[cols, k0:k1]
        c, d = coll @ valued, debt @ valued
        health = np.full(d.shape, np.nan)
        np.divide(c - d, d, out=health, where=d > 0)  # no debt: no health (nan)
        health *= 100.0
        eligible = (holds @ self.moved_t[cols, k0:k1] > 0) & ~(
            holds @ self.unpriced_t[cols, k0:k1] > 0
        )
        return _Screen(health, eligible)


def _last_index(inst: np.ndarray, cols: np.ndarray, mask: np.ndarray, size: int, width: int):
    """instants x columns: the position of the last masked tick of each column at or before each
    instant (-1: none). Positions increase with time, so a running maximum carries them."""
    last = np.full((size, width), -1, dtype=np.int64)
    pos = np.flatnonzero(mask)
    np.maximum.at(last, (inst[pos], cols[pos]), pos)  # unbuffered: repeated cells keep the max
    return np.maximum.accumulate(last, axis=0) if size else last
