"""The bulk history generator (runners/synthetic/bulk.py): layout, contracts, oracle semantics,
continuity across days, settlements, determinism, validation against the generated registry.

Small runs (3 days x 4 assets x 50 accounts) shared by the module.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runners.synthetic import bulk
from runners.synthetic.bulk import (
    MANIFEST,
    PRICES_TOPIC,
    SETTLEMENTS_TOPIC,
    AssetSpec,
    PriceModel,
    feed_entries,
    generate_history,
)
from schemas.codegen import arrow_schema
from schemas.events import PriceEvent, Settlement
from transforms.prices.oracles import load_registry
from transforms.prices.validation import check_update

START, DAYS, ASSETS, ACCOUNTS, SEED = date(2024, 2, 28), 3, 4, 50, 5
DATES = [(START + timedelta(days=d)).isoformat() for d in range(DAYS)]


def _run(out: Path, **kw) -> dict:
    args = dict(start=START, days=DAYS, assets=ASSETS, accounts=ACCOUNTS, seed=SEED)
    return generate_history(out, **(args | kw))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("history")
    lines: list[str] = []
    manifest = _run(out, progress=lines.append, progress_every=1)
    return out, manifest, lines


@pytest.fixture(scope="module")
def rerun(tmp_path_factory):
    out = tmp_path_factory.mktemp("history-again")
    return out, _run(out)


def _part(out: Path, topic: str, day: str) -> Path:
    return out / topic / f"date={day}" / "part-00000.parquet"


def _read(out: Path, topic: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(_part(out, topic, d)) for d in DATES])


@pytest.fixture(scope="module")
def prices(run) -> list[dict]:
    return _read(run[0], PRICES_TOPIC).to_pylist()


@pytest.fixture(scope="module")
def settlements(run) -> list[dict]:
    return _read(run[0], SETTLEMENTS_TOPIC).to_pylist()


# ---------------------------------------------------------------------------------- layout
def test_layout_and_exact_schemas(run):
    out, _, _ = run
    for topic, model in ((PRICES_TOPIC, PriceEvent), (SETTLEMENTS_TOPIC, Settlement)):
        parts = sorted(p.name for p in (out / topic).iterdir())
        assert parts == [f"date={d}" for d in DATES]
        for d in DATES:
            files = list((out / topic / f"date={d}").iterdir())
            assert [f.name for f in files] == ["part-00000.parquet"]
            schema = pq.read_schema(files[0])
            assert schema.remove_metadata().equals(arrow_schema(model)), (topic, d)
    assert (out / "feeds.toml").is_file() and (out / MANIFEST).is_file()


def test_rows_sorted_by_time_within_each_day(run):
    out, _, _ = run
    for topic, col in ((PRICES_TOPIC, "publish_time"), (SETTLEMENTS_TOPIC, "event_time")):
        for d in DATES:
            t = pq.read_table(_part(out, topic, d))[col].to_numpy()
            assert (np.diff(t.astype("int64")) >= 0).all(), (topic, d)
            if len(t):
                assert str(t.min())[:10] == d and str(t.max())[:10] == d


def test_event_ids_unique(prices, settlements):
    for rows in (prices, settlements):
        ids = [r["event_id"] for r in rows]
        assert len(ids) == len(set(ids))


def test_pyth_every_minute_and_asset(prices):
    pyth = [r for r in prices if r["source"] == "pyth"]
    assert len(pyth) == DAYS * 1440 * ASSETS
    assert all(r["confidence"] is not None and r["ema_price"] is not None for r in pyth)
    assert all(r["round_id"] is None for r in pyth)


def test_no_temp_files_left(run):
    out, _, _ = run
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert leftovers == []


def test_manifest_counts_equal_file_rows(run):
    out, manifest, _ = run
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk == manifest
    for topic in (PRICES_TOPIC, SETTLEMENTS_TOPIC):
        per_day = {d: pq.ParquetFile(_part(out, topic, d)).metadata.num_rows for d in DATES}
        assert manifest["rows_per_day"][topic] == per_day
        assert manifest["rows"][topic] == sum(per_day.values())
    assert manifest["total_rows"] == sum(manifest["rows"].values())
    assert [a["symbol"] for a in manifest["assets"]] == ["BTC", "ETH", "USDC", "USDT"]
    assert all(a["start_price"] > 0 for a in manifest["assets"])
    assert (manifest["start"], manifest["days"], manifest["accounts"], manifest["seed"]) == (
        START.isoformat(),
        DAYS,
        ACCOUNTS,
        SEED,
    )
    assert manifest["generator_version"] == bulk.GENERATOR_VERSION
    assert manifest["wall_time_s"] > 0


def test_progress_lines(run):
    _, _, lines = run
    assert len(lines) == DAYS
    assert (
        lines[-1].startswith(f"day {DAYS}/{DAYS}") and "rows/s" in lines[-1] and "ETA" in lines[-1]
    )


# ----------------------------------------------------------------------------------- prices
def test_every_price_row_passes_validation(run, prices):
    out, _, _ = run
    registry = load_registry(out / "feeds.toml")
    assert registry.assets() == ("BTC", "ETH", "USDC", "USDT")
    for row in prices:
        event = PriceEvent(**row)
        assert check_update(event, registry) is None, row


def test_registry_of_all_20_assets_validates(tmp_path):
    generate_history(tmp_path, start=START, days=1, assets=20, accounts=5, seed=SEED)
    registry = load_registry(tmp_path / "feeds.toml")
    assert len(registry.assets()) == 20 and len(registry.feeds) == 40
    real = load_registry()
    for asset in ("BTC", "ETH", "USDC", "USDT", "DAI"):
        for source in ("chainlink", "pyth"):
            assert registry.for_asset(asset, source).key == real.for_asset(asset, source).key
    for f in registry.feeds:
        assert f.heartbeat_s == (60 if f.source == "pyth" else f.heartbeat_s)
        if f.source == "chainlink" and f.asset not in bulk.REAL_ASSETS:
            assert f.heartbeat_s == 3600 and f.min_price > 0 and f.max_price > 0
    rows = pq.read_table(_part(tmp_path, PRICES_TOPIC, DATES[0])).to_pylist()
    for row in rows[::7]:
        assert check_update(PriceEvent(**row), registry) is None, row


def _series(prices: list[dict], source: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in prices:
        if r["source"] == source:
            out[r["asset"]].append(r)
    return out


def test_prices_continuous_across_day_boundaries(prices):
    pyth = _series(prices, "pyth")
    for asset, rows in pyth.items():
        by_day = defaultdict(list)
        for r in rows:
            by_day[r["publish_time"].date().isoformat()].append(r)
        for d0, d1 in zip(DATES, DATES[1:], strict=False):
            last, first = by_day[d0][-1], by_day[d1][0]
            assert (first["publish_time"] - last["publish_time"]).total_seconds() == 60
            jump = abs(float(first["price"]) / float(last["price"]) - 1)
            assert jump < 0.01, (asset, d0, jump)
            # the Pyth EMA carries its state: a fresh EMA would restart at the new price
            ema_jump = abs(float(first["ema_price"]) / float(last["ema_price"]) - 1)
            assert ema_jump < 0.002, (asset, d0, ema_jump)
        # and a boundary step is an ordinary minute step, not a restart of the walk
        p = np.array([float(r["price"]) for r in rows])
        steps = np.abs(np.diff(np.log(p)))
        for k in range(1, DAYS):
            assert steps[k * 1440 - 1] < 8 * np.median(steps) + 1e-4, asset


def test_chainlink_rounds_only_on_deviation_or_heartbeat(run, prices):
    out, _, _ = run
    registry = load_registry(out / "feeds.toml")
    for asset, rows in _series(prices, "chainlink").items():
        feed = registry.for_asset(asset, "chainlink")
        assert rows[0]["publish_time"] == datetime(2024, 2, 28, tzinfo=UTC)
        rounds = [int(r["round_id"]) for r in rows]
        assert rounds == list(range(rounds[0], rounds[0] + len(rounds)))
        assert rounds[0] >> 64 == 6
        for prev, cur in zip(rows, rows[1:], strict=False):
            gap = (cur["publish_time"] - prev["publish_time"]).total_seconds()
            assert 60 <= gap <= feed.heartbeat_s
            moved = abs(cur["price"] / prev["price"] - 1) > Decimal(str(feed.deviation_pct / 100))
            assert moved or gap == feed.heartbeat_s, (asset, prev, cur)
            assert cur["answered_in_round"] == cur["round_id"] and cur["confidence"] is None
        assert len(rows) < DAYS * 1440 / 4  # far fewer than Pyth's one a minute


def test_chainlink_schedule_unit():
    """A flat answer updates on the heartbeat only; a jump updates at once; state crosses days."""
    specs = (AssetSpec("BTC", 100.0, 0.03, 8, 0.8),)
    model = PriceModel(specs, feed_entries(specs), seed=1)
    flat = np.full((1440, 1), 10_000_000_000, dtype=np.int64)
    (day0,) = model.chainlink_minutes(flat, 0)
    assert day0.tolist() == list(range(0, 1440, 60))
    jumped = flat.copy()
    jumped[100:] = 10_100_000_000  # +1%, above the 0.5% threshold
    (day1,) = model.chainlink_minutes(jumped, 1)
    assert day1[0] == 0 and 100 in day1.tolist()  # heartbeat from the day before, then the jump
    assert np.diff(day1).max() <= 60 and day1.tolist()[:3] == [0, 60, 100]


def test_stablecoins_near_one(prices):
    for r in prices:
        if r["asset"] in ("USDC", "USDT", "DAI"):
            assert abs(float(r["price"]) - 1) < 0.03


def test_feeds_toml_matches_rows(run, prices):
    out, _, _ = run
    registry = load_registry(out / "feeds.toml")
    for r in prices[:5000]:
        feed = registry.by_id(r["feed_id"])
        assert feed is not None and (feed.asset, feed.source) == (r["asset"], r["source"])


# ------------------------------------------------------------------------------ settlements
def test_settlements_never_negative_and_first_is_deposit(settlements):
    assert len(settlements) > ACCOUNTS  # every account opened (deposit + borrow)
    first: dict[str, str] = {}
    coll: dict[tuple[str, str], int] = defaultdict(int)
    debt: dict[tuple[str, str], int] = defaultdict(int)
    kinds = set()
    for s in settlements:
        first.setdefault(s["account_id"], s["kind"])
        kinds.add(s["kind"])
        raw = s["amount_raw"]
        assert raw.isdigit() and int(raw) > 0
        key = (s["account_id"], s["asset"])
        sign = -1 if s["kind"] in ("withdraw", "repay", "liquidation") else 1
        book = coll if s["kind"] in ("deposit", "withdraw", "liquidation") else debt
        book[key] += sign * int(raw)
        assert book[key] >= 0, s
        assert s["tx_hash"].startswith("0x") and len(s["tx_hash"]) == 66
        Settlement(**s)  # contract-valid
    assert set(first.values()) == {"deposit"}
    assert len(first) == ACCOUNTS
    assert {"deposit", "borrow"} <= kinds


def test_settlement_decimals_and_amounts(settlements):
    dec = {a.symbol: a.decimals for a in bulk.ASSETS}
    for s in settlements:
        assert s["decimals"] == dec[s["asset"]]


def test_day_without_settlements_gets_an_empty_file(tmp_path):
    m = generate_history(tmp_path, start=START, days=6, assets=1, accounts=1, seed=2)
    empty = [d for d, n in m["rows_per_day"][SETTLEMENTS_TOPIC].items() if n == 0]
    assert empty, m["rows_per_day"]
    for d in empty:
        t = pq.read_table(_part(tmp_path, SETTLEMENTS_TOPIC, d))
        assert t.num_rows == 0 and t.schema.remove_metadata().equals(arrow_schema(Settlement))


# ------------------------------------------------------------------------------ determinism
def test_same_arguments_give_identical_bytes(run, rerun):
    out, manifest, _ = run
    again, manifest2 = rerun
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != MANIFEST:
            assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    strip = ("wall_time_s",)
    assert {k: v for k, v in manifest.items() if k not in strip} == {
        k: v for k, v in manifest2.items() if k not in strip
    }


def test_other_seed_other_prices(run, tmp_path):
    out, _, _ = run
    generate_history(tmp_path, start=START, days=1, assets=ASSETS, accounts=3, seed=SEED + 1)
    a = pq.read_table(_part(out, PRICES_TOPIC, DATES[0]))["price"]
    b = pq.read_table(_part(tmp_path, PRICES_TOPIC, DATES[0]))["price"]
    assert a != b


def test_rerun_removes_stale_partitions(tmp_path):
    generate_history(tmp_path, start=START, days=3, assets=1, accounts=2)
    generate_history(tmp_path, start=START, days=2, assets=1, accounts=2)
    for topic in (PRICES_TOPIC, SETTLEMENTS_TOPIC):
        assert sorted(p.name for p in (tmp_path / topic).iterdir()) == [
            f"date={d}" for d in DATES[:2]
        ]


# ----------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"days": 0}, "days must be"),
        ({"assets": 0}, "assets must be .* in 1..20"),
        ({"assets": 21}, "assets must be .* in 1..20"),
        ({"accounts": 0}, "accounts must be"),
        ({"seed": -1}, "seed must be"),
        ({"start": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"start": datetime(2024, 1, 1, 12, tzinfo=UTC)}, "midnight"),
    ],
)
def test_invalid_arguments(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        generate_history(tmp_path / "x", **({"days": 1, "assets": 1, "accounts": 1} | kw))
    assert not (tmp_path / "x").exists()


def test_cli_generate_history(tmp_path, capsys):
    from runners.cli import main

    rc = main(
        [
            "generate",
            "--history",
            "--out",
            str(tmp_path),
            "--start",
            "2024-01-01",
            "--days",
            "2",
            "--assets",
            "3",
            "--accounts",
            "10",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert (manifest["start"], manifest["days"], len(manifest["assets"])) == ("2024-01-01", 2, 3)
    assert (manifest["accounts"], manifest["seed"]) == (10, 3)
    assert "rows/s" in capsys.readouterr().out


def test_liquidations_repay_then_seize_and_stay_non_negative():
    """A crash of the collateral below the liquidation line: repay first, then seize, pro rata."""
    book = bulk.AccountBook(bulk.ASSETS[:3], 40, days=2, seed=1)
    flat = np.tile([bulk.ASSETS[0].start_price, bulk.ASSETS[1].start_price, 1.0], (1440, 1))
    opened = book.day(flat, 0, 0).to_pylist()
    assert {r["account_id"] for r in opened} == set(book.account_ids)
    crashed = flat * np.array([0.45, 0.45, 1.0])
    rows = book.day(crashed, 1, 0).to_pylist()
    liq = [r for r in rows if r["kind"] == "liquidation"]
    assert liq, "a 55% crash liquidates accounts that borrowed at health 80..250"
    assert (book.coll_u >= 0).all() and (book.debt_u >= 0).all()
    by_tx = defaultdict(list)
    for r in rows:
        by_tx[r["tx_hash"]].append(r["kind"])
    for kinds in by_tx.values():
        if "liquidation" in kinds:
            first_seize = kinds.index("liquidation")
            assert set(kinds[:first_seize]) == {"repay"} and set(kinds[first_seize:]) == {
                "liquidation"
            }
