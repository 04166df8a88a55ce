"""The portfolio VaR engine of one shard of accounts (pure, no Beam).

It replays a shard's events in event-time order, bucket by bucket (a day by default, an hour
when intraday returns are configured):

- settlements update each account's ``PositionBook`` (idempotent by event id);
- each asset's close of the bucket (the last composite price in it) extends its history, kept to
  the window plus one close;
- at the end of each bucket, every open account is valued at the closes and its VaR and ES are
  computed for every configured method from the joint returns of the window, all accounts of the
  shard at once (exposures @ scenario returns, one matrix product).

Horizon: the functions of ``measures`` get the horizon in buckets (1 for a daily 1-day VaR,
24 for an hourly one): the normal methods scale the mean by h and the volatility by sqrt(h); the
historical methods scale the one-bucket figure by sqrt(h), an approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from schemas.base import deterministic_id
from schemas.events import Settlement
from schemas.tables import PortfolioVarRow
from schemas.types import NUMERIC_LIMIT
from transforms.common.positions import (
    Outcome,
    PositionBook,
    exposure_matrix,
    settlement_order,
)
from transforms.var import measures

MICROS = 1_000_000
METHODS = ("historical", "parametric", "filtered_historical", "monte_carlo")


@dataclass(frozen=True)
class VarConfig:
    methods: tuple[str, ...] = ("historical", "parametric")
    level: float = 0.99
    es_level: float = 0.975
    horizon_days: int = 1
    window: int = 730  # returns per scenario set
    min_scenarios: int = 30  # fewer joint returns than this: no VaR yet
    bucket_s: int = 86_400

    def __post_init__(self):
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"VaR methods must be among {METHODS}, got {self.methods}")
        if not 0 < self.level < 1 or not 0 < self.es_level < 1:
            raise ValueError("VaR and ES levels must lie strictly between 0 and 1")
        if self.horizon_days < 1 or self.window < 2 or self.min_scenarios < 2 or self.bucket_s <= 0:
            raise ValueError("horizon_days >= 1, window >= 2, min_scenarios >= 2, bucket_s > 0")

    @property
    def horizon_buckets(self) -> int:
        """The horizon in buckets: 1 for a daily 1-day VaR, 24 for an hourly one."""
        buckets, rest = divmod(self.horizon_days * 86_400, self.bucket_s)
        if rest:
            raise ValueError(
                f"a {self.horizon_days}-day horizon is not a whole number of {self.bucket_s} s buckets"
            )
        return buckets


@dataclass(frozen=True)
class Close:
    asset: str
    bucket_end_us: int
    price: float


@dataclass(frozen=True)
class Rejected:
    settlement: Settlement
    outcome: Outcome


@dataclass
class VarShardEngine:
    config: VarConfig = field(default_factory=VarConfig)
    books: dict[str, PositionBook] = field(default_factory=dict)
    closes: dict[str, dict[int, float]] = field(default_factory=dict)
    next_end_us: int | None = None  # end of the first bucket not yet valued
    emit_columns: bool = False  # backfill: ``advance`` returns VarColumns, not row models
    # Valuations no NUMERIC column can hold (absurd closes): not rows, but dead letters; the
    # caller drains the list after each ``advance``.
    unrepresentable: list[dict] = field(default_factory=list)

    def bucket_end(self, t_us: int) -> int:
        b = self.config.bucket_s * MICROS
        return t_us - t_us % b + b

    def advance(self, settlements: list[Settlement], closes: list[Close], until_us: int):
        """Values every bucket that ends at or before ``until_us``.

        Returns (rows, rejected settlements, settlements kept for later, closes kept for later).
        """
        b = self.config.bucket_s * MICROS
        t = {id(s): int(s.event_time.timestamp() * MICROS) for s in settlements}
        now_s = sorted(
            (s for s in settlements if self.bucket_end(t[id(s)]) <= until_us),
            key=lambda s: (t[id(s)], settlement_order(s)),
        )
        later_s = [s for s in settlements if self.bucket_end(t[id(s)]) > until_us]
        now_c = [c for c in closes if c.bucket_end_us <= until_us]
        later_c = [c for c in closes if c.bucket_end_us > until_us]
        firsts = [self.bucket_end(t[id(s)]) for s in now_s] + [c.bucket_end_us for c in now_c]
        end = (
            self.next_end_us if self.next_end_us is not None else (min(firsts) if firsts else None)
        )
        rows: list[PortfolioVarRow] = []
        rejected: list[Rejected] = []
        if end is None:
            return rows, rejected, later_s, later_c
        by_end_c: dict[int, list[Close]] = {}
        for c in now_c:
            by_end_c.setdefault(c.bucket_end_us, []).append(c)
        i = 0
        while end <= until_us:
            while i < len(now_s) and t[id(now_s[i])] < end:
                s = now_s[i]
                book = self.books.setdefault(s.account_id, PositionBook(s.account_id))
                outcome = book.apply(s)
                if not outcome.applied:
                    rejected.append(Rejected(s, outcome))
                i += 1
            for c in by_end_c.get(end, ()):
                self._add_close(c)
            if self.emit_columns:
                cols = self.value_columns(end)
                if cols is not None:
                    rows.append(cols)
            else:
                rows.extend(self._value(end))
            end += b
        # settlements stamped before the first valued bucket (late) are still applied in order
        for s in now_s[i:]:
            outcome = self.books.setdefault(s.account_id, PositionBook(s.account_id)).apply(s)
            if not outcome.applied:
                rejected.append(Rejected(s, outcome))
        self.next_end_us = end
        self.books = {a: bk for a, bk in self.books.items() if not bk.is_closed()}
        return rows, rejected, later_s, later_c

    def _add_close(self, c: Close) -> None:
        history = self.closes.setdefault(c.asset, {})
        history[c.bucket_end_us] = c.price
        if len(history) > self.config.window + 1:
            for k in sorted(history)[: len(history) - self.config.window - 1]:
                del history[k]

    def _value(self, end: int) -> list[PortfolioVarRow]:
        cols = self.value_columns(end)
        return [] if cols is None else rows_of(cols, self.config, self.unrepresentable)

    def value_columns(self, end: int) -> VarColumns | None:
        """Every open account's VaR and ES at ``end``, for every method, as arrays (None when
        there is nothing to value). The streaming path turns them into rows (``rows_of``); the
        backfill writes them as columns, so both compute the same numbers the same way."""
        books = [bk for bk in self.books.values() if not bk.is_closed()]
        if not books:
            return None
        held = sorted({a for bk in books for a in (*bk.collateral, *bk.debt)})
        if any(a not in self.closes or end not in self.closes[a] for a in held):
            return None  # an asset without a close at this bucket: no valuation (counted upstream)
        common = sorted(set.intersection(*(set(self.closes[a]) for a in held)))
        common = common[-(self.config.window + 1) :]
        if len(common) - 1 < self.config.min_scenarios:
            return None
        levels = np.array([[self.closes[a][k] for a in held] for k in common])
        returns = levels[1:] / levels[:-1] - 1.0
        prices = {a: self.closes[a][end] for a in held}
        exposure = exposure_matrix(books, held, prices)
        results = {m: _var_es(m, returns, exposure, self.config) for m in self.config.methods}
        return VarColumns(
            end_us=end,
            window_start_us=common[1],
            accounts=[bk.account_id for bk in books],
            exposure=exposure,
            n_scenarios=returns.shape[0],
            results=results,
        )


@dataclass(frozen=True)
class VarColumns:
    """One bucket's valuation of a shard: per method, VaR and ES per account (in book order)."""

    end_us: int
    window_start_us: int
    accounts: list[str]
    exposure: np.ndarray  # accounts x held assets, USD
    n_scenarios: int
    results: dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (var, es)


