"""``defi-risk backtest var``: rolling VaR of one asset against its realised daily returns.

    defi-risk backtest var --prices tests/data/prices/bitstamp_BTC_ETH_LTC_USD_daily.csv \\
        --asset BTC --level 0.99 --window 250 --method historical --out out/backtest

Returns are simple close-to-close returns, in file order after sorting by date (a gap in the file
makes one "daily" return span the gap). The VaR for day t comes from the ``window`` returns
before t, never from t itself; an exception is a day whose loss −r_t exceeds that VaR.

Statistics: the exception count, Kupiec POF and Christoffersen tests cover every tested day; the
Basel traffic light covers the last 250 tested days (fewer if the test is shorter, with the zone
boundaries re-derived from the binomial CDF for that many days). One ``var_backtests`` row is
written to OUT/tables/var_backtests/part-0.parquet (replaced); its ``traffic_light`` is that
last-250-day zone, as a regulator reads it, while its other statistics cover every tested day.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

# numpy, pandas, scipy and pydantic are imported inside the functions: `defi-risk` builds this
# command's parser on every invocation, and that must stay cheap.
if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from schemas.tables import VarBacktestRow
    from transforms.var.backtests import ChristoffersenResult, KupiecResult

TABLE = "var_backtests"
BASEL_DAYS = 250
METHODS = ("historical", "parametric", "filtered_historical")


def var_function(method: str) -> Callable[[np.ndarray, float], float]:
    """The 1-day VaR (positive loss) of a window of past returns (1-D) at a level."""
    from transforms.var import measures  # lazy: scipy and pydantic off the CLI's start-up

    return {
        "historical": lambda r, level: measures.historical_var(r, level),
        "parametric": lambda r, level: measures.parametric_var(r, level=level),
        "filtered_historical": lambda r, level: measures.filtered_historical_var(r, level),
    }[method]


class BacktestInputError(ValueError):
    """The prices file or the arguments cannot give a backtest."""


def load_closes(path: str | Path, asset: str) -> pd.Series:
    """Daily closes of ``asset``, ascending by UTC date, blanks (asset not yet listed) dropped.

    Accepts the Bitstamp-style wide CSV (date index, ``<ASSET>:close`` columns) and a simple
    ``date,close`` CSV (the asset is then only a label).
    """
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BacktestInputError(f"prices file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BacktestInputError(f"cannot read {path} as CSV: {exc}") from exc
    lower = {str(c).strip().lower(): c for c in frame.columns}
    wide = f"{asset.strip().lower()}:close"
    if wide in lower:
        close_col, date_col = lower[wide], frame.columns[0]
    elif "close" in lower and "date" in lower:
        close_col, date_col = lower["close"], lower["date"]
    else:
        assets = sorted(str(c).split(":")[0] for c in frame.columns if str(c).endswith(":close"))
        found = f"assets in the file: {', '.join(assets)}" if assets else "no <ASSET>:close columns"
        raise BacktestInputError(
            f"{path}: no column '{asset}:close' ({found}); expected a wide CSV with "
            f"<ASSET>:close columns or a simple CSV with date,close columns"
        )
    try:
        dates = pd.to_datetime(frame[date_col], utc=True)
    except (ValueError, TypeError) as exc:
        raise BacktestInputError(f"{path}: column '{date_col}' is not dates: {exc}") from exc
    closes = pd.to_numeric(frame[close_col], errors="coerce")
    bad = closes.isna() & frame[close_col].notna()
    if bad.any():
        raise BacktestInputError(
            f"{path}: {int(bad.sum())} non-numeric value(s) in '{close_col}', "
            f"first on {dates[bad].iloc[0].date()}"
        )
    series = pd.Series(closes.to_numpy(dtype=float), index=dates, name=str(close_col)).dropna()
    series = series.sort_index()
    if series.index.has_duplicates:
        dup = series.index[series.index.duplicated()][0]
        raise BacktestInputError(f"{path}: duplicate date {dup.date()} in '{close_col}'")
    if not np.isfinite(series.to_numpy()).all() or (series <= 0).any():
        raise BacktestInputError(f"{path}: '{close_col}' has non-positive or infinite prices")
    return series


@dataclass(frozen=True)
class BacktestResult:
    asset: str
    method: str
    level: float
    window: int
    dates: pd.DatetimeIndex  # the tested days
    returns: np.ndarray  # realised return on each tested day
    var: np.ndarray  # VaR forecast for each tested day (positive loss)
    exceptions: np.ndarray  # bool: loss > VaR
    kupiec: KupiecResult
    christoffersen: ChristoffersenResult
    last_days: int  # days in the traffic-light window
    last_exceptions: int
    traffic_light: str

    @property
    def n_obs(self) -> int:
        return int(self.exceptions.size)

    @property
    def n_exceptions(self) -> int:
        return int(self.exceptions.sum())


def run_backtest(
    closes: pd.Series, asset: str, level: float, window: int, method: str = "historical"
) -> BacktestResult:
    """Roll ``method`` over the returns of ``closes`` and test the exceptions."""
    import numpy as np

    from transforms.var import (  # lazy: scipy and pydantic off the CLI's start-up
        backtests,
        measures,
    )

    if method not in METHODS:
        raise BacktestInputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        p = float(measures.tail_probability(level))
    except ValueError as exc:
        raise BacktestInputError(str(exc)) from exc
    if window < 2:
        raise BacktestInputError(f"--window must be >= 2 returns, got {window}")
    prices = closes.to_numpy(dtype=float)
    returns = prices[1:] / prices[:-1] - 1.0
    if returns.size < window + 2:
        raise BacktestInputError(
            f"too few prices for {asset}: {prices.size} closes give {returns.size} returns, "
            f"need at least window + 2 = {window + 2} returns (a window and 2 tested days)"
        )
    var_of = var_function(method)
    var = np.array([var_of(returns[t - window : t], level) for t in range(window, returns.size)])
    realised = returns[window:]
    exceptions = -realised > var
    last = exceptions[-BASEL_DAYS:]
    return BacktestResult(
        asset=asset,
        method=method,
        level=level,
        window=window,
        dates=closes.index[window + 1 :],
        returns=realised,
        var=var,
        exceptions=exceptions,
        kupiec=backtests.kupiec_pof(int(exceptions.sum()), exceptions.size, p),
        christoffersen=backtests.christoffersen(exceptions, p),
        last_days=int(last.size),
        last_exceptions=int(last.sum()),
        traffic_light=backtests.basel_traffic_light(int(last.sum()), n=last.size, p=p),
    )


def to_row(result: BacktestResult) -> VarBacktestRow:
    from schemas.base import deterministic_id  # lazy: scipy and pydantic off the CLI's start-up
    from schemas.tables import VarBacktestRow  # lazy: scipy and pydantic off the CLI's start-up

    as_of: datetime = result.dates[-1].to_pydatetime()
    return VarBacktestRow(
        backtest_id=deterministic_id(
            TABLE, result.asset, as_of, result.method, result.level, result.window, result.n_obs
        ),
        subject=result.asset,
        as_of=as_of,
        method=result.method,
        level=result.level,
        n_obs=result.n_obs,
        exceptions=result.n_exceptions,
        kupiec_lr=result.kupiec.lr,
        kupiec_pvalue=result.kupiec.pvalue,
        christoffersen_lr_ind=result.christoffersen.lr_ind,
        christoffersen_lr_cc=result.christoffersen.lr_cc,
        traffic_light=result.traffic_light,
    )


def write_rows(rows: list[VarBacktestRow], out_dir: str | Path) -> Path:
    """Write rows as OUT/tables/var_backtests/part-0.parquet (replaced) with the table's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.codegen import arrow_schema  # lazy: scipy and pydantic off the CLI's start-up
    from schemas.serde import to_row as serde_row  # lazy: scipy and pydantic off the CLI's start-up
    from schemas.tables import VarBacktestRow  # lazy: scipy and pydantic off the CLI's start-up

    path = Path(out_dir) / "tables" / TABLE / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([serde_row(r) for r in rows], schema=arrow_schema(VarBacktestRow))
    pq.write_table(table, path)
    return path


