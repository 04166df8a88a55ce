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

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, localcontext

import numpy as np

from schemas.base import deterministic_id
from schemas.events import MarginAlert, Settlement
from schemas.tables import LiquidationPrice, MarginEventRow, MarginHealthRow
from schemas.types import epoch_micros
from transforms.margin_event_detector import AccountState, DetectorConfig, observe
from transforms.margin_health import _CTX, health_score, liquidation_price
from transforms.positions import Outcome, PositionBook

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


@dataclass(frozen=True)
class PriceTick:
    """A composite price of one asset at ``t_us`` (the window end); price None when unavailable."""

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
    health: list[tuple[int, MarginHealthRow]] = field(default_factory=list)  # (t_us, row)
    events: list[tuple[int, MarginEventRow]] = field(default_factory=list)
    alerts: list[tuple[int, MarginAlert]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    stale_prices: int = 0  # price ticks older than the asset's current price: ignored, counted


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us // MICROS, tz=UTC).replace(microsecond=us % MICROS)


class MarginShardEngine:
    def __init__(self, config: MarginConfig | None = None):
        self.config = config or MarginConfig()
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
        floor = self.processed_us
        lateness = self.config.allowed_lateness_s * MICROS
        events: list[tuple[int, int, str, object]] = []
        by_t: dict[int, list[PriceTick]] = {}
        for p in ticks:
            if p.t_us <= until_us:
                by_t.setdefault(p.t_us, []).append(p)
        for t, group in by_t.items():
            # every asset priced at one instant moves together: one revaluation per instant
            events.append((t, 0, "", sorted(group, key=lambda p: p.asset)))
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
            events.append((t, 1, s.event_id, s))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        for t, kind, _, item in events:
            self._snapshots_before(t, out, inclusive=False)
            if kind == 0:
                self._on_prices(item, out)
            else:
                self._on_settlement(item, t, out)
            self.processed_us = max(self.processed_us or t, t)
        self._snapshots_before(until_us, out, inclusive=True)
        self.processed_us = max(self.processed_us or until_us, until_us)
        return out, later_s, later_t

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

    def _on_settlement(self, s: Settlement, t: int, out: MarginOutput) -> None:
        book = self.books.get(s.account_id)
        if book is None:
            book = self.books[s.account_id] = PositionBook(s.account_id)
            self.states[s.account_id] = AccountState()
            self._new_row(s.account_id)
        outcome = book.apply(s)
        if not outcome.applied:
            out.rejected.append(Rejected(s, outcome))
            if book.is_closed() and not book.seen:
                self._drop(s.account_id)  # never opened: keep no state for it
            return
        self._sync_row(s.account_id, s.asset)
        if book.is_closed():
            self.closed_at[s.account_id] = t
        else:
            self.closed_at.pop(s.account_id, None)
        self._evaluate(s.account_id, t, "settlement", s.event_id, out, observe_zone=True)

    # ------------------------------------------------------------------ prices

    def _on_prices(self, group: list[PriceTick], out: MarginOutput) -> None:
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
        code = self._float_zone(health, debt)
        near = (np.abs(health[:, None] - self._thresholds[None, :]) < NEAR).any(axis=1)
        check = ((code != self.zone_code[rows]) | near) & ~self._unpriced(held)
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

    def _float_zone(self, health: np.ndarray, debt: np.ndarray) -> np.ndarray:
        liq, mc, warn = self._thresholds
        code = np.full(health.shape, ZONE_CODE["healthy"], dtype=np.int8)
        code[health < warn] = ZONE_CODE["warning"]
        code[health < mc] = ZONE_CODE["margin_call"]
        code[health < liq] = ZONE_CODE["liquidation"]
        code[~(debt > 0)] = ZONE_CODE["no_debt"]
        return code

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
    ) -> None:
        book = self.books[account]
        held = (*book.collateral, *book.debt)
        if any(a not in self.prices for a in held):
            return  # never priced: nothing to value yet (the next price of it revalues)
        coll_usd, debt_usd = book.value_usd(self.prices)
        health = health_score(coll_usd, debt_usd)
        status = max((self.status.get(a, "ok") for a in held), key=STATUS_RANK.get, default="ok")
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
                    account, t, trigger, ref, book, coll_usd, debt_usd, health, state.zone, status
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
        self, account, t, trigger, ref, book, coll_usd, debt_usd, health, zone, status
    ) -> MarginHealthRow:
        liq = []
        if debt_usd > 0:
            with localcontext(_CTX):
                for asset, qty in sorted(book.collateral.items()):
                    other = coll_usd - qty * self.prices[asset]
                    liq.append(
                        LiquidationPrice(
                            asset=asset,
                            liquidation_price=_q(liquidation_price(qty, debt_usd, max(other, 0))),
                            margin_call_price=_q(
                                liquidation_price(
                                    qty, debt_usd, max(other, 0), self.config.detector.margin_call
                                )
                            ),
                        )
                    )
        return MarginHealthRow(
            row_id=deterministic_id("margin_health", account, t, trigger, ref),
            account_id=account,
            event_ts=_dt(t),
            trigger=trigger,
            collateral_usd=_q(coll_usd),
            borrow_usd=_q(debt_usd),
            health_score=_q(health),
            zone=zone,
            liquidation_prices=liq,
            price_status=status,
        )

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


def _q(x: Decimal | None) -> Decimal | None:
    """Nine decimal places: what BigQuery NUMERIC and the Parquet decimal128(38, 9) hold."""
    if x is None:
        return None
    with localcontext(_CTX):
        return x.quantize(Decimal("1e-9"))