def rows_of(
    cols: VarColumns, cfg: VarConfig, unrepresentable: list[dict] | None = None
) -> list[PortfolioVarRow]:
    """The rows of a valuation; one whose numbers are not finite or beyond NUMERIC goes to
    ``unrepresentable`` instead (a row that fails its schema would stop the stage)."""
    out = []
    for method, (var, es) in cols.results.items():
        for account, e, v, x in zip(cols.accounts, cols.exposure, var, es, strict=True):
            value = float(e.sum())
            if not all(math.isfinite(n) and abs(n) < _NUMERIC_FLOAT for n in (value, v, x)):
                if unrepresentable is not None:
                    unrepresentable.append(
                        {"account_id": account, "as_of_us": cols.end_us, "method": method,
                         "portfolio_value_usd": value, "var_usd": float(v), "es_usd": float(x)}
                    )  # fmt: skip
                continue
            out.append(
                _row(
                    account,
                    cols.end_us,
                    method,
                    cfg,
                    e,
                    v,
                    x,
                    cols.n_scenarios,
                    cols.window_start_us,
                )  # fmt: skip
            )
    return out


_NUMERIC_FLOAT = float(NUMERIC_LIMIT) / 10  # margin for the 6-decimal rounding of _row


def _var_es(
    method: str, returns: np.ndarray, exposure: np.ndarray, cfg: VarConfig
) -> tuple[np.ndarray, np.ndarray]:
    """VaR at cfg.level and ES at cfg.es_level in USD (positive losses), one per portfolio."""
    h = cfg.horizon_buckets
    if method == "historical":
        var = measures.historical_var(returns, cfg.level, weights=exposure, horizon_days=h)
        es = measures.historical_es(returns, cfg.es_level, weights=exposure, horizon_days=h)
    elif method == "parametric":
        var = measures.parametric_var(returns, weights=exposure, level=cfg.level, horizon_days=h)
        es = measures.parametric_es(returns, weights=exposure, level=cfg.es_level, horizon_days=h)
    elif method == "filtered_historical":
        var = measures.filtered_historical_var(
            returns, level=cfg.level, weights=exposure, horizon_days=h
        )
        es = measures.filtered_historical_es(
            returns, level=cfg.es_level, weights=exposure, horizon_days=h
        )
    elif method == "monte_carlo":
        var = measures.monte_carlo_var(
            returns, exposure, level=cfg.level, n=20_000, seed=0, horizon_days=h
        )
        es = measures.parametric_es(returns, weights=exposure, level=cfg.es_level, horizon_days=h)
    else:
        raise ValueError(method)
    return np.atleast_1d(var), np.atleast_1d(es)


def var_id(account: str, end_us: int, method: str, cfg: VarConfig) -> str:
    return deterministic_id("portfolio_var", account, end_us, method, cfg.level, cfg.horizon_days)


def _row(account, end, method, cfg, exposure, var, es, n, window_start_us) -> PortfolioVarRow:
    as_of = _dt(end)
    return PortfolioVarRow(
        var_id=var_id(account, end, method, cfg),
        account_id=account,
        as_of=as_of,
        method=method,
        level=cfg.level,
        horizon_days=cfg.horizon_days,
        portfolio_value_usd=Decimal(repr(round(float(exposure.sum()), 6))),
        var_usd=Decimal(repr(round(float(var), 6))),
        es_usd=Decimal(repr(round(float(es), 6))),
        n_scenarios=n,
        n_positions=int(np.count_nonzero(exposure)),
        window_start=_dt(window_start_us),
        window_end=as_of,
    )


def _dt(us: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / MICROS, tz=UTC)
