"""End to end: generate a small market, run the whole graph locally, build the warehouse.

This is the embedded default a new user runs with ``make demo``, at a smaller size.
"""

from __future__ import annotations

import json
from collections import Counter

import duckdb
import pyarrow.parquet as pq
import pytest

from runners.cli import main as cli_main
from runners.io.files import InputError
from runners.local.run import run_local
from runners.local.warehouse import build_warehouse
from runners.synthetic import generate
from schemas.registry import INPUT_TOPICS, TABLES

pytestmark = pytest.mark.slow

# Tables that a stage of this release produces; later issues add theirs here.
PRODUCED_TABLES = (
    "prices",
    "dead_letter",
    "portfolio_var",
    "margin_health",
    "margin_events",
    "suspicious_activities",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data, out = root / "input", root / "out"
    generate(data, days=2, accounts=20, seed=11)
    # Two days hold too few daily returns: VaR on hourly returns, as the demo runs it.
    report = run_local(data, out, pipeline="all", extra_args=["--var_interval=hourly"])
    warehouse = build_warehouse(out)
    truth = json.loads((data / "ground_truth.json").read_text())
    return data, out, report, warehouse, truth


def test_every_record_is_accounted_for(demo):
    data, _, report, _, truth = demo
    assert report.balanced()
    for topic in INPUT_TOPICS:
        lines = sum(1 for line in (data / f"{topic}.jsonl").read_bytes().split(b"\n") if line)
        assert report.topics[topic]["in"] == lines, topic


def test_dead_letters_match_the_injected_bad_records(demo):
    _, out, report, _, truth = demo
    expected = Counter()
    # Malformed lines (parse) and contract-valid updates the price rules refuse (validation).
    for kind in ("bad_records", "rejected_updates"):
        for topic, reasons in truth[kind].items():
            for reason, n in reasons.items():
                expected[(topic, reason)] += n
    rows = pq.read_table(out / "tables" / "dead_letter").to_pylist()
    got = Counter((r["source"], r["error_reason"]) for r in rows)
    assert got == expected
    parse_dead = sum(t["dead_letter"] for t in report.topics.values())
    assert parse_dead + sum(report.rejected_downstream.values()) == sum(expected.values())
    assert sum(report.rejected_downstream.values()) == sum(
        truth["rejected_updates"]["market.prices.v1"].values()
    )


def test_every_produced_table_has_rows_and_every_table_exists(demo):
    _, _, _, warehouse, _ = demo
    assert set(TABLES) <= set(warehouse.tables)
    for table in PRODUCED_TABLES:
        assert warehouse.tables[table] > 0, table


def test_composite_prices_cover_every_asset_and_minute(demo):
    _, out, _, _, truth = demo
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    per_asset = dict(con.execute("SELECT asset, count(*) FROM prices GROUP BY asset").fetchall())
    minutes = truth["days"] * 24 * 60
    assert set(per_asset) == set(truth["assets"])
    for asset, n in per_asset.items():
        assert minutes - 2 <= n <= minutes + 1, (asset, n)  # bad records may empty a minute
    ok_share = con.execute(
        "SELECT avg(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) FROM prices"
    ).fetchone()[0]
    assert ok_share > 0.99


def test_portfolio_var_for_every_account_that_holds_positions(demo):
    from schemas.events import Settlement
    from transforms.common.positions import PositionBook

    data, out, _, _, _ = demo
    books: dict[str, PositionBook] = {}
    for line in (data / "settlements.v1.jsonl").read_bytes().splitlines():
        try:
            s = Settlement.model_validate_json(line)
        except ValueError:
            continue  # the injected bad records
        books.setdefault(s.account_id, PositionBook(s.account_id)).apply(s)
    holding = {a for a, b in books.items() if not b.is_closed()}
    rows = pq.read_table(out / "tables" / "portfolio_var").to_pylist()
    last = max(r["as_of"] for r in rows)
    assert {r["account_id"] for r in rows if r["as_of"] == last} == holding
    assert {r["method"] for r in rows} == {"historical", "parametric"}
    assert all(r["var_usd"] > 0 and r["n_scenarios"] >= 30 for r in rows)


def test_margin_events_match_the_accounts_the_generator_drove_into_margin_calls(demo):
    from datetime import datetime, timedelta

    _, out, _, _, truth = demo
    assert truth["margin_calls"], "the generator drives some accounts into margin calls"
    events = pq.read_table(out / "tables" / "margin_events").to_pylist()
    first: dict[str, datetime] = {}
    for e in sorted(events, key=lambda e: e["event_ts"]):
        if e["event_type"] in ("margin_call", "liquidation"):
            first.setdefault(e["account_id"], e["event_ts"])
    expected = {
        m["account_id"]: datetime.fromisoformat(m["first_margin_call"].replace("Z", "+00:00"))
        for m in truth["margin_calls"]
    }
    assert set(first) == set(expected)
    for account, when in expected.items():
        # truth stamps the minute; a price-driven call shows at its composite window's end
        assert timedelta(0) <= first[account] - when <= timedelta(minutes=1), account
    alerts = [json.loads(line) for line in (out / "alerts" / "alerts.margin.v1.jsonl").open()]
    called = {a["account_id"] for a in alerts if a["event_type"] in ("margin_call", "liquidation")}
    assert called == set(first)  # every called account was alerted at least once
    from runners.local.demo import margin_truth_check

    check = margin_truth_check(out, out.parent / "input" / "ground_truth.json")
    assert check is not None and check["missed"] == check["extra"] == 0


def test_the_injected_rug_pull_is_found_and_alerted(demo):
    _, out, _, _, truth = demo
    (case,) = truth["rug_pulls"]
    rows = pq.read_table(out / "tables" / "suspicious_activities").to_pylist()
    rugs = [r for r in rows if r["activity_type"] == "rug_pull"]
    assert [r["pool_address"] for r in rugs] == [case["pool"]]
    assert case["deployer"] in rugs[0]["wallet_addresses"]
    alerts = [json.loads(line) for line in (out / "alerts" / "alerts.surveillance.v1.jsonl").open()]
    assert [a["activity_id"] for a in alerts if a["activity_type"] == "rug_pull"] == [
        rugs[0]["activity_id"]
    ]


def test_the_injected_wash_ring_is_found_with_its_wallets_and_alerted(demo):
    _, out, _, _, truth = demo
    rows = pq.read_table(out / "tables" / "suspicious_activities").to_pylist()
    wash = [r for r in rows if r["activity_type"] == "wash_trading"]
    for case in truth["wash_trading"]:
        found = [r for r in wash if r["pool_address"] == case["pool"]]
        assert found, case["id"]
        assert any(set(case["wallets"]) <= set(r["wallet_addresses"]) for r in found)
    # nothing else is flagged: every finding is on an injected pool
    assert {r["pool_address"] for r in wash} <= {c["pool"] for c in truth["wash_trading"]}
    alerts = [json.loads(line) for line in (out / "alerts" / "alerts.surveillance.v1.jsonl").open()]
    assert {a["activity_id"] for a in alerts if a["activity_type"] == "wash_trading"} <= {
        r["activity_id"] for r in wash
    }
    assert any(a["activity_type"] == "wash_trading" for a in alerts)


def test_every_view_queries(demo):
    _, out, _, warehouse, _ = demo
    assert warehouse.views
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    for view in warehouse.views:
        con.execute(f"SELECT * FROM {view}").fetchall()


def test_rerun_replaces_output_instead_of_appending(demo, tmp_path):
    data, _, first, _, _ = demo
    out = tmp_path / "out"
    run_local(data, out, pipeline="risk")
    run_local(data, out, pipeline="risk")
    assert pq.read_table(out / "tables" / "prices").num_rows == first_prices(demo)


def first_prices(demo) -> int:
    return pq.read_table(demo[1] / "tables" / "prices").num_rows


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_local(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert (
        cli_main(
            ["run", "--input-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")]
        )
        == 2
    )


def test_cli_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    text = capsys.readouterr().out
    for sub in ("generate", "run", "warehouse", "schemas", "demo", "sql", "query"):
        assert sub in text


def _row_key(row: dict) -> str:
    """A row without its processing time (wall clock by definition), as comparable text."""
    return json.dumps(
        {k: v for k, v in row.items() if k != "processing_time"}, default=str, sort_keys=True
    )


def test_stream_replay_gives_the_same_tables_as_the_batch_run(tmp_path):
    # The same files through a TestStream on the streaming runner, minute by minute in event time.
    t0 = 1736121600
    lines = []
    for i in range(180):
        for k, source in enumerate(("chainlink", "pyth")):
            lines.append(
                json.dumps(
                    {
                        "event_id": f"{source}{i}",
                        "asset": ("ETH", "BTC")[i % 2],
                        "source": source,
                        "price": str(3000 + i % 7 + k),
                        "publish_time": t0 + i * 20 + k,
                    }
                )
            )
    lines.insert(50, "{broken")
    lines.insert(
        90,
        json.dumps(
            {"event_id": "x", "asset": "ETH", "source": "pyth", "price": "-2", "publish_time": t0}
        ),
    )
    data = tmp_path / "in"
    data.mkdir()
    (data / "market.prices.v1.jsonl").write_text("\n".join(lines) + "\n")
    # Prices only: the VaR and margin stages (which need settlements) are skipped on purpose.
    batch = run_local(data, tmp_path / "batch", pipeline="risk", allow_missing=True)
    stream = run_local(
        data, tmp_path / "stream", pipeline="risk", replay="stream", allow_missing=True
    )
    for table in ("prices", "dead_letter"):
        b = pq.read_table(tmp_path / "batch" / "tables" / table).to_pylist()
        s = pq.read_table(tmp_path / "stream" / "tables" / table).to_pylist()
        assert sorted(map(_row_key, b)) == sorted(map(_row_key, s)), table
    assert (
        batch.topics
        == stream.topics
        == {"market.prices.v1": {"in": 362, "out": 360, "dead_letter": 2}}
    )


def test_parquet_topic_files_give_the_same_prices_as_jsonl(tmp_path):
    # Parquet is typed: it holds the genuine records only, so the composite must match the JSONL
    # run (whose malformed and refused lines become dead letters instead).
    data = tmp_path / "in"
    generate(data, days=1, accounts=5, seed=3, fmt="both")
    from_jsonl = run_local(data, tmp_path / "j", pipeline="risk")
    from_parquet = run_local(data, tmp_path / "p", pipeline="risk", input_format="parquet")
    assert from_parquet.balanced() and from_parquet.dead_letter_reasons == {}
    assert from_jsonl.dead_letter_reasons
    j = pq.read_table(tmp_path / "j" / "tables" / "prices").sort_by("price_id")
    p = pq.read_table(tmp_path / "p" / "tables" / "prices").sort_by("price_id")
    assert j.num_rows == p.num_rows > 0 and j.equals(p)
