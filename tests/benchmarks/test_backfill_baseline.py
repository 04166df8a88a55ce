"""The backfill against the independent numpy baseline (tests/benchmarks/backfill_baseline.py).

A tiny generated history, made less clean on purpose (an outage of every source, one across
midnight, a silent Pyth feed, a Chainlink feed 3 % off, redelivered rounds, a stale update, a
redelivered settlement), goes through ``defi-risk backfill`` and through the baseline; the prices
(per asset and minute), the VaR rows (per account, day and method), the margin_health rows (per
account, time, trigger and triggering settlement or prices) and the margin events must be the
same.

Margin zones: the generated accounts cross zones on prices (margin calls and recoveries that
need health 32, the band). Two scripted accounts add what the generator does not: acct-test-x
holds USDC against USDC debt, so its health is set by the amounts alone: 30 and 32 exactly,
warning / margin_call / liquidation, the band on the way up from both, a margin call 299 s after
the last (suppressed by the 300 s cooldown) and a recovery 300 s after the last (alerted);
acct-test-y falls to health 25 while BTC (a speck of which it holds) has a doubtful price, so it
only goes to warning, and to margin_call on the first good BTC price.

VaR levels 0.8 / 0.75 instead of 0.99 / 0.975: with 5..10 scenarios, 0.99 and 0.975 both pick
the single worst loss, which would not tell the quantile and tail-mean rules apart; at 0.8 the
VaR is the 1st or 2nd worst loss (alpha * N whole at N = 5 and 10) and the ES tail is fractional.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from runners.backfill.config import BackfillConfig
from runners.backfill.driver import backfill
from runners.synthetic.bulk import generate_history
from tests.benchmarks.backfill_baseline import Positions, run_baseline
from tests.benchmarks.bench_backfill import margin_comparison, matched_margin_health, rows_per_day

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


# (account, minute, kind, asset, amount): health after it in the comment
MARGIN_SCRIPT = [
    ("acct-test-x", "2024-01-16 10:00", "deposit", "USDC", "1300"),
    ("acct-test-x", "2024-01-16 10:00", "borrow", "USDC", "1000"),  # 30 exactly: warning
    ("acct-test-x", "2024-01-16 10:01", "borrow", "USDC", "40"),  # 25: margin_call
    ("acct-test-x", "2024-01-16 10:02", "repay", "USDC", "47.63"),  # 31.0: margin_call (band)
    ("acct-test-x", "2024-01-16 10:03", "deposit", "USDC", "20"),  # 33.0: recovered
    ("acct-test-x", "2024-01-16 10:05:59", "borrow", "USDC", "107.63"),  # 20: margin_call, 299 s
    ("acct-test-x", "2024-01-16 10:06", "borrow", "USDC", "100"),  # 10: liquidation
    ("acct-test-x", "2024-01-16 10:06:30", "repay", "USDC", "62.07"),  # 16.0: liquidation (band)
    ("acct-test-x", "2024-01-16 10:07", "repay", "USDC", "37.93"),  # 20: margin_call, no event
    ("acct-test-x", "2024-01-16 10:08", "repay", "USDC", "100"),  # 32 exactly: recovered
    ("acct-test-x", "2024-01-16 11:00", "repay", "USDC", "1000"),  # no debt
    ("acct-test-x", "2024-01-16 11:01", "withdraw", "USDC", "1320"),  # closed
    ("acct-test-y", "2024-01-08 02:00", "deposit", "BTC", "0.000001"),
    ("acct-test-y", "2024-01-08 02:00", "deposit", "USDC", "1000"),
    ("acct-test-y", "2024-01-08 02:01", "borrow", "USDC", "500"),  # ~100: healthy
    ("acct-test-y", "2024-01-08 04:00", "borrow", "USDC", "300"),  # ~25, BTC doubtful: warning
    ("acct-test-y", "2024-01-08 08:00", "repay", "USDC", "300"),  # ~100: recovered
]
DECIMALS = {"USDC": 6, "BTC": 8}


def _scripted(t: pa.Table, day: str) -> pa.Table:
    rows = []
    for i, (account, minute, kind, asset, amount) in enumerate(MARGIN_SCRIPT):
        if not minute.startswith(day):
            continue
        at = datetime.fromisoformat(minute).replace(tzinfo=UTC)
        rows.append(
            {
                "event_id": f"settlement:test:{account}:{i:02d}",
                "account_id": account,
                "venue": "aave_v3",
                "chain_id": "eip155:1",
                "kind": kind,
                "asset": asset,
                "amount_raw": str(int(Decimal(amount).scaleb(DECIMALS[asset]))),
                "decimals": DECIMALS[asset],
                "tx_hash": f"0x{i:064x}",
                "block_number": 1,
                "event_time": at,
            }
        )
    return pa.concat_tables([t, pa.Table.from_pylist(rows, schema=t.schema)])


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
    for day in sorted({m[1][:10] for m in MARGIN_SCRIPT}):
        _edit(data, "settlements.v1", day, lambda t, day=day: _scripted(t, day))
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
    """The backfill's historical VaR is the inverted-CDF quantile (README, transforms/var/measures.py's
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


