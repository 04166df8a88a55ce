"""Contracts: generated files are fresh, every field is documented, records round-trip."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from decimal import Decimal

import fastavro
import pyarrow as pa
import pytest
from pydantic import ValidationError

from schemas import codegen, serde
from schemas.base import construct
from schemas.events import DexTrade, PriceEvent, Settlement, Transfer
from schemas.registry import TABLES, TOPICS, avro_name
from schemas.tables import LiquidationPrice, MarginHealthRow, PriceRow

T0 = datetime(2025, 1, 6, 12, 0, 0, 123456, tzinfo=UTC)

SAMPLES = {
    "market.prices.v1": PriceEvent(
        event_id="p1",
        asset="ETH",
        source="chainlink",
        price="3000.12345678",
        publish_time=T0,
        feed_id="0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419",
        round_id=str((6 << 64) | 12345),
    ),
    "settlements.v1": Settlement(
        event_id="s1",
        account_id="acct-0001",
        venue="aave_v3",
        kind="deposit",
        asset="ETH",
        amount_raw="1500000000000000000",
        decimals=18,
        event_time=T0,
    ),
    "dex.trades.v1": DexTrade(
        event_id="t1",
        venue="uniswap_v2",
        pool_address="0x" + "b0" * 20,
        tx_hash="0xabc",
        block_number=1,
        log_index=2,
        trader="0x" + "a1" * 20,
        recipient="0x" + "a1" * 20,
        token_in="USDC",
        token_out="WETH",
        amount_in_raw="3000000000",
        amount_out_raw="1000000000000000000",
        decimals_in=6,
        decimals_out=18,
        amount_usd="3000.00",
        event_time=T0,
    ),
    "transfers.v1": Transfer(
        event_id="x1",
        tx_hash="0xdef",
        block_number=5,
        log_index=0,
        from_address="0x" + "aa" * 20,
        to_address="0x" + "bb" * 20,
        asset="USDT",
        amount_raw="9500000000",
        decimals=6,
        amount_usd="9500",
        event_time=T0,
    ),
}


def test_generated_schema_files_are_fresh():
    stale = codegen.stale_files()
    assert stale == [], f"run `defi-risk schemas generate`: stale {stale}"


def test_freshness_check_detects_an_edited_file(tmp_path, monkeypatch):
    # Point the generator at a copy and corrupt one file: the check must notice.
    import shutil

    copy = tmp_path / "schemas"
    shutil.copytree(codegen.SCHEMA_DIR / "avro", copy / "avro")
    shutil.copytree(codegen.SCHEMA_DIR / "bigquery", copy / "bigquery")
    monkeypatch.setattr(codegen, "SCHEMA_DIR", copy)
    assert codegen.stale_files() == []
    target = copy / "bigquery" / "prices.json"
    target.write_text(target.read_text().replace("NUMERIC", "FLOAT64"))
    (copy / "avro" / "orphan_v1.avsc").write_text("{}")
    assert codegen.stale_files() == [copy / "avro" / "orphan_v1.avsc", target]


def test_one_avro_schema_per_topic_and_one_bigquery_schema_per_table():
    assert {p.stem for p in (codegen.SCHEMA_DIR / "avro").glob("*.avsc")} == {
        avro_name(t) for t in TOPICS
    }
    assert {p.stem for p in (codegen.SCHEMA_DIR / "bigquery").glob("*.json")} == set(TABLES)
    for topic in TOPICS:
        fastavro.parse_schema(
            json.loads((codegen.SCHEMA_DIR / "avro" / f"{avro_name(topic)}.avsc").read_text())
        )


def _walk(fields):
    for f in fields:
        yield f
        yield from _walk(f.get("fields", []))


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_bigquery_field_has_a_description_and_money_is_numeric(table):
    fields = json.loads((codegen.SCHEMA_DIR / "bigquery" / f"{table}.json").read_text())
    for f in _walk(fields):
        assert f["description"].strip(), f"{table}.{f['name']} has no description"
        if f["name"].endswith("_usd") or f["name"] == "price":
            assert f["type"] == "NUMERIC", f"{table}.{f['name']} is money but {f['type']}"
        if f["name"] in (
            "event_time",
            "event_ts",
            "as_of",
            "detected_at",
            "screened_at",
            "assessed_at",
        ):
            assert f["type"] == "TIMESTAMP"


def test_event_time_and_cluster_keys_exist_on_every_model():
    for model in [*TOPICS.values(), *TABLES.values()]:
        assert model.event_time_field in model.model_fields, model
        for key in model.key_fields:
            assert key in model.model_fields, (model, key)


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_json_and_avro_round_trip(topic):
    record = SAMPLES[topic]
    assert serde.from_json(TOPICS[topic], serde.to_json(record)) == record
    assert serde.from_avro(TOPICS[topic], serde.to_avro(record)) == record


def test_money_is_a_decimal_string_on_the_wire_and_time_is_utc():
    wire = json.loads(serde.to_json(SAMPLES["market.prices.v1"]))
    assert wire["price"] == "3000.12345678"
    assert wire["publish_time"] == "2025-01-06T12:00:00.123456Z"
    parsed = PriceEvent.model_validate_json(serde.to_json(SAMPLES["market.prices.v1"]))
    assert parsed.price == Decimal("3000.12345678") and parsed.publish_time.tzinfo == UTC


def test_non_utc_offsets_are_normalised_to_utc():
    e = PriceEvent(
        event_id="p",
        asset="BTC",
        source="pyth",
        price="1",
        publish_time="2025-01-06T14:00:00+02:00",
    )
    assert (
        e.publish_time == datetime(2025, 1, 6, 12, tzinfo=UTC)
        and e.publish_time.utcoffset().total_seconds() == 0
    )


@pytest.mark.parametrize(
    ("price", "publish_time", "error_type"),
    [
        (1.5, "2025-01-06T00:00:00Z", "wrong_type"),
        ("NaN", "2025-01-06T00:00:00Z", "finite_number"),
        ("-3", "2025-01-06T00:00:00Z", "non_positive"),
        ("0", "2025-01-06T00:00:00Z", "non_positive"),
        ("1e40", "2025-01-06T00:00:00Z", "out_of_range"),
        ("1", "1970-01-01T00:00:00Z", "absurd_timestamp"),
        ("1", "2025-01-06T00:00:00", "naive_timestamp"),
    ],
)
def test_invalid_money_and_time_are_rejected(price, publish_time, error_type):
    with pytest.raises(ValidationError) as err:
        PriceEvent(event_id="p", asset="BTC", source="pyth", price=price, publish_time=publish_time)
    assert err.value.errors()[0]["type"] == error_type


def test_raw_token_amounts_must_be_integer_strings():
    with pytest.raises(ValidationError):
        Settlement(**{**SAMPLES["settlements.v1"].model_dump(), "amount_raw": "1.5"})
    s = SAMPLES["settlements.v1"]
    assert Decimal(s.amount_raw).scaleb(-s.decimals) == Decimal("1.5")


def test_table_rows_convert_to_arrow_at_numeric_scale():
    row = MarginHealthRow(
        row_id="r",
        account_id="a",
        event_ts=T0,
        trigger="snapshot",
        collateral_usd="30000.1234567891",
        borrow_usd="15000",
        health_score="100.0",
        zone="healthy",
        price_status="ok",
        liquidation_prices=[
            LiquidationPrice(asset="ETH", liquidation_price="1725", margin_call_price="1950")
        ],
    )
    table = pa.Table.from_pylist([serde.to_row(row)], schema=codegen.arrow_schema(MarginHealthRow))
    assert table.column("collateral_usd")[0].as_py() == Decimal(
        "30000.123456789"
    )  # half-even at scale 9
    assert table.column("liquidation_prices")[0].as_py()[0]["liquidation_price"] == Decimal("1725")
    assert table.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")


def test_price_row_allows_a_missing_price_only_as_a_null():
    row = PriceRow(
        price_id="x",
        asset="BTC",
        price=None,
        status="price_unavailable",
        n_sources=0,
        window_start=T0,
        event_time=T0,
    )
    assert (
        pa.Table.from_pylist([serde.to_row(row)], schema=codegen.arrow_schema(PriceRow)).num_rows
        == 1
    )


def test_to_arrow_table_is_the_row_by_row_table_for_every_table_contract():
    """The sinks' column-wise conversion gives exactly ``from_pylist`` of ``to_row``: the same
    values, NUMERIC rounding (half-even at scale 9) included, nested lists of models included."""
    row = MarginHealthRow(
        row_id="r",
        account_id="a",
        event_ts=T0,
        trigger="snapshot",
        collateral_usd="30000.1234567891",  # 10 places: rounded, as to_row rounds
        borrow_usd="15000",
        health_score=None,
        zone="healthy",
        price_status="ok",
        liquidation_prices=[
            LiquidationPrice(
                asset="ETH", liquidation_price="1725.0000000005", margin_call_price=None
            )
        ],
    )
    rows = [
        row,
        row.model_copy(update={"collateral_usd": Decimal("1.5"), "liquidation_prices": []}),
    ]
    schema = codegen.arrow_schema(MarginHealthRow)
    table = serde.to_arrow_table(rows, schema)
    assert table.equals(pa.Table.from_pylist([serde.to_row(r) for r in rows], schema=schema))
    assert table.column("collateral_usd").to_pylist() == [
        Decimal("30000.123456789"),
        Decimal("1.5"),
    ]
    assert table.column("liquidation_prices")[0].as_py()[0]["liquidation_price"] == Decimal(
        "1725.000000000"  # ...0005 at scale 9, half-even
    )
    prices = [
        PriceRow(price_id="x", asset="BTC", price=None, status="price_unavailable", n_sources=0,
                 window_start=T0, event_time=T0),
        PriceRow(price_id="y", asset="BTC", price="1.23", status="ok", n_sources=2,
                 window_start=T0, event_time=T0),
    ]  # fmt: skip
    schema = codegen.arrow_schema(PriceRow)
    assert serde.to_arrow_table(prices, schema).equals(
        pa.Table.from_pylist([serde.to_row(r) for r in prices], schema=schema)
    )


def test_construct_is_model_construct_without_its_cost():
    values = {
        "row_id": "r", "account_id": "a", "event_ts": T0, "trigger": "price",
        "collateral_usd": Decimal("1.5"), "borrow_usd": Decimal("1"),
        "health_score": Decimal("50"), "zone": "healthy", "price_status": "ok",
        "liquidation_prices": [construct(LiquidationPrice, {
            "asset": "ETH", "liquidation_price": Decimal("1"), "margin_call_price": None})],
    }  # fmt: skip
    fast, slow = construct(MarginHealthRow, dict(values)), MarginHealthRow.model_construct(**values)
    assert fast == slow and fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert MarginHealthRow.model_validate(fast.model_dump()) == fast
