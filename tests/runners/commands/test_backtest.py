"""``defi-risk backtest var`` on the real Bitstamp BTC history: printed statistics, the written row,
both CSV layouts and the input errors."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from runners.cli import main
from runners.commands import backtest
from schemas.codegen import arrow_schema
from schemas.tables import VarBacktestRow
from tests.support.paths import DATA
from transforms.var import backtests, measures

PRICES = DATA / "prices" / "bitstamp_BTC_ETH_LTC_USD_daily.csv"


def _independent_exceptions(level: float, window: int) -> np.ndarray:
    """Rolling HS exceptions computed without the engine: sort the window, take the k-th worst."""
    closes = pd.read_csv(PRICES, index_col=0, parse_dates=True)["BTC:close"].dropna()
    r = closes.pct_change().dropna().to_numpy()
    k = math.ceil((1 - Fraction(str(level))) * window)
    var = np.array([-np.sort(r[t - window : t])[k - 1] for t in range(window, r.size)])
    return -r[window:] > var


def _printed(out: str, label: str) -> float:
    return float(re.search(rf"{label}\s+([0-9.]+)", out).group(1))


def test_backtest_var_on_real_btc(tmp_path, capsys):
    out_dir = tmp_path / "bt"
    argv = ["backtest", "var", "--prices", str(PRICES), "--asset", "BTC", "--level", "0.99"]
    rc = main([*argv, "--window", "250", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert rc == 0, out

    exc = _independent_exceptions(0.99, 250)
    assert exc.size == 1864 - 250
    x = int(exc.sum())
    kupiec = backtests.kupiec_pof(x, exc.size, 0.01)
    chris = backtests.christoffersen(exc, 0.01)
    last = int(exc[-250:].sum())

    assert re.search(rf"tested days\s+{exc.size:,} \(2015-08-06 \.\. 2020-01-17\)", out)
    assert re.search(rf"exceptions\s+{x} ", out)
    assert _printed(out, "Kupiec POF +LR") == pytest.approx(kupiec.lr, abs=1e-6)
    assert _printed(out, "p-value") == pytest.approx(kupiec.pvalue, abs=1e-6)
    assert _printed(out, "LR_ind") == pytest.approx(chris.lr_ind, abs=1e-6)
    assert _printed(out, "LR_cc") == pytest.approx(chris.lr_cc, abs=1e-6)
    assert chris.lr_cc == pytest.approx(kupiec.lr + chris.lr_ind)
    zone = backtests.basel_traffic_light(last)
    assert re.search(rf"traffic light\s+{zone} \({last} exceptions? in the last 250 days\)", out)

    path = out_dir / "tables" / "var_backtests" / "part-0.parquet"
    assert f"wrote {path}" in out
    table = pq.read_table(path)
    assert table.schema.equals(arrow_schema(VarBacktestRow))
    (row,) = table.to_pylist()
    VarBacktestRow.model_validate(row)
    assert row["subject"] == "BTC" and row["method"] == "historical" and row["level"] == 0.99
    assert row["as_of"] == pd.Timestamp("2020-01-17", tz="UTC").to_pydatetime()
    assert (row["n_obs"], row["exceptions"], row["traffic_light"]) == (exc.size, x, zone)
    assert row["kupiec_lr"] == pytest.approx(kupiec.lr, rel=1e-12)
    assert row["kupiec_pvalue"] == pytest.approx(kupiec.pvalue, rel=1e-12)
    assert row["christoffersen_lr_ind"] == pytest.approx(chris.lr_ind, rel=1e-12)
    assert row["christoffersen_lr_cc"] == pytest.approx(chris.lr_cc, rel=1e-12)

    # Same inputs, same id: a rerun replaces the row rather than adding a different one.
    assert main([*argv, "--out", str(out_dir)]) == 0
    assert pq.read_table(path).to_pylist()[0]["backtest_id"] == row["backtest_id"]


def test_simple_date_close_csv_gives_the_same_backtest(tmp_path):
    wide = pd.read_csv(PRICES, index_col=0, parse_dates=True)["BTC:close"]
    simple = tmp_path / "btc.csv"
    # Newest first, as many exports are: the loader sorts by date.
    pd.DataFrame({"date": wide.index.strftime("%Y-%m-%d"), "close": wide.to_numpy()}).iloc[
        ::-1
    ].to_csv(simple, index=False)
    a = backtest.run_backtest(backtest.load_closes(PRICES, "BTC"), "BTC", 0.99, 250)
    b = backtest.run_backtest(backtest.load_closes(simple, "BTC"), "BTC", 0.99, 250)
    np.testing.assert_array_equal(a.var, b.var)
    assert a.dates.equals(b.dates) and a.n_exceptions == b.n_exceptions


@pytest.mark.parametrize("method", ["parametric", "filtered_historical"])
def test_other_methods_use_the_engine(method):
    closes = backtest.load_closes(PRICES, "BTC")
    res = backtest.run_backtest(closes, "BTC", 0.99, 250, method)
    r = closes.pct_change().dropna().to_numpy()
    fn = {
        "parametric": measures.parametric_var,
        "filtered_historical": measures.filtered_historical_var,
    }
    for t in (250, 1000, r.size - 1):
        expected = fn[method](r[t - 250 : t], level=0.99)
        assert res.var[t - 250] == pytest.approx(expected, rel=1e-12)
    assert res.n_exceptions == int((-r[250:] > res.var).sum())
    assert res.kupiec == backtests.kupiec_pof(res.n_exceptions, res.n_obs, 0.01)


def test_missing_asset_column(tmp_path, capsys):
    rc = main(
        ["backtest", "var", "--prices", str(PRICES), "--asset", "DOGE", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "no column 'DOGE:close'" in err and "BTC, ETH, LTC" in err
    assert not (tmp_path / "tables").exists()


def test_too_few_rows(tmp_path, capsys):
    # ETH has 788 closes: too few for a 800-day window.
    rc = main(["backtest", "var", "--prices", str(PRICES), "--asset", "ETH", "--window", "800"])
    assert rc == 2
    assert "too few prices for ETH: 788 closes give 787 returns" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("date,close\n2020-01-01,1\n2020-01-01,2\n2020-01-02,3\n", "duplicate date"),
        ("date,close\n2020-01-01,1\n2020-01-02,-2\n2020-01-03,3\n", "non-positive"),
        ("date,close\n2020-01-01,1\n2020-01-02,abc\n", "non-numeric"),
        ("day,price\n2020-01-01,1\n", "expected a wide CSV"),
    ],
)
def test_bad_price_files(tmp_path, content, message):
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(backtest.BacktestInputError, match=message):
        backtest.load_closes(path, "BTC")


def test_bad_arguments():
    closes = backtest.load_closes(PRICES, "BTC")
    with pytest.raises(backtest.BacktestInputError, match="level must be in"):
        backtest.run_backtest(closes, "BTC", 1.5, 250)
    with pytest.raises(backtest.BacktestInputError, match="window must be >= 2"):
        backtest.run_backtest(closes, "BTC", 0.99, 1)
    with pytest.raises(backtest.BacktestInputError, match="not found"):
        backtest.load_closes(PRICES.with_name("missing.csv"), "BTC")
