"""The backfill against the independent numpy baseline (tests/benchmarks/backfill_baseline.py).

A tiny generated history, made less clean on purpose (an outage of every source, one across
midnight, a silent Pyth feed, a Chainlink feed 3 % off, redelivered rounds, a stale update, a
redelivered settlement), goes through ``defi-risk backfill`` and through the baseline; the prices
(per asset and minute) and the VaR rows (per account, day and method) must be the same.

VaR levels 0.8 / 0.75 instead of 0.99 / 0.975: with 5..10 scenarios, 0.99 and 0.975 both pick
the single worst loss, which would not tell the quantile and tail-mean rules apart; at 0.8 the
VaR is the 1st or 2nd worst loss (alpha * N whole at N = 5 and 10) and the ES tail is fractional.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.backfill import BackfillConfig, backfill
from pipelines.synthetic.bulk import generate_history
from tests.benchmarks.backfill_baseline import run_baseline

START, DAYS = date(2024, 1, 1), 20
END = date(2024, 1, 20)
VAR = {"var_window": 10, "min_scenarios": 5, "level": 0.8, "es_level": 0.75}
TS = pa.timestamp("us", tz="UTC")


def _at(day: str, hour: int) -> pa.Scalar:
    y, m, d = map(int, day.split("-"))
    return pa.scalar(datetime(y, m, d, hour, tzinfo=UTC), TS)


def _edit(root: Path, topic: str, day: str, fn) -> None:
    path = root / topic / f"date={day}" / "part-00000.parquet"
    table = pq.read_table(path)
    pq.write_table(fn(table).cast(table.schema), path)


def _between(t: pa.Table, asset: str, lo: pa.Scalar | None, hi: pa.Scalar | None, source=None):
    m = pc.equal(t["asset"], asset)
    if source:
        m = pc.and_(m, pc.equal(t["source"], source))
    if lo is not None:
        m = pc.and_(m, pc.greater_equal(t["publish_time"], lo))
    if hi is not None:
        m = pc.and_(m, pc.less(t["publish_time"], hi))
    return m


def _drop(asset, lo, hi, source=None):
    return lambda t: t.filter(pc.invert(_between(t, asset, lo, hi, source)))


def _redeliver_and_stale(t: pa.Table) -> pa.Table:
    rounds = t.filter(pc.equal(t["source"], "chainlink")).slice(0, 5)
    stale = t.filter(pc.equal(t["source"], "pyth")).slice(100, 1)
    late = pa.array([datetime(2024, 1, 10, 5, tzinfo=UTC)], TS)
    stale = stale.set_column(stale.schema.get_field_index("observed_at"), "observed_at", late)
    return pa.concat_tables([t, rounds, stale.cast(t.schema)])


def _chainlink_off(t: pa.Table) -> pa.Table:
    m = _between(t, "ETH", _at("2024-01-12", 8), _at("2024-01-12", 12), "chainlink")
    p = pc.cast(t["price"], pa.float64())
    off = pc.cast(pc.round(pc.if_else(m, pc.multiply(p, 1.03), p), 8), pa.decimal128(38, 9))
    return t.set_column(t.schema.get_field_index("price"), "price", off)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("baseline")
    clean, data = tmp / "clean", tmp / "in"
    generate_history(clean, start=START, days=DAYS, assets=3, accounts=30, seed=5)
    shutil.copytree(clean, data)
    prices = "market.prices.v1"
    _edit(data, prices, "2024-01-07", _drop("ETH", _at("2024-01-07", 10), _at("2024-01-07", 14)))
    _edit(data, prices, "2024-01-08",
          _drop("BTC", _at("2024-01-08", 3), _at("2024-01-08", 6), "pyth"))  # fmt: skip
    _edit(data, prices, "2024-01-10", _redeliver_and_stale)
    _edit(data, prices, "2024-01-12", _chainlink_off)
    _edit(data, prices, "2024-01-13", _drop("BTC", _at("2024-01-13", 23), None))
    _edit(data, prices, "2024-01-14", _drop("BTC", None, _at("2024-01-14", 1)))
    _edit(data, "settlements.v1", "2024-01-15", lambda t: pa.concat_tables([t, t.slice(0, 2)]))
    bf, bl = tmp / "backfill", tmp / "baseline"
    cfg = BackfillConfig(START, END, str(data), str(bf), workers=1, chunk_days=DAYS,
                         var_window=VAR["var_window"], var_min_scenarios=VAR["min_scenarios"],
                         var_level=VAR["level"], es_level=VAR["es_level"])  # fmt: skip
    backfill(cfg, say=lambda m: None)
    summary = run_baseline(data, bl, START, END, **VAR)
    return bf, bl, summary


def _read(root: Path, table: str) -> pd.DataFrame:
    parts = sorted((root / table).glob("date=*/part-*.parquet"))
    frames = [pq.read_table(p).to_pandas().assign(day=p.parent.name) for p in parts]
    return pd.concat(frames, ignore_index=True)


def test_prices_match(outputs):
    bf, bl, summary = outputs
    ours, theirs = _read(bl, "prices"), _read(bf, "prices")
    assert summary["price_rows"] == len(ours) == len(theirs)
    assert summary["invalid_updates"] == 1  # the stale update
    pd.testing.assert_series_equal(ours.groupby("day").size(), theirs.groupby("day").size())
    ours = ours.sort_values(["asset", "window_end"]).reset_index(drop=True)
    theirs = theirs.sort_values(["asset", "event_time"]).reset_index(drop=True)
    assert (ours["window_end"] == theirs["event_time"]).all()
    assert (ours["window_start"] == theirs["window_start"]).all()
    assert ours["status"].tolist() == theirs["status"].tolist()
    # the perturbations are there: outages, degraded windows
    assert set(ours["status"]) == {"ok", "degraded", "price_unavailable"}
    assert ours["sources"].tolist() == [",".join(s) for s in theirs["sources"]]
    theirs_price = theirs["price"].map(lambda d: np.nan if d is None else float(d)).to_numpy()
    np.testing.assert_array_equal(np.isnan(ours["price"]), np.isnan(theirs_price))
    np.testing.assert_allclose(ours["price"], theirs_price, rtol=1e-9, equal_nan=True)


def test_var_matches(outputs):
    bf, bl, summary = outputs
    keys = ["day", "account_id", "method"]
    ours = _read(bl, "portfolio_var").sort_values(keys).reset_index(drop=True)
    theirs = _read(bf, "portfolio_var").sort_values(keys).reset_index(drop=True)
    assert summary["var_rows"] == len(ours) == len(theirs) > 0
    pd.testing.assert_frame_equal(ours[keys], theirs[keys])
    assert (ours["as_of"] == theirs["as_of"]).all()
    assert (ours["n_scenarios"] == theirs["n_scenarios"]).all()
    assert (ours["n_positions"] == theirs["n_positions"]).all()
    assert (ours["window_start"] == theirs["window_start"]).all()
    for col in ("portfolio_value_usd", "var_usd", "es_usd"):
        # both sides round to 6 decimals: 1e-6 relative, or one unit of the 6th decimal
        np.testing.assert_allclose(
            ours[col], theirs[col].astype(float), rtol=1e-6, atol=1e-6, err_msg=col
        )


def test_linear_quantile_is_not_the_backfills(outputs, tmp_path):
    """The backfill's historical VaR is the inverted-CDF quantile (README, var_computation's
    default), not numpy's linear one: the baseline's ``hs_method="linear"`` differs."""
    bf, _, _ = outputs
    data = bf.parent / "in"
    run_baseline(data, tmp_path, START, END, hs_method="linear", **VAR)
    keys = ["day", "account_id", "method"]
    ours = _read(tmp_path, "portfolio_var").sort_values(keys).reset_index(drop=True)
    theirs = _read(bf, "portfolio_var").sort_values(keys).reset_index(drop=True)
    hs = (ours["method"] == "historical").to_numpy()
    diff = np.abs(ours["var_usd"].to_numpy() - theirs["var_usd"].astype(float).to_numpy())
    assert diff[hs].max() > 1.0
    assert diff[~hs].max() <= 1e-6
