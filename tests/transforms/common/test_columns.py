"""settlements_of: the backfill's settlement rows as models; a row the contract refuses is
returned with its error, never raised (one bad history row must not stop a two-year backfill)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from schemas.codegen import arrow_schema
from schemas.events import Settlement
from transforms.common.columns import settlements_of


def test_a_row_the_contract_refuses_is_returned_with_its_error_not_raised():
    good = {
        "event_id": "s1", "account_id": "a", "venue": "aave_v3", "chain_id": "eip155:1",
        "kind": "deposit", "asset": "ETH", "amount_raw": "1000", "decimals": 18, "tx_hash": None,
        "block_number": 5, "log_index": 1, "tx_index": None,
        "event_time": datetime(2025, 1, 6, tzinfo=UTC),
    }  # fmt: skip
    bad = {**good, "event_id": "s2", "amount_raw": "²"}
    table = pa.Table.from_pylist([good, bad], schema=arrow_schema(Settlement))
    valid, invalid = settlements_of(table)
    assert [s.event_id for s in valid] == ["s1"]
    ((row, error),) = invalid
    assert row["event_id"] == "s2" and "amount_raw" in error