def test_margin_matches(outputs):
    bf, bl, summary = outputs
    for table in ("margin_health", "margin_events"):
        assert rows_per_day(bf, table) == rows_per_day(bl, table), table
    theirs, ours, unmatched = matched_margin_health(bf, bl)
    assert unmatched == 0
    assert summary["margin_health_rows"] == ours.num_rows > 0
    assert ours["zone"].equals(theirs["zone"])
    assert ours["price_status"].equals(theirs["price_status"])
    assert set(ours["trigger"].to_pylist()) == {"settlement", "price", "snapshot"}
    assert set(ours["price_status"].to_pylist()) == {"ok", "degraded", "price_unavailable"}
    for col in ("collateral_usd", "borrow_usd", "health_score"):
        # the backfill's values are exact, then rounded to 9 decimals: 1e-9 relative, or one
        # unit of the 9th decimal
        mine = pc.cast(ours[col], pa.float64()).to_numpy(zero_copy_only=False)
        exact = pc.cast(theirs[col], pa.float64()).to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(mine, exact, rtol=1e-9, atol=1e-9, err_msg=col)
    mine, exact = ours["liquidation_prices"], theirs["liquidation_prices"]
    assert pc.list_value_length(mine).equals(pc.list_value_length(exact))
    mine, exact = (pc.list_flatten(x).combine_chunks() for x in (mine, exact))
    assert mine.field("asset").equals(exact.field("asset"))
    for f in ("liquidation_price", "margin_call_price"):
        np.testing.assert_allclose(
            pc.cast(mine.field(f), pa.float64()).to_numpy(zero_copy_only=False),
            pc.cast(exact.field(f), pa.float64()).to_numpy(zero_copy_only=False),
            rtol=1e-9,
            atol=1e-9,
            err_msg=f,
        )
    check = margin_comparison(bf, bl)
    assert check["events_equal"] and check["events"][1] == summary["margin_event_rows"] > 0
    ours, theirs = _read(bl, "margin_events"), _read(bf, "margin_events")
    np.testing.assert_allclose(
        ours["health_score"], theirs["health_score"].astype(float), rtol=1e-9, atol=1e-9
    )


def _events_of(root: Path, account: str) -> list[tuple]:
    e = _read(root, "margin_events")
    e = e[e["account_id"] == account].sort_values("event_ts")
    return [
        (t.strftime("%m-%d %H:%M:%S"), kind, prev, alerted)
        for t, kind, prev, alerted in zip(
            e["event_ts"], e["event_type"], e["previous_zone"], e["alerted"], strict=True
        )
    ]


