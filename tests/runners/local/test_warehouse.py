"""The DuckDB warehouse: tables from Parquet, views from BigQuery SQL, and the dialect gaps."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from runners.local.warehouse import (
    WarehouseError,
    build_warehouse,
    duckdb_type,
    run_sql,
    transpile,
    view_files,
)
from schemas.base import deterministic_id
from schemas.codegen import SCHEMA_DIR, arrow_schema
from schemas.events import MarginAlert
from schemas.registry import TABLES
from schemas.serde import to_json, to_row
from schemas.tables import (
    ComplianceScreeningRow,
    DeadLetterRow,
    LiquidationPrice,
    MarginEventRow,
    MarginHealthRow,
    PortfolioVarRow,
    PriceRow,
    ProtocolRiskAssessmentRow,
    RiskFactor,
    SuspiciousActivityRow,
    VarBacktestRow,
)
from tests.support.paths import ROOT

REPO = ROOT
SQL_DIR = REPO / "sql"
ALERT_TABLES = ("alerts_margin", "alerts_surveillance", "alerts_compliance")


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def d(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def write_parquet(out: Path, table: str, rows: list, name: str = "part-0.parquet") -> None:
    folder = out / "tables" / table
    folder.mkdir(parents=True, exist_ok=True)
    model = TABLES[table]
    pq.write_table(
        pa.Table.from_pylist([to_row(r) for r in rows], schema=arrow_schema(model)), folder / name
    )


# --------------------------------------------------------------------------------- fixtures
def price(asset, at, status, value, n_sources, spread):
    end = ts(at)
    return PriceRow(
        price_id=deterministic_id(asset, end),
        asset=asset,
        price=d(value),
        status=status,
        n_sources=n_sources,
        sources=["chainlink", "pyth", "cex"][:n_sources],
        spread_bps=spread,
        window_start=end - timedelta(minutes=1),
        event_time=end,
    )


PRICES = [
    price("BTC", "2024-12-31 23:59:00", "ok", "42000.5", 3, 10.0),
    price("BTC", "2025-01-01 00:01:00", "degraded", "42100.25", 2, 25.5),
    price("BTC", "2025-01-01 00:02:00", "ok", "42050.000000001", 3, 5.0),
    price("ETH", "2025-01-01 00:00:00", "ok", "2300.1", 3, 2.0),
    price("ETH", "2025-01-01 00:01:00", "price_unavailable", None, 0, None),
    price("USDC", "2024-12-31 23:30:00", "ok", "1.0001", 2, 0.5),
]


def dead_letter(source, stage, reason, processed):
    return DeadLetterRow(
        dead_letter_id=deterministic_id(source, stage, reason, processed),
        source=source,
        stage=stage,
        error_reason=reason,
        error=f"{reason} in {stage}",
        raw_payload="{}",
        payload_encoding="utf-8",
        processing_time=ts(processed),
    )


DEAD_LETTERS = [
    dead_letter("market.prices.v1", "ValidatePrices", "stale_price", "2025-01-01 10:00:00"),
    dead_letter("market.prices.v1", "ValidatePrices", "stale_price", "2025-01-01 09:00:00"),
    dead_letter("market.prices.v1", "ValidatePrices", "stale_price", "2025-01-01 11:30:00"),
    dead_letter("market.prices.v1", "ParsePrices", "invalid_json", "2025-01-01 10:15:00"),
    dead_letter("settlements.v1", "ParseSettlements", "invalid_json", "2025-01-02 08:00:00"),
]


def health(account, at, zone, collateral, borrow, score, liquidation_prices=()):
    return MarginHealthRow(
        row_id=deterministic_id(account, ts(at)),
        account_id=account,
        event_ts=ts(at),
        trigger="settlement",
        collateral_usd=d(collateral),
        borrow_usd=d(borrow),
        health_score=d(score),
        zone=zone,
        liquidation_prices=list(liquidation_prices),
        price_status="ok",
    )


A_LIQ = LiquidationPrice(
    asset="ETH", liquidation_price=d("1840.08"), margin_call_price=d("2080.09")
)
MARGIN_HEALTH = [
    health("acct-a", "2025-01-01 10:00:00", "healthy", "250", "100", "150"),
    health("acct-a", "2025-01-01 10:05:00", "margin_call", "125", "100", "25", [A_LIQ]),
    health("acct-b", "2025-01-01 10:00:00", "liquidation", "110", "100", "10"),
    health("acct-b", "2025-01-01 10:10:00", "healthy", "140", "100", "40"),
    health("acct-c", "2025-01-01 10:02:00", "liquidation", "112.5", "100", "12.5"),
    health("acct-d", "2025-01-01 10:03:00", "no_debt", "50", "0", None),
    # Older than each account's latest row: only the hourly exposure view sees them.
    health("acct-a", "2025-01-01 09:30:00", "healthy", "300", "100", "200"),
    health("acct-b", "2024-12-31 23:59:59", "healthy", "200", "100", "100"),
]


def margin_event(account, at, event_type, zone, previous, score, alerted):
    return MarginEventRow(
        alert_id=deterministic_id(account, event_type, ts(at)),
        account_id=account,
        event_type=event_type,
        zone=zone,
        previous_zone=previous,
        health_score=d(score),
        event_ts=ts(at),
        alerted=alerted,
    )


MARGIN_EVENTS = [
    margin_event(
        "acct-a", "2025-01-01 09:00:00", "recovered", "healthy", "margin_call", "35", False
    ),
    margin_event(
        "acct-a", "2025-01-01 10:05:00", "margin_call", "margin_call", "healthy", "25", True
    ),
    margin_event(
        "acct-b", "2025-01-01 10:00:00", "liquidation", "liquidation", "healthy", "10", True
    ),
    margin_event(
        "acct-b", "2025-01-01 10:10:00", "recovered", "healthy", "liquidation", "40", True
    ),
]


def finding(activity_type, chain, at, confidence, impact, status):
    return SuspiciousActivityRow(
        activity_id=deterministic_id(activity_type, chain, ts(at)),
        activity_type=activity_type,
        chain_id=chain,
        wallet_addresses=["0xaaa", "0xbbb"],
        confidence_score=confidence,
        estimated_impact_usd=d(impact),
        evidence_metrics=json.dumps({"round_trips": 12, "threshold": 5}),
        detected_at=ts(at),
        status=status,
    )


FINDINGS = [
    finding("wash_trading", "eip155:1", "2025-01-01 10:00:00", 80.0, "1000.50", "open"),
    finding("wash_trading", "eip155:137", "2025-01-01 12:00:00", 95.5, None, "confirmed"),
    finding("rug_pull", "eip155:1", "2025-01-01 23:59:59", 70.0, "250000", "open"),
    finding("wash_trading", "eip155:1", "2025-01-02 00:00:01", 60.0, "10", "dismissed"),
]


def screening(address, kind, result, rule, version, score, hop, at, tx):
    return ComplianceScreeningRow(
        screening_id=deterministic_id(tx, address, rule),
        address=address,
        chain_id="eip155:1",
        screening_type=kind,
        screening_result=result,
        rule_id=rule,
        list_version=version,
        risk_score=score,
        hop_distance=hop,
        tx_hash=tx,
        screened_at=ts(at),
    )


SCREENINGS = [
    screening(
        "0xa1", "sanctions", "blocked", "ofac_sdn", "2025-11", 100, 0, "2025-11-20 10:00:00", "0x01"
    ),
    screening(
        "0xa1", "sanctions", "blocked", "ofac_sdn", "2025-11", 100, 0, "2025-11-21 10:00:00", "0x02"
    ),
    screening(
        "0xa2", "exposure", "flagged", "ofac_sdn", "2025-11", 60, 1, "2025-11-20 12:00:00", "0x03"
    ),
    screening(
        "0xa3", "sanctions", "blocked", "ofac_sdn", "2024-09", 100, 0, "2024-10-01 00:00:00", "0x04"
    ),
    screening(
        "0xa4", "sanctions", "clear", "ofac_sdn", "2025-11", 0, None, "2025-11-20 13:00:00", "0x05"
    ),
    screening(
        "0xa5", "aml", "flagged", "aml_structuring", None, 70, None, "2025-11-20 14:00:00", "0x06"
    ),
]


def var_row(account, at, method, level, var, es):
    return PortfolioVarRow(
        var_id=deterministic_id(account, ts(at), method, level),
        account_id=account,
        as_of=ts(at),
        method=method,
        level=level,
        horizon_days=1,
        portfolio_value_usd=d("1000"),
        var_usd=d(var),
        es_usd=d(es),
        n_scenarios=500,
        n_positions=2,
        window_start=ts(at) - timedelta(days=30),
        window_end=ts(at),
    )


PORTFOLIO_VAR = [
    # acct-a historical 99 %: two VaRs on 2025-01-01 and 2025-01-02 (the later one of each day
    # counts), none on 2025-01-03.
    var_row("acct-a", "2025-01-01 10:00:00", "historical", 0.99, "100", "130"),
    var_row("acct-a", "2025-01-01 23:00:00", "historical", 0.99, "120", "150"),
    var_row("acct-a", "2025-01-02 12:00:00", "historical", 0.99, "150", "180"),
    var_row("acct-a", "2025-01-02 01:00:00", "historical", 0.99, "90", "110"),
    var_row("acct-a", "2025-01-04 09:00:00", "historical", 0.99, "135", "170"),
    # Another level of the same account and method: its own series.
    var_row("acct-a", "2025-01-02 12:00:00", "historical", 0.95, "60", "80"),
    var_row("acct-a", "2025-01-01 12:00:00", "parametric", 0.99, "80", "92.5"),
    var_row("acct-a", "2025-01-02 12:00:00", "parametric", 0.99, "80", "95"),
    # Two seconds apart, but on two UTC days.
    var_row("acct-b", "2024-12-31 23:59:59", "historical", 0.99, "10.5", "12"),
    var_row("acct-b", "2025-01-01 00:00:01", "historical", 0.99, "11.25", "13"),
    # A zero VaR before: the change is 5 USD, the percentage is NULL.
    var_row("acct-c", "2025-01-01 12:00:00", "parametric", 0.99, "0", "0"),
    var_row("acct-c", "2025-01-02 12:00:00", "parametric", 0.99, "5", "6"),
]


def backtest(subject, at, method, level, n_obs, exceptions, kupiec, lr_ind, lr_cc, light):
    return VarBacktestRow(
        backtest_id=deterministic_id(subject, ts(at), method, level, n_obs),
        subject=subject,
        as_of=ts(at),
        method=method,
        level=level,
        n_obs=n_obs,
        exceptions=exceptions,
        kupiec_lr=None if kupiec is None else kupiec[0],
        kupiec_pvalue=None if kupiec is None else kupiec[1],
        christoffersen_lr_ind=lr_ind,
        christoffersen_lr_cc=lr_cc,
        traffic_light=light,
    )


LR_CC_QUARTER = 2 * math.log(4)  # chi-square(2) survival exp(-x / 2) = 0.25
VAR_BACKTESTS = [
    backtest(
        "BTC", "2025-01-01 00:00:00", "historical", 0.99, 250, 3, (0.1, 0.75), 0.05, 0.15, "green"
    ),
    backtest(
        "BTC",
        "2025-01-02 00:00:00",
        "historical",
        0.99,
        251,
        6,
        (3.2, 0.07),
        4.5,
        LR_CC_QUARTER,
        "yellow",
    ),
    backtest(
        "BTC", "2025-01-02 00:00:00", "parametric", 0.99, 250, 12, (15.0, 0.0001), None, None, "red"
    ),
    backtest(
        "BTC", "2025-01-01 00:00:00", "historical", 0.95, 250, 14, (0.3, 0.6), 1.0, 1.3, "green"
    ),
    backtest(
        "acct-a", "2025-01-02 00:00:00", "historical", 0.975, 40, 1, (0.0, 1.0), 0.0, 0.0, None
    ),
]


def assessment(protocol, chain, at, score, level, factors, tvl, version):
    return ProtocolRiskAssessmentRow(
        assessment_id=deterministic_id(protocol, chain, ts(at)),
        protocol_name=protocol,
        protocol_address="0xpool",
        chain_id=chain,
        overall_risk_score=score,
        risk_level=level,
        risk_factors=[RiskFactor(factor=f, score=s, weight=w, details=x) for f, s, w, x in factors],
        tvl_usd=d(tvl),
        methodology_version=version,
        assessed_at=ts(at),
    )


ASSESSMENTS = [
    assessment(
        "Aave V3",
        "eip155:1",
        "2025-01-01 00:00:00",
        30.0,
        "medium",
        [("audit", 20.0, 0.5, "two audits"), ("tvl_concentration", 40.0, 0.5, None)],
        "1000000.5",
        "v1",
    ),
    assessment(
        "Aave V3",
        "eip155:1",
        "2025-01-02 00:00:00",
        45.5,
        "medium",
        [
            ("exploit_history", 70.0, 0.4, "2023 incident"),
            ("audit", 20.0, 0.3, None),
            ("tvl_concentration", 30.0, 0.3, "top 10 wallets hold 40 %"),
        ],
        "2500000.123456789",
        "v2",
    ),
    assessment("Aave V3", "eip155:137", "2025-01-01 12:00:00", 80.0, "critical", [], None, "v2"),
    assessment(
        "Curve",
        "eip155:1",
        "2025-01-02 00:00:00",
        10.0,
        "low",
        [("audit", 10.0, 1.0, "verified")],
        "5",
        "v2",
    ),
]

MARGIN_ALERT = MarginAlert(
    alert_id="alert-1",
    account_id="acct-a",
    event_type="margin_call",
    zone="margin_call",
    previous_zone="healthy",
    health_score=Decimal("25"),
    collateral_usd=Decimal("125"),
    borrow_usd=Decimal("100"),
    price_status="ok",
    event_ts=ts("2025-01-01 10:05:00"),
)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    write_parquet(out, "prices", PRICES[:3], "part-0.parquet")  # two files: both are loaded
    write_parquet(out, "prices", PRICES[3:], "part-1.parquet")
    write_parquet(out, "dead_letter", DEAD_LETTERS)
    write_parquet(out, "margin_health", MARGIN_HEALTH)
    write_parquet(out, "margin_events", MARGIN_EVENTS)
    write_parquet(out, "suspicious_activities", FINDINGS)
    write_parquet(out, "compliance_screenings", SCREENINGS)
    write_parquet(out, "portfolio_var", PORTFOLIO_VAR)
    write_parquet(out, "var_backtests", VAR_BACKTESTS)
    write_parquet(out, "protocol_risk_assessments", ASSESSMENTS)
    (out / "tables" / "smart_contract_vulnerabilities").mkdir(parents=True)  # no files in it
    (out / "alerts").mkdir()
    (out / "alerts" / "alerts.margin.v1.jsonl").write_text(to_json(MARGIN_ALERT) + "\n")
    report = build_warehouse(out)
    return out, report


def query(out: Path, sql: str) -> list[dict]:
    return run_sql(out / "warehouse.duckdb", sql).to_pylist()


# ------------------------------------------------------------------------------------ tables
def test_every_table_exists_with_its_row_count(warehouse):
    out, report = warehouse
    assert report.tables == {
        "prices": 6,
        "portfolio_var": 12,
        "var_backtests": 5,
        "margin_health": 8,
        "margin_events": 4,
        "suspicious_activities": 4,
        "compliance_screenings": 6,
        "protocol_risk_assessments": 4,
        "smart_contract_vulnerabilities": 0,
        "dead_letter": 5,
        "alerts_margin": 1,
        "alerts_surveillance": 0,
        "alerts_compliance": 0,
    }
    assert (out / "warehouse.duckdb").exists()
    assert not list(out.glob("warehouse.duckdb.*"))  # no build leftovers
    assert any("smart_contract_vulnerabilities" in n and "created empty" in n for n in report.notes)


def test_tables_have_the_contract_columns_and_types(warehouse):
    out, _ = warehouse
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    try:
        for table in TABLES:  # loaded and empty tables alike
            fields = json.loads((SCHEMA_DIR / "bigquery" / f"{table}.json").read_text())
            described = con.execute(f'DESCRIBE "{table}"').fetchall()
            assert [(c[0], c[1]) for c in described] == [
                (f["name"], _normalised(con, duckdb_type(f))) for f in fields
            ], table
            required = {f["name"] for f in fields if f["mode"] == "REQUIRED"}
            assert {c[0] for c in described if c[2] == "NO"} == required, table
    finally:
        con.close()


def _normalised(con, type_sql: str) -> str:
    # DuckDB spells types its own way (TIMESTAMP WITH TIME ZONE); ask it.
    return con.execute(f"SELECT typeof(CAST(NULL AS {type_sql}))").fetchone()[0]


def test_type_mapping_of_bigquery_fields():
    assert duckdb_type({"name": "x", "type": "NUMERIC", "mode": "NULLABLE"}) == "DECIMAL(38, 9)"
    assert duckdb_type({"name": "x", "type": "TIMESTAMP", "mode": "REQUIRED"}) == "TIMESTAMPTZ"
    assert duckdb_type({"name": "x", "type": "STRING", "mode": "REPEATED"}) == "VARCHAR[]"
    nested = {
        "name": "factors",
        "type": "RECORD",
        "mode": "REPEATED",
        "fields": [
            {"name": "factor", "type": "STRING", "mode": "REQUIRED"},
            {"name": "score", "type": "FLOAT64", "mode": "REQUIRED"},
        ],
    }
    assert duckdb_type(nested) == 'STRUCT("factor" VARCHAR, "score" DOUBLE)[]'
    with pytest.raises(WarehouseError, match="GEOGRAPHY"):
        duckdb_type({"name": "g", "type": "GEOGRAPHY", "mode": "NULLABLE"})


def test_values_round_trip_exactly(warehouse):
    out, _ = warehouse
    (btc,) = query(
        out, "SELECT * FROM risk.prices WHERE event_time = TIMESTAMP '2025-01-01 00:02:00'"
    )
    assert btc["price"] == Decimal("42050.000000001")  # NUMERIC keeps its 9 decimals
    assert btc["event_time"] == ts("2025-01-01 00:02:00")
    assert btc["sources"] == ["chainlink", "pyth", "cex"]
    (a,) = query(
        out, "SELECT liquidation_prices FROM risk.margin_health WHERE zone = 'margin_call'"
    )
    assert a["liquidation_prices"] == [
        {
            "asset": "ETH",
            "liquidation_price": Decimal("1840.08"),
            "margin_call_price": Decimal("2080.09"),
        }
    ]
    (alert,) = query(out, "SELECT * FROM risk.alerts_margin")
    assert alert["alert_id"] == "alert-1" and alert["health_score"] == Decimal("25")
    assert alert["event_ts"] == ts("2025-01-01 10:05:00")


# ------------------------------------------------------------------------------------- views
def test_all_views_are_created(warehouse):
    _, report = warehouse
    assert sorted(report.views) == sorted(p.stem for p in view_files(SQL_DIR))
    assert sorted(report.views) == [
        "dead_letters_by_reason",
        "latest_margin_health",
        "latest_prices",
        "open_margin_calls",
        "price_status_daily",
        "protocol_risk_response",
        "recent_portfolio_exposures",
        "recent_portfolio_exposures_mv",
        "sanctions_hits_by_list_version",
        "suspicious_activity_summary",
        "var_backtest_zones",
        "var_trend",
    ]
    # open_margin_calls reads latest_margin_health, so that one is created first.
    assert report.views.index("latest_margin_health") < report.views.index("open_margin_calls")
    assert report.views.index("recent_portfolio_exposures_mv") < report.views.index(
        "recent_portfolio_exposures"
    )
    assert (
        report.notes.count(
            "materialized view recent_portfolio_exposures_mv created as a plain view in DuckDB"
        )
        == 1
    )


def test_latest_prices(warehouse):
    out, _ = warehouse
    before = datetime.now(UTC)
    rows = query(out, "SELECT * FROM risk.latest_prices ORDER BY asset")
    after = datetime.now(UTC)
    got = [
        (
            r["asset"],
            r["price"],
            r["status"],
            r["n_sources"],
            r["spread_bps"],
            r["event_time"],
            r["lag_seconds"],
        )
        for r in rows
    ]
    assert got == [
        ("BTC", Decimal("42050.000000001"), "ok", 3, 5.0, ts("2025-01-01 00:02:00"), 0),
        ("ETH", None, "price_unavailable", 0, None, ts("2025-01-01 00:01:00"), 60),
        ("USDC", Decimal("1.0001"), "ok", 2, 0.5, ts("2024-12-31 23:30:00"), 1920),
    ]
    for r in rows:  # wall-clock age, in whole seconds
        low = int((before - r["event_time"]).total_seconds())
        high = int((after - r["event_time"]).total_seconds())
        assert low <= r["age_seconds"] <= high
    assert [r["price_id"] for r in rows] == [
        PRICES[2].price_id,
        PRICES[4].price_id,
        PRICES[5].price_id,
    ]


def test_price_status_daily(warehouse):
    out, _ = warehouse
    rows = query(out, "SELECT * FROM risk.price_status_daily ORDER BY price_date, asset")
    avg_btc = rows[2].pop("avg_price")
    assert avg_btc == pytest.approx((42050.000000001 + 42100.25) / 2)
    for r in rows[:2] + rows[3:]:
        r["avg_price"] = pytest.approx(r["avg_price"])
    assert rows == [
        # BTC's 23:59 window belongs to 2024-12-31 in UTC.
        {
            "price_date": date(2024, 12, 31),
            "asset": "BTC",
            "n_windows": 1,
            "n_ok": 1,
            "n_degraded": 0,
            "n_price_unavailable": 0,
            "min_price": Decimal("42000.5"),
            "max_price": Decimal("42000.5"),
            "avg_price": 42000.5,
        },
        {
            "price_date": date(2024, 12, 31),
            "asset": "USDC",
            "n_windows": 1,
            "n_ok": 1,
            "n_degraded": 0,
            "n_price_unavailable": 0,
            "min_price": Decimal("1.0001"),
            "max_price": Decimal("1.0001"),
            "avg_price": 1.0001,
        },
        {
            "price_date": date(2025, 1, 1),
            "asset": "BTC",
            "n_windows": 2,
            "n_ok": 1,
            "n_degraded": 1,
            "n_price_unavailable": 0,
            "min_price": Decimal("42050.000000001"),
            "max_price": Decimal("42100.25"),
        },
        {
            "price_date": date(2025, 1, 1),
            "asset": "ETH",
            "n_windows": 2,
            "n_ok": 1,
            "n_degraded": 0,
            "n_price_unavailable": 1,
            "min_price": Decimal("2300.1"),
            "max_price": Decimal("2300.1"),
            "avg_price": 2300.1,
        },
    ]


def test_dead_letters_by_reason(warehouse):
    out, _ = warehouse
    rows = query(
        out, "SELECT * FROM risk.dead_letters_by_reason ORDER BY source, stage, error_reason"
    )
    assert [tuple(r.values()) for r in rows] == [
        (
            "market.prices.v1",
            "ParsePrices",
            "invalid_json",
            1,
            ts("2025-01-01 10:15:00"),
            ts("2025-01-01 10:15:00"),
        ),
        (
            "market.prices.v1",
            "ValidatePrices",
            "stale_price",
            3,
            ts("2025-01-01 09:00:00"),
            ts("2025-01-01 11:30:00"),
        ),
        (
            "settlements.v1",
            "ParseSettlements",
            "invalid_json",
            1,
            ts("2025-01-02 08:00:00"),
            ts("2025-01-02 08:00:00"),
        ),
    ]
    assert list(rows[0]) == [
        "source",
        "stage",
        "error_reason",
        "n_dead_letters",
        "first_processing_time",
        "last_processing_time",
    ]


def test_latest_margin_health(warehouse):
    out, _ = warehouse
    rows = query(
        out,
        "SELECT account_id, event_ts, zone, health_score FROM risk.latest_margin_health ORDER BY 1",
    )
    assert [tuple(r.values()) for r in rows] == [
        ("acct-a", ts("2025-01-01 10:05:00"), "margin_call", Decimal("25")),
        ("acct-b", ts("2025-01-01 10:10:00"), "healthy", Decimal("40")),
        ("acct-c", ts("2025-01-01 10:02:00"), "liquidation", Decimal("12.5")),
        ("acct-d", ts("2025-01-01 10:03:00"), "no_debt", None),
    ]


def test_open_margin_calls(warehouse):
    out, _ = warehouse
    rows = query(out, "SELECT * FROM risk.open_margin_calls ORDER BY account_id")
    assert rows == [
        {
            "account_id": "acct-a",
            "zone": "margin_call",
            "health_score": Decimal("25"),
            "collateral_usd": Decimal("125"),
            "borrow_usd": Decimal("100"),
            "price_status": "ok",
            "health_ts": ts("2025-01-01 10:05:00"),
            "last_event_type": "margin_call",
            "last_event_zone": "margin_call",
            "last_event_previous_zone": "healthy",
            "last_event_health_score": Decimal("25"),
            "last_event_ts": ts("2025-01-01 10:05:00"),
            "last_event_alerted": True,
            "last_alert_id": MARGIN_EVENTS[1].alert_id,
        },
        # acct-c is in liquidation but has no margin event: the last_event_* columns are NULL.
        {
            "account_id": "acct-c",
            "zone": "liquidation",
            "health_score": Decimal("12.5"),
            "collateral_usd": Decimal("112.5"),
            "borrow_usd": Decimal("100"),
            "price_status": "ok",
            "health_ts": ts("2025-01-01 10:02:00"),
            "last_event_type": None,
            "last_event_zone": None,
            "last_event_previous_zone": None,
            "last_event_health_score": None,
            "last_event_ts": None,
            "last_event_alerted": None,
            "last_alert_id": None,
        },
    ]


def test_suspicious_activity_summary(warehouse):
    out, _ = warehouse
    rows = query(
        out, "SELECT * FROM risk.suspicious_activity_summary ORDER BY activity_date, activity_type"
    )
    assert [tuple(r.values()) for r in rows] == [
        (date(2025, 1, 1), "rug_pull", 1, 1, 0, 0, 1, 70.0, Decimal("250000"), 0),
        (date(2025, 1, 1), "wash_trading", 2, 1, 1, 0, 2, 95.5, Decimal("1000.50"), 1),
        (date(2025, 1, 2), "wash_trading", 1, 0, 0, 1, 1, 60.0, Decimal("10"), 0),
    ]
    assert list(rows[0]) == [
        "activity_date",
        "activity_type",
        "n_findings",
        "n_open",
        "n_confirmed",
        "n_dismissed",
        "n_chains",
        "max_confidence_score",
        "total_estimated_impact_usd",
        "n_without_impact",
    ]


def test_sanctions_hits_by_list_version(warehouse):
    out, _ = warehouse
    rows = query(
        out, "SELECT * FROM risk.sanctions_hits_by_list_version ORDER BY list_version, rule_id"
    )
    assert rows == [
        {
            "list_version": "2024-09",
            "rule_id": "ofac_sdn",
            "n_hits": 1,
            "n_flagged": 0,
            "n_blocked": 1,
            "n_direct": 1,
            "n_exposure": 0,
            "n_addresses": 1,
            "max_risk_score": 100.0,
            "first_screened_at": ts("2024-10-01 00:00:00"),
            "last_screened_at": ts("2024-10-01 00:00:00"),
        },
        # 0xa1 was blocked twice: two hits, one address; the clear and the AML rows do not count.
        {
            "list_version": "2025-11",
            "rule_id": "ofac_sdn",
            "n_hits": 3,
            "n_flagged": 1,
            "n_blocked": 2,
            "n_direct": 2,
            "n_exposure": 1,
            "n_addresses": 2,
            "max_risk_score": 100.0,
            "first_screened_at": ts("2025-11-20 10:00:00"),
            "last_screened_at": ts("2025-11-21 10:00:00"),
        },
    ]


def test_recent_portfolio_exposures_mv_sums_per_account_and_hour(warehouse):
    out, _ = warehouse
    rows = query(out, "SELECT * FROM risk.recent_portfolio_exposures_mv ORDER BY account_id, hour")
    assert list(rows[0]) == [
        "account_id",
        "hour",
        "n_updates",
        "sum_collateral_usd",
        "sum_borrow_usd",
        "min_collateral_usd",
        "max_collateral_usd",
        "max_borrow_usd",
        "min_health_score",
        "n_margin_call",
        "n_liquidation",
        "first_event_ts",
        "last_event_ts",
    ]
    D = Decimal
    assert [tuple(r.values()) for r in rows] == [
        # acct-a 09:30 alone in its hour; 10:00 (250/100) and 10:05 (125/100, margin call).
        (
            "acct-a",
            ts("2025-01-01 09:00:00"),
            1,
            D("300"),
            D("100"),
            D("300"),
            D("300"),
            D("100"),
            D("200"),
            0,
            0,
            ts("2025-01-01 09:30:00"),
            ts("2025-01-01 09:30:00"),
        ),
        (
            "acct-a",
            ts("2025-01-01 10:00:00"),
            2,
            D("375"),
            D("200"),
            D("125"),
            D("250"),
            D("100"),
            D("25"),
            1,
            0,
            ts("2025-01-01 10:00:00"),
            ts("2025-01-01 10:05:00"),
        ),
        # 23:59:59 belongs to the 23:00 hour of 2024-12-31, not to 2025-01-01.
        (
            "acct-b",
            ts("2024-12-31 23:00:00"),
            1,
            D("200"),
            D("100"),
            D("200"),
            D("200"),
            D("100"),
            D("100"),
            0,
            0,
            ts("2024-12-31 23:59:59"),
            ts("2024-12-31 23:59:59"),
        ),
        # 110/100 (liquidation) and 140/100 (healthy).
        (
            "acct-b",
            ts("2025-01-01 10:00:00"),
            2,
            D("250"),
            D("200"),
            D("110"),
            D("140"),
            D("100"),
            D("10"),
            0,
            1,
            ts("2025-01-01 10:00:00"),
            ts("2025-01-01 10:10:00"),
        ),
        (
            "acct-c",
            ts("2025-01-01 10:00:00"),
            1,
            D("112.5"),
            D("100"),
            D("112.5"),
            D("112.5"),
            D("100"),
            D("12.5"),
            0,
            1,
            ts("2025-01-01 10:02:00"),
            ts("2025-01-01 10:02:00"),
        ),
        # No debt: borrow sums to 0 and the health score is NULL.
        (
            "acct-d",
            ts("2025-01-01 10:00:00"),
            1,
            D("50"),
            D("0"),
            D("50"),
            D("50"),
            D("0"),
            None,
            0,
            0,
            ts("2025-01-01 10:03:00"),
            ts("2025-01-01 10:03:00"),
        ),
    ]
    # Sums and counts add up across hours: acct-a's average collateral over both hours.
    (a,) = query(
        out,
        "SELECT SUM(sum_collateral_usd) / SUM(n_updates) AS avg_collateral "
        "FROM risk.recent_portfolio_exposures_mv WHERE account_id = 'acct-a'",
    )
    assert float(a["avg_collateral"]) == pytest.approx((300 + 250 + 125) / 3)
    # The fixture's data is from 2025: nothing is in the last 24 hours.
    assert query(out, "SELECT * FROM risk.recent_portfolio_exposures") == []


def test_recent_portfolio_exposures_mv_obeys_incremental_rules():
    # BigQuery refreshes a materialized view incrementally only within these rules (sql/README.md).
    path = SQL_DIR / "views" / "risk" / "recent_portfolio_exposures_mv.sql"
    statement = sqlglot.parse_one(path.read_text(), read="bigquery")
    properties = statement.args["properties"].expressions
    assert any(isinstance(p, sqlglot.exp.MaterializedProperty) for p in properties)
    options = {
        p.name: p.args["value"].sql("bigquery")
        for p in properties
        if type(p) is sqlglot.exp.Property
    }
    assert options == {"enable_refresh": "TRUE", "refresh_interval_minutes": "1"}
    select = statement.expression
    assert isinstance(select, sqlglot.exp.Select)
    (table,) = list(select.find_all(sqlglot.exp.Table))
    assert (table.db, table.name) == ("risk", "margin_health")
    for forbidden in (
        sqlglot.exp.Join,
        sqlglot.exp.Subquery,
        sqlglot.exp.Union,
        sqlglot.exp.Window,
        sqlglot.exp.CurrentTimestamp,
        sqlglot.exp.CurrentDate,
        sqlglot.exp.CurrentDatetime,
        sqlglot.exp.CurrentTime,
        sqlglot.exp.Rand,
    ):
        assert not list(select.find_all(forbidden)), forbidden.__name__
    assert select.args.get("qualify") is None  # a deterministic WHERE would be allowed
    supported = (
        sqlglot.exp.Count,
        sqlglot.exp.CountIf,
        sqlglot.exp.Sum,
        sqlglot.exp.Min,
        sqlglot.exp.Max,
        sqlglot.exp.Avg,
        sqlglot.exp.ApproxDistinct,
    )
    aggregates = list(select.find_all(sqlglot.exp.AggFunc))
    assert aggregates and all(isinstance(a, supported) for a in aggregates)
    assert select.args.get("group") is not None
    # Partitioned by DATE(hour), hour = TIMESTAMP_TRUNC of the base table's partitioning column.
    (partition,) = [p for p in properties if isinstance(p, sqlglot.exp.PartitionedByProperty)]
    assert partition.this.sql("bigquery") == "DATE(hour)"
    (hour,) = [e for e in select.expressions if e.alias_or_name == "hour"]
    assert (
        hour.this.sql("bigquery")
        == f"TIMESTAMP_TRUNC({TABLES['margin_health'].event_time_field}, HOUR)"
    )
    assert "hour" in [g.name for g in select.args["group"].expressions]


def test_recent_portfolio_exposures_keeps_the_last_24_hours(tmp_path):
    # The window is relative to now, so the rows are too. Hours are whole UTC hours.
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)

    def at(account, when, collateral):
        return MarginHealthRow(
            row_id=deterministic_id(account, when),
            account_id=account,
            event_ts=when,
            trigger="snapshot",
            collateral_usd=d(collateral),
            borrow_usd=d("100"),
            health_score=d(collateral) - 100,
            zone="healthy",
            price_status="ok",
        )

    write_parquet(
        tmp_path,
        "margin_health",
        [
            at("acct-x", now, "300"),  # the current hour: kept
            at("acct-x", now - timedelta(hours=22), "250"),  # kept
            at("acct-x", now - timedelta(hours=25), "400"),  # dropped
            at("acct-y", now - timedelta(hours=48), "500"),  # dropped
            at("acct-y", hour - timedelta(hours=23), "200"),  # first kept hour
            at("acct-y", hour - timedelta(hours=23, seconds=1), "210"),  # the hour before: dropped
        ],
    )
    build_warehouse(tmp_path)
    rows = query(
        tmp_path, "SELECT * FROM risk.recent_portfolio_exposures ORDER BY account_id, hour"
    )
    still_same_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) == hour
    got = [(r["account_id"], r["hour"], r["n_updates"], r["sum_collateral_usd"]) for r in rows]
    expected = [
        ("acct-x", hour - timedelta(hours=22), 1, Decimal("250")),
        ("acct-x", hour, 1, Decimal("300")),
        ("acct-y", hour - timedelta(hours=23), 1, Decimal("200")),
    ]
    if still_same_hour:
        assert got == expected
    else:  # the hour turned during the test: only the rows far from the edge are certain
        assert expected[:2] == [g for g in got if g[0] == "acct-x"]
    # The materialized view keeps every hour; only the plain view filters.
    assert query(tmp_path, "SELECT COUNT(*) AS n FROM risk.recent_portfolio_exposures_mv") == [
        {"n": 6}
    ]


def test_var_trend(warehouse):
    out, _ = warehouse
    rows = query(out, "SELECT * FROM risk.var_trend ORDER BY account_id, method, level, var_date")
    assert list(rows[0]) == [
        "account_id",
        "method",
        "level",
        "horizon_days",
        "var_date",
        "as_of",
        "portfolio_value_usd",
        "var_usd",
        "es_usd",
        "previous_var_date",
        "previous_var_usd",
        "previous_es_usd",
        "var_change_usd",
        "es_change_usd",
        "var_change_pct",
        "var_id",
    ]
    for r in rows:
        assert r.pop("horizon_days") == 1 and r.pop("portfolio_value_usd") == Decimal("1000")
        pct = r.pop("var_change_pct")
        r["var_change_pct"] = None if pct is None else round(pct, 9)
    by_id = {v.var_id: v for v in PORTFOLIO_VAR}
    assert all(by_id[r.pop("var_id")].as_of == r["as_of"] for r in rows)
    D = Decimal
    got = [tuple(r.values()) for r in rows]
    assert got == [
        # (account, method, level, day, as_of of the day's latest VaR, VaR, ES,
        #  previous day, its VaR, its ES, VaR change, ES change, VaR change in %)
        ("acct-a", "historical", 0.95, date(2025, 1, 2), ts("2025-01-02 12:00:00"),
         D("60"), D("80"), None, None, None, None, None, None),
        # 23:00 is the day's latest, not 10:00.
        ("acct-a", "historical", 0.99, date(2025, 1, 1), ts("2025-01-01 23:00:00"),
         D("120"), D("150"), None, None, None, None, None, None),
        # 12:00 (150) is the latest of 2025-01-02 even though 01:00 (90) was written after it:
        # 150 - 120 = +30 (+25 %), ES 180 - 150 = +30.
        ("acct-a", "historical", 0.99, date(2025, 1, 2), ts("2025-01-02 12:00:00"),
         D("150"), D("180"), date(2025, 1, 1), D("120"), D("150"), D("30"), D("30"), 25.0),
        # No VaR on 2025-01-03: compared with 2025-01-02. 135 - 150 = -15 (-10 %), 170 - 180.
        ("acct-a", "historical", 0.99, date(2025, 1, 4), ts("2025-01-04 09:00:00"),
         D("135"), D("170"), date(2025, 1, 2), D("150"), D("180"), D("-15"), D("-10"), -10.0),
        ("acct-a", "parametric", 0.99, date(2025, 1, 1), ts("2025-01-01 12:00:00"),
         D("80"), D("92.5"), None, None, None, None, None, None),
        ("acct-a", "parametric", 0.99, date(2025, 1, 2), ts("2025-01-02 12:00:00"),
         D("80"), D("95"), date(2025, 1, 1), D("80"), D("92.5"), D("0"), D("2.5"), 0.0),
        # Two seconds apart across midnight UTC: two days. 0.75 / 10.5 = 7.142857142857 %.
        ("acct-b", "historical", 0.99, date(2024, 12, 31), ts("2024-12-31 23:59:59"),
         D("10.5"), D("12"), None, None, None, None, None, None),
        ("acct-b", "historical", 0.99, date(2025, 1, 1), ts("2025-01-01 00:00:01"),
         D("11.25"), D("13"), date(2024, 12, 31), D("10.5"), D("12"), D("0.75"), D("1"),
         round(0.75 / 10.5 * 100, 9)),
        ("acct-c", "parametric", 0.99, date(2025, 1, 1), ts("2025-01-01 12:00:00"),
         D("0"), D("0"), None, None, None, None, None, None),
        # The previous VaR is 0: +5 USD, no percentage.
        ("acct-c", "parametric", 0.99, date(2025, 1, 2), ts("2025-01-02 12:00:00"),
         D("5"), D("6"), date(2025, 1, 1), D("0"), D("0"), D("5"), D("6"), None),
    ]  # fmt: skip


def test_var_backtest_zones(warehouse):
    out, _ = warehouse
    rows = query(out, "SELECT * FROM risk.var_backtest_zones ORDER BY subject, method, level")
    assert list(rows[0]) == [
        "subject",
        "method",
        "level",
        "as_of",
        "traffic_light",
        "previous_traffic_light",
        "previous_as_of",
        "n_backtests",
        "n_obs",
        "exceptions",
        "expected_exceptions",
        "exception_rate",
        "kupiec_lr",
        "kupiec_pvalue",
        "kupiec_rejected_5pct",
        "christoffersen_lr_ind",
        "christoffersen_ind_rejected_5pct",
        "christoffersen_lr_cc",
        "christoffersen_cc_pvalue",
        "backtest_id",
    ]
    approx = ("expected_exceptions", "exception_rate", "christoffersen_cc_pvalue")
    for r in rows:
        for column in approx:
            r[column] = None if r[column] is None else pytest.approx(r[column])
    assert [r["backtest_id"] for r in rows] == [
        VAR_BACKTESTS[3].backtest_id,
        VAR_BACKTESTS[1].backtest_id,
        VAR_BACKTESTS[2].backtest_id,
        VAR_BACKTESTS[4].backtest_id,
    ]
    got = [tuple(v for k, v in r.items() if k != "backtest_id") for r in rows]
    assert got == [
        # Same subject and method at 95 %: a series of its own (250 * 0.05 = 12.5 expected).
        ("BTC", "historical", 0.95, ts("2025-01-01 00:00:00"), "green", None, None, 1,
         250, 14, 12.5, 14 / 250, 0.3, 0.6, False, 1.0, False, 1.3, math.exp(-0.65)),
        # The latest of two: green -> yellow. LR_ind 4.5 > 3.84 rejects independence;
        # LR_cc = 2 ln 4 has p-value exactly 0.25. 251 * 0.01 = 2.51 expected.
        ("BTC", "historical", 0.99, ts("2025-01-02 00:00:00"), "yellow", "green",
         ts("2025-01-01 00:00:00"), 2, 251, 6, 2.51, 6 / 251, 3.2, 0.07, False, 4.5, True,
         LR_CC_QUARTER, 0.25),
        # No Christoffersen statistics: NULL flag and p-value; Kupiec p 0.0001 rejects.
        ("BTC", "parametric", 0.99, ts("2025-01-02 00:00:00"), "red", None, None, 1,
         250, 12, 2.5, 12 / 250, 15.0, 0.0001, True, None, None, None, None),
        # No zone stored: NULL, not recomputed. 40 days at 97.5 % expect 1 exception; LR_cc 0
        # gives p-value 1.
        ("acct-a", "historical", 0.975, ts("2025-01-02 00:00:00"), None, None, None, 1,
         40, 1, 1.0, 1 / 40, 0.0, 1.0, False, 0.0, False, 0.0, 1.0),
    ]  # fmt: skip


def test_protocol_risk_response(warehouse):
    out, _ = warehouse
    rows = query(out, "SELECT * FROM risk.protocol_risk_response ORDER BY protocol_name, chain_id")
    assert rows == [
        # The 2025-01-02 assessment replaces the 2025-01-01 one; factors keep their order.
        {
            "protocol_name": "Aave V3",
            "chain_id": "eip155:1",
            "overall_risk_score": 45.5,
            "risk_level": "medium",
            "risk_factors": [
                {
                    "factor": "exploit_history",
                    "score": 70.0,
                    "weight": 0.4,
                    "details": "2023 incident",
                },
                {"factor": "audit", "score": 20.0, "weight": 0.3, "details": None},
                {
                    "factor": "tvl_concentration",
                    "score": 30.0,
                    "weight": 0.3,
                    "details": "top 10 wallets hold 40 %",
                },
            ],
            "tvl_usd": Decimal("2500000.123456789"),
            "assessed_at": ts("2025-01-02 00:00:00"),
            "methodology_version": "v2",
        },
        # Same protocol on another chain: its own row; no factors is an empty array.
        {
            "protocol_name": "Aave V3",
            "chain_id": "eip155:137",
            "overall_risk_score": 80.0,
            "risk_level": "critical",
            "risk_factors": [],
            "tvl_usd": None,
            "assessed_at": ts("2025-01-01 12:00:00"),
            "methodology_version": "v2",
        },
        {
            "protocol_name": "Curve",
            "chain_id": "eip155:1",
            "overall_risk_score": 10.0,
            "risk_level": "low",
            "risk_factors": [
                {"factor": "audit", "score": 10.0, "weight": 1.0, "details": "verified"}
            ],
            "tvl_usd": Decimal("5"),
            "assessed_at": ts("2025-01-02 00:00:00"),
            "methodology_version": "v2",
        },
    ]
    # The STRUCT fields are addressable by name, as in BigQuery.
    assert query(
        out,
        "SELECT f.factor, f.weight FROM risk.protocol_risk_response AS r, UNNEST(r.risk_factors) AS f "
        "WHERE r.chain_id = 'eip155:1' AND r.protocol_name = 'Aave V3' ORDER BY f.weight DESC, f.factor",
    ) == [
        {"factor": "exploit_history", "weight": 0.4},
        {"factor": "audit", "weight": 0.3},
        {"factor": "tvl_concentration", "weight": 0.3},
    ]


def test_dead_letters_by_reason_already_groups_by_stage(warehouse):
    # No separate dead_letters_by_reason_and_stage view: this one groups by source, stage, reason.
    statement = sqlglot.parse_one(
        (SQL_DIR / "views" / "ops" / "dead_letters_by_reason.sql").read_text(), read="bigquery"
    )
    group = statement.expression.args["group"].expressions
    assert [g.name for g in group] == ["source", "stage", "error_reason"]


def test_views_run_on_empty_tables(tmp_path):
    report = build_warehouse(tmp_path)
    assert set(report.tables.values()) == {0}
    assert len(report.views) == len(view_files(SQL_DIR))
    for view in report.views:
        assert run_sql(tmp_path / "warehouse.duckdb", f"SELECT * FROM risk.{view}").num_rows == 0


def test_rebuild_replaces_the_warehouse(tmp_path):
    write_parquet(tmp_path, "prices", PRICES)
    assert build_warehouse(tmp_path).tables["prices"] == 6
    write_parquet(tmp_path, "prices", PRICES[:1])  # same file name: overwritten
    assert build_warehouse(tmp_path).tables["prices"] == 1
    assert query(tmp_path, "SELECT count(*) AS n FROM risk.latest_prices") == [{"n": 1}]


def test_parquet_with_a_column_outside_the_contract_fails_the_load(tmp_path):
    folder = tmp_path / "tables" / "dead_letter"
    folder.mkdir(parents=True)
    rows = pa.Table.from_pylist([to_row(DEAD_LETTERS[0])], schema=arrow_schema(DeadLetterRow))
    pq.write_table(rows.append_column("surprise", pa.array([1])), folder / "part-0.parquet")
    with pytest.raises(WarehouseError, match="table dead_letter"):
        build_warehouse(tmp_path)
    assert not (tmp_path / "warehouse.duckdb").exists()


# ----------------------------------------------------------------------------- SQL files
SQL_FILES = sorted(SQL_DIR.rglob("*.sql"))


def test_there_are_sql_files():
    assert len(SQL_FILES) >= 7


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: str(p.relative_to(SQL_DIR)))
def test_sql_file_parses_as_bigquery(path):
    text = path.read_text()
    statements = sqlglot.parse(text, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    assert statements and all(s is not None for s in statements)
    if path.is_relative_to(SQL_DIR / "views"):
        assert text.startswith("--"), "a view file starts with a comment: what it answers, for whom"
        assert len([s for s in statements if isinstance(s, sqlglot.exp.Create)]) == 1


def _sql_dir_with(tmp_path: Path, name: str, body: str) -> Path:
    folder = tmp_path / "sql" / "views" / "test"
    folder.mkdir(parents=True)
    (folder / f"{name}.sql").write_text(body)
    return tmp_path / "sql"


def test_materialized_view_becomes_a_plain_view_with_a_note(tmp_path):
    sql_dir = _sql_dir_with(
        tmp_path,
        "recent_prices_mv",
        "-- test\nCREATE MATERIALIZED VIEW risk.recent_prices_mv\n"
        "OPTIONS (enable_refresh = true, refresh_interval_minutes = 1) AS\n"
        "SELECT asset, COUNT(*) AS n FROM risk.prices GROUP BY asset",
    )
    write_parquet(tmp_path / "out", "prices", PRICES)
    report = build_warehouse(tmp_path / "out", sql_dir=sql_dir)
    assert report.views == ["recent_prices_mv"]
    assert "materialized view recent_prices_mv created as a plain view in DuckDB" in report.notes
    got = query(tmp_path / "out", "SELECT * FROM risk.recent_prices_mv ORDER BY asset")
    assert got == [{"asset": "BTC", "n": 3}, {"asset": "ETH", "n": 2}, {"asset": "USDC", "n": 1}]


def test_untranslatable_sql_raises_naming_the_file(tmp_path):
    # DuckDB has no ARRAY_AGG(... LIMIT n); sqlglot refuses it under ErrorLevel.RAISE.
    sql_dir = _sql_dir_with(
        tmp_path,
        "top_prices",
        "CREATE OR REPLACE VIEW risk.top_prices AS\n"
        "SELECT asset, ARRAY_AGG(price ORDER BY event_time DESC LIMIT 2) AS last_two\n"
        "FROM risk.prices GROUP BY asset",
    )
    with pytest.raises(WarehouseError, match=r"views/test/top_prices\.sql.*cannot be translated"):
        build_warehouse(tmp_path / "out", sql_dir=sql_dir)
    assert not (tmp_path / "out" / "warehouse.duckdb").exists()


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("x", "CREATE VIEW risk.y AS SELECT 1 AS a", "must create risk.x"),
        ("x", "CREATE VIEW risk.x AS SELECT * FROM prices", "must be written risk.prices"),
        ("x", "CREATE VIEW risk.x AS SELECT * FROM risk.nope", "unknown table"),
        ("x", "CREATE VIEW risk.x AS SELECT * FROM other.prices", "outside dataset risk"),
        (
            "x",
            "CREATE VIEW risk.x AS SELECT 1 AS a; CREATE VIEW risk.x AS SELECT 2 AS a",
            "exactly one",
        ),
        ("x", "CREATE VIEW risk.x AS SELECT FROM WHERE", "not valid BigQuery"),
        (
            "x",
            "CREATE VIEW risk.x AS SELECT CAST(price AS BIGNUMERIC) AS p FROM risk.prices",
            "BIGNUMERIC",
        ),
        (
            "x",
            "CREATE VIEW risk.x AS WITH prices AS (SELECT 1 AS a) SELECT * FROM risk.prices",
            "shadows risk.prices",
        ),
    ],
)
def test_bad_view_files_raise_naming_the_file(tmp_path, name, body, message):
    sql_dir = _sql_dir_with(tmp_path, name, body)
    with pytest.raises(WarehouseError, match=message) as caught:
        build_warehouse(tmp_path / "out", sql_dir=sql_dir)
    assert f"{name}.sql" in str(caught.value)


def test_views_are_referenced_by_bare_name_in_duckdb():
    assert transpile("SELECT asset FROM risk.latest_prices") == "SELECT asset FROM latest_prices"
    project_qualified = transpile("SELECT p.asset FROM `my-project.risk.prices` AS p")
    assert project_qualified.replace('"', "") == "SELECT p.asset FROM prices AS p"


def test_run_sql_is_read_only(warehouse):
    out, _ = warehouse
    with pytest.raises(WarehouseError, match="only a query"):
        run_sql(out / "warehouse.duckdb", "DELETE FROM risk.prices WHERE TRUE")
    assert isinstance(run_sql(out / "warehouse.duckdb", "SELECT 1 AS one"), pa.Table)


# ------------------------------------------------------------------ BigQuery semantics kept
@pytest.mark.parametrize(
    ("end", "start", "unit", "bigquery"),
    [
        # Whole elapsed hours: 59 min 59 s is 0 hours, even across the 01:00 boundary.
        ("2025-01-01 00:59:59", "2025-01-01 00:00:00", "HOUR", 0),
        ("2025-01-01 01:00:00", "2025-01-01 00:59:59", "HOUR", 0),
        ("2025-01-01 02:00:00", "2025-01-01 00:59:59", "HOUR", 1),
        ("2025-01-02 01:00:00", "2025-01-01 23:00:00", "DAY", 0),
        ("2025-01-03 00:00:00", "2025-01-01 00:00:01", "DAY", 1),
        ("2025-01-01 00:01:00.5", "2025-01-01 00:00:59.9", "SECOND", 0),
        ("2025-01-01 00:00:01.5", "2025-01-01 00:00:00", "MILLISECOND", 1500),
        # Negative differences truncate towards zero, so swapping the arguments flips the sign.
        ("2025-01-01 00:00:00", "2025-01-01 01:00:00", "HOUR", -1),
        ("2025-01-01 00:59:59", "2025-01-01 02:00:00", "HOUR", -1),
        ("2025-01-01 00:00:00", "2025-01-01 00:59:59", "HOUR", 0),
    ],
)
def test_timestamp_diff_counts_whole_elapsed_units(warehouse, end, start, unit, bigquery):
    out, _ = warehouse
    sql = f"SELECT TIMESTAMP_DIFF(TIMESTAMP '{end}', TIMESTAMP '{start}', {unit}) AS n"
    assert query(out, sql) == [{"n": bigquery}]
    # String literals are coerced to TIMESTAMP, as in BigQuery.
    assert query(out, f"SELECT TIMESTAMP_DIFF('{end}', '{start}', {unit}) AS n") == [
        {"n": bigquery}
    ]


def test_plain_sqlglot_timestamp_diff_counts_boundaries():
    # Why the rewrite exists: sqlglot's own translation is DuckDB date_diff, which gives 1 here.
    plain = sqlglot.transpile(
        "SELECT TIMESTAMP_DIFF(TIMESTAMP '2025-01-01 01:00:00', TIMESTAMP '2025-01-01 00:59:59', HOUR)",
        read="bigquery",
        write="duckdb",
    )[0]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    assert con.execute(plain).fetchone()[0] == 1
    assert "DATE_DIFF" not in transpile("SELECT TIMESTAMP_DIFF(a, b, HOUR) FROM t")


def test_timestamp_diff_in_a_view_column(warehouse):
    out, _ = warehouse
    rows = query(
        out,
        "SELECT asset, TIMESTAMP_DIFF(event_time, window_start, MINUTE) AS m FROM risk.latest_prices",
    )
    assert {r["m"] for r in rows} == {1}


def test_approx_quantiles_returns_input_values_like_bigquery(warehouse):
    out, _ = warehouse
    data = "UNNEST([1, 1, 1, 4, 5, 6, 7, 8, 9, 10]) AS x"
    # The examples of BigQuery's APPROX_QUANTILES documentation.
    assert query(out, f"SELECT APPROX_QUANTILES(x, 2) AS q FROM {data}") == [{"q": [1, 5, 10]}]
    assert query(out, f"SELECT APPROX_QUANTILES(x, 2)[OFFSET(1)] AS q FROM {data}") == [{"q": 5}]
    assert query(out, f"SELECT APPROX_QUANTILES(DISTINCT x, 2) AS q FROM {data}") == [
        {"q": [1, 6, 10]}
    ]
    nulls = "UNNEST([NULL, NULL, 1, 1, 1, 4, 5, 6, 7, 8, 9, 10]) AS x"
    assert query(out, f"SELECT APPROX_QUANTILES(x, 2 IGNORE NULLS) AS q FROM {nulls}") == [
        {"q": [1, 5, 10]}
    ]
    assert query(out, "SELECT APPROX_QUANTILES(x, 4) AS q FROM UNNEST([0.5, 2.5]) AS x") == [
        {"q": [0.5, 0.5, 0.5, 2.5, 2.5]}  # never 1.5: no interpolation
    ]
    with pytest.raises(WarehouseError, match="RESPECT NULLS"):
        run_sql(
            out / "warehouse.duckdb", f"SELECT APPROX_QUANTILES(x, 2 RESPECT NULLS) FROM {data}"
        )


def test_plain_sqlglot_approx_quantiles_differs():
    # Why the rewrite exists: sqlglot emits DuckDB's approx_quantile, whose median here is 6.
    plain = sqlglot.transpile(
        "SELECT APPROX_QUANTILES(x, 2) FROM UNNEST([1, 1, 1, 4, 5, 6, 7, 8, 9, 10]) AS x",
        read="bigquery",
        write="duckdb",
    )[0]
    assert duckdb.connect().execute(plain).fetchone()[0] != [1, 5, 10]


def test_approx_quantiles_pick_the_exact_rank(warehouse):
    # The i-th of n quantiles of N sorted values is the ceil(i * N / n)-th value; float error in
    # i / n must not move it (N = 25, n = 25, i = 14 did before the quantile points were shrunk).
    out, _ = warehouse
    for n_values in (1, 2, 7, 10, 25, 100):
        for buckets in (1, 2, 3, 4, 10, 25, 100):
            got = query(
                out,
                f"SELECT APPROX_QUANTILES(x, {buckets}) AS q FROM UNNEST(GENERATE_ARRAY(1, {n_values})) AS x",
            )[0]["q"]
            expected = [max(1, -(-i * n_values // buckets)) for i in range(buckets + 1)]
            assert got == expected, (n_values, buckets)


def test_numeric_cast_keeps_nine_decimals(warehouse):
    out, _ = warehouse
    # sqlglot alone writes DECIMAL, which DuckDB reads as DECIMAL(18,3): 1.123.
    assert query(out, "SELECT CAST('1.123456789' AS NUMERIC) AS v") == [
        {"v": Decimal("1.123456789")}
    ]
