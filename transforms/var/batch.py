"""The VaR engine fed a day at a time, for the backfill (pure, no Beam): ``var_day`` advances a
shard's ``VarShardEngine`` through one day of settlements and closes, taking its results as
columns, and ``var_table`` writes them as ``portfolio_var`` rows with the streaming rows' ids and
rounding, so a backfilled day and a streamed day compare row for row.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codegen import arrow_schema
from schemas.events import Settlement
from schemas.tables import (
    PortfolioVarRow,
)
from transforms.common.columns import day_bounds_us
from transforms.var.engine import Close, VarColumns, VarConfig, VarShardEngine, var_id

VAR_SCHEMA = arrow_schema(PortfolioVarRow)


def var_table(cols: list[VarColumns], cfg: VarConfig) -> pa.Table:
    """``portfolio_var`` rows of one or more valuations, with the streaming rows' ids and
    rounding (6 decimals through the shortest float repr, as ``_row`` does)."""
    if not cols:
        return VAR_SCHEMA.empty_table()
    ids, accounts, as_of, methods, value, var, es, n_scen, n_pos, start = ([] for _ in range(10))
    for c in cols:
        exp_sum = np.round(c.exposure.sum(axis=1), 6)
        npos = np.count_nonzero(c.exposure, axis=1)
        for method, (v, x) in c.results.items():
            ids += [var_id(a, c.end_us, method, cfg) for a in c.accounts]
            accounts += c.accounts
            methods += [method] * len(c.accounts)
            as_of += [c.end_us] * len(c.accounts)
            start += [c.window_start_us] * len(c.accounts)
            n_scen += [c.n_scenarios] * len(c.accounts)
            n_pos.append(npos)
            value.append(exp_sum)
            var.append(np.round(np.asarray(v, dtype=np.float64), 6))
            es.append(np.round(np.asarray(x, dtype=np.float64), 6))

    def dec(parts: list[np.ndarray]) -> pa.Array:
        # float -> shortest repr text -> decimal: the digits Decimal(repr(round(x, 6))) has
        text = pc.cast(pa.array(np.concatenate(parts)), pa.string())
        return pc.cast(text, pa.decimal128(38, 9))

    n = len(ids)
    return pa.table(
        {
            "var_id": ids,
            "account_id": accounts,
            "as_of": pa.array(as_of, pa.timestamp("us", tz="UTC")),
            "method": methods,
            "level": [cfg.level] * n,
            "horizon_days": [cfg.horizon_days] * n,
            "portfolio_value_usd": dec(value),
            "var_usd": dec(var),
            "es_usd": dec(es),
            "n_scenarios": pa.array(n_scen, pa.int64()),
            "n_positions": pa.array(np.concatenate(n_pos).astype(np.int64)),
            "window_start": pa.array(start, pa.timestamp("us", tz="UTC")),
            "window_end": pa.array(as_of, pa.timestamp("us", tz="UTC")),
        },
        schema=VAR_SCHEMA,
    )


def var_day(
    engine: VarShardEngine, settlements: list[Settlement], closes: dict[str, float], day: date
) -> tuple[list[VarColumns], list]:
    """Advances a shard's engine through one day; returns the valuations and rejections."""
    _, end = day_bounds_us(day)
    close_list = [Close(a, end, p) for a, p in sorted(closes.items())]
    engine.emit_columns = True
    cols, rejected, later_s, later_c = engine.advance(settlements, close_list, end)
    if later_s or later_c:
        raise ValueError(f"{day}: settlements or closes after the day's end were passed in")
    return cols, rejected


def previous_day(day: date) -> date:
    return day - timedelta(days=1)