def test_margin_zones_bands_cooldown_and_price_status(outputs):
    """The scripted accounts take the detector through its rules (checked on the backfill's
    output; test_margin_matches holds the baseline to it)."""
    bf, _, _ = outputs
    assert _events_of(bf, "acct-test-x") == [
        ("01-16 10:01:00", "margin_call", "warning", True),
        ("01-16 10:03:00", "recovered", "margin_call", True),
        ("01-16 10:05:59", "margin_call", "warning", False),  # 299 s after the last margin call
        ("01-16 10:06:00", "liquidation", "margin_call", True),
        ("01-16 10:08:00", "recovered", "margin_call", True),  # 300 s after the last recovery
    ]
    h = _read(bf, "margin_health")
    x = h[h["account_id"] == "acct-test-x"].sort_values("event_ts")
    # the opening deposit and borrow share an instant: one decision, in warning (no no_debt row
    # in between)
    assert x["zone"].tolist() == [
        "warning", "margin_call", "margin_call", "warning", "margin_call",
        "liquidation", "liquidation", "margin_call", "warning", "no_debt", "no_debt",
    ]  # fmt: skip
    assert set(x["trigger"]) == {"settlement"}  # USDC against USDC: prices never move it
    y_events = _events_of(bf, "acct-test-y")
    assert [e[1:] for e in y_events] == [
        ("margin_call", "warning", True),
        ("recovered", "margin_call", True),
    ]
    y = h[h["account_id"] == "acct-test-y"].sort_values("event_ts")
    at_4 = y[y["event_ts"] == _at("2024-01-08", 4).as_py()].iloc[0]
    assert (at_4["zone"], at_4["trigger"]) == ("warning", "settlement")
    assert at_4["price_status"] != "ok" and float(at_4["health_score"]) < 30
    called = y[y["zone"] == "margin_call"].iloc[0]
    assert called["trigger"] == "price" and called["price_status"] == "ok"
    assert "01-08 06:00:00" <= y_events[0][0] < "01-08 08:00:00"
    # the generated accounts cross zones on prices too
    e = _read(bf, "margin_events")
    generated = e[e["account_id"].str.startswith("acct-0")]
    assert {"margin_call", "recovered"} <= set(generated["event_type"])
    keyed = h.set_index(["account_id", "event_ts"])["trigger"]
    assert "price" in {keyed.loc[(a, t)] for a, t in zip(generated["account_id"],
                                                          generated["event_ts"], strict=True)}  # fmt: skip


def _settlements(day: int, rows: list[tuple[str, str, str, str, int]]) -> pa.Table:
    """(account, kind, asset, amount in tokens as text, decimals), one minute apart."""
    return pa.Table.from_pylist(
        [
            {
                "event_id": f"settlement:big:{day}:{i:03d}",
                "account_id": account,
                "kind": kind,
                "asset": asset,
                "amount_raw": str(int(Decimal(amount).scaleb(decimals))),
                "decimals": decimals,
                "event_time": datetime(2024, 1, day, 0, i, tzinfo=UTC),
            }
            for i, (account, kind, asset, amount, decimals) in enumerate(rows)
        ],
        schema=pa.schema(
            [
                ("event_id", pa.string()),
                ("account_id", pa.string()),
                ("kind", pa.string()),
                ("asset", pa.string()),
                ("amount_raw", pa.string()),
                ("decimals", pa.int64()),
                ("event_time", TS),
            ]
        ),
    )


def _reference(days: list[pa.Table]) -> tuple[list[list[bool]], dict]:
    """What ``transforms.common.positions.PositionBook`` (exact Decimals) applies, and the balances."""
    from schemas.events import Settlement
    from transforms.common.positions import PositionBook

    books: dict[str, PositionBook] = {}
    applied = []
    for t in days:
        applied.append([])
        for r in t.to_pylist():
            book = books.setdefault(r["account_id"], PositionBook(r["account_id"]))
            s = Settlement(**r, venue="aave_v3")
            applied[-1].append(book.apply(s).applied)
    balances = {
        (a, side, asset): q
        for a, b in books.items()
        for side, book in ((0, b.collateral), (1, b.debt))
        for asset, q in book.items()
    }
    return applied, balances