def report(result: BacktestResult, source: str | Path) -> str:
    from transforms.var.measures import (
        tail_probability,  # lazy: scipy and pydantic off the CLI's start-up
    )

    r = result
    ch = r.christoffersen
    expected = r.n_obs * float(tail_probability(r.level))
    return "\n".join(
        [
            f"backtest var: {r.asset} {r.method} VaR {r.level:g} (window {r.window} returns) "
            f"on {source}",
            f"  tested days      {r.n_obs:,} ({r.dates[0].date()} .. {r.dates[-1].date()})",
            f"  exceptions       {r.n_exceptions} (expected {expected:.1f}; "
            f"rate {r.n_exceptions / r.n_obs:.2%})",
            f"  Kupiec POF       LR {r.kupiec.lr:.6f}  p-value {r.kupiec.pvalue:.6f}",
            f"  Christoffersen   LR_ind {ch.lr_ind:.6f} (p {ch.pvalue_ind:.6f})  "
            f"LR_cc {ch.lr_cc:.6f} (p {ch.pvalue_cc:.6f})",
            f"  traffic light    {r.traffic_light} ({r.last_exceptions} "
            f"exception{'' if r.last_exceptions == 1 else 's'} in the last {r.last_days} days)",
        ]
    )


def add_backtest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prices",
        required=True,
        metavar="FILE",
        help="Daily prices CSV: wide (date index, <ASSET>:close columns) or simple date,close.",
    )
    p.add_argument("--asset", required=True, help="Asset symbol, e.g. BTC (column BTC:close).")
    p.add_argument("--level", type=float, default=0.99, help="VaR confidence level (default 0.99).")
    p.add_argument(
        "--window",
        type=int,
        default=250,
        help="Past returns behind each day's VaR (default 250).",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="historical",
        help="VaR model (default historical: inverted-CDF historical simulation).",
    )
    p.add_argument(
        "--out",
        default="out/backtest",
        help="Output directory for tables/var_backtests/part-0.parquet (default out/backtest).",
    )


def backtest_command(args: argparse.Namespace) -> int:
    """``defi-risk backtest var``: print the statistics, write the row; 2 on bad input."""
    try:
        closes = load_closes(args.prices, args.asset)
        result = run_backtest(closes, args.asset, args.level, args.window, args.method)
    except BacktestInputError as err:
        print(f"defi-risk backtest var: {err}", file=sys.stderr)
        return 2
    print(report(result, args.prices))
    path = write_rows([to_row(result)], args.out)
    print(f"wrote {path} (1 row)")
    return 0