def _baseline_positions(days: list[pa.Table]) -> tuple[list[list[bool]], dict]:
    pos = Positions(["ETH", "ADA", "DAI"])
    applied = []
    for t in days:
        pos.apply(t)
        order = np.argsort(pos.log["event_id"].astype(str))  # the tables are in event id order
        applied.append(pos.log["applied"][order].tolist())
    balances = {}
    for side, a, j in zip(*np.nonzero(pos.bal), strict=True):
        q = Decimal(int(pos.bal[side, a, j])).scaleb(-int(pos.exponent[j]))
        balances[(pos.accounts[a], int(side), pos.assets[j])] = q
    return applied, balances


def test_positions_beyond_int64_nano_units_are_exact():
    """Balances above 9.22e9 tokens (int64 units of 1e-9 token) are held exactly: the
    generated 730-day history has 1.1e10 ADA in one account (acct-01959, 2025-12-29), which the
    baseline's int64 units of 1e-9 overflowed (the deposit refused). The refusal rule and the
    balances are PositionBook's: amounts of 1e-6, then finer ones of 1e-9 (the asset's unit gets
    finer), an amount above 9.22e9 tokens, and a day whose int64 sums could overflow (the
    exact way)."""
    day1 = _settlements(
        1,
        [
            ("a", "deposit", "ETH", "6000000000.000001", 18),
            ("a", "deposit", "ETH", "5000000000", 18),  # 1.1e10 ETH
            ("a", "withdraw", "ETH", "6000000000", 18),
            ("a", "withdraw", "ETH", "5000000000.000002", 18),  # refused: beyond the balance
            ("a", "withdraw", "ETH", "4999999999", 18),  # leaves 1.000001 ETH
            ("b", "deposit", "ADA", "4993239069.210955", 6),
            ("b", "deposit", "ADA", "6079661332.552095", 6),  # the generated history's case
            ("b", "withdraw", "ADA", "0.000001", 6),
        ],
    )
    day2 = _settlements(
        2,
        [
            ("a", "withdraw", "ETH", "0.999999999", 18),  # 1e-9: ETH's unit gets finer
            ("a", "withdraw", "ETH", "0.000001002", 18),  # refused
            ("a", "borrow", "DAI", "9300000000", 18),
            ("a", "repay", "DAI", "9300000000.5", 18),  # refused
            ("a", "repay", "DAI", "9299999999", 18),
            ("b", "withdraw", "ADA", "11072900401.763050", 6),  # refused
            ("b", "deposit", "ADA", "1", 6),
            ("c", "deposit", "ETH", "3000000000", 18),  # 1.2e19 units of 1e-9 moved: exact way
            ("c", "deposit", "ETH", "3000000000.000000001", 18),
            ("c", "withdraw", "ETH", "6000000000.000000002", 18),  # refused
            ("c", "withdraw", "ETH", "1", 18),
        ],
    )
    ours, theirs = _baseline_positions([day1, day2]), _reference([day1, day2])
    assert ours == theirs
    assert theirs[0] == [
        [True, True, True, False, True, True, True, True],
        [True, False, True, False, True, False, True, True, True, False, True],
    ]
    assert theirs[1] == {
        ("a", 0, "ETH"): Decimal("0.000001001"),
        ("a", 1, "DAI"): Decimal(1),
        ("b", 0, "ADA"): Decimal("11072900402.763049"),
        ("c", 0, "ETH"): Decimal("5999999999.000000001"),
    }


def test_positions_finer_than_their_int64_range_are_refused_loudly():
    """A balance that does not fit int64 units of the finest amount of its asset stops the run
    (never a wrong refusal)."""
    pos = Positions(["ETH"])
    day = _settlements(
        1, [("a", "deposit", "ETH", "9000000000.000000001", 18), ("a", "deposit", "ETH", "5e8", 18)]
    )
    with pytest.raises(OverflowError, match="ETH"):
        pos.apply(day)
