"""Shared by the parse fuzz (tests/reliability/test_parse_fuzz.py) and the reliability benchmark
(tests/benchmarks/bench_reliability.py): a valid record per input topic, the nasty values
producers and attackers send, a seeded mutator, and the checks every outcome must pass."""

from __future__ import annotations

import json
import random
from decimal import Decimal

from schemas.addresses import canonical_address, canonical_wallet
from schemas.registry import TOPICS
from schemas.serde import to_json, to_row
from schemas.types import MAX_RECORD_BYTES, UINT80_MAX, UINT256_MAX
from transforms.common.parse import ParseEventFn

EVM = "0x" + "ab" * 20
VALID = {
    "market.prices.v1": {
        "event_id": "86797fd8ef557c9686aee8139b6164e5", "asset": "BTC", "quote": "USD",
        "source": "chainlink", "price": "102000.00000000", "confidence": None,
        "publish_time": "2025-01-06T00:00:00Z", "feed_id": "0xF4030086522a5bEEa4988F8cA5B36dbC97BeE88c",
        "round_id": "110680464442257345276", "answered_in_round": "110680464442257345276",
        "started_at": "2025-01-06T00:00:00Z", "ema_price": None,
        "observed_at": "2025-01-06T00:00:02Z", "chain_id": "eip155:1",
    },
    "settlements.v1": {
        "event_id": "ce04ec4775bc6a350d06251323f34c6c", "account_id": "acct-0038",
        "venue": "compound_v3", "chain_id": "eip155:1", "kind": "deposit", "asset": "ETH",
        "amount_raw": "21641488000000000000", "decimals": 18, "tx_hash": "0xa59e",
        "block_number": 21564005, "log_index": 3, "tx_index": 1,
        "event_time": "2025-01-06T00:01:00Z",
    },
    "dex.trades.v1": {
        "event_id": "0b042ce55cc74c95f6d4f128e131b3f2", "chain_id": "eip155:1",
        "venue": "uniswap_v2", "pool_address": "0xb4e16d0168e52d35cacd2c6185b44281ec28c9dc",
        "tx_hash": "0x20e1", "block_number": 21564026, "log_index": 0, "trader": EVM,
        "recipient": EVM, "token_in": "USDC", "token_out": "WETH", "amount_in_raw": "105058936",
        "amount_out_raw": "28554665935407614", "decimals_in": 6, "decimals_out": 18,
        "amount_usd": "104.62", "event_time": "2025-01-06T00:05:12Z",
    },
    "liquidity.v1": {
        "event_id": "92a952906387e267ab6168dec1e7f89b", "chain_id": "eip155:1",
        "pool_address": "0xb4e16d0168e52d35cacd2c6185b44281ec28c9dc", "kind": "mint",
        "tx_hash": "0x2295", "block_number": 21564001, "log_index": 0, "sender": EVM,
        "token0": "WETH", "token1": "USDC", "amount0_raw": "10", "amount1_raw": "20",
        "decimals0": 18, "decimals1": 6, "liquidity_raw": "5",
        "event_time": "2025-01-06T00:00:12Z",
    },
    "transfers.v1": {
        "event_id": "d4cb7fc524adeb79f2705b538e21ef0d", "chain_id": "eip155:1",
        "tx_hash": "0x8c01", "block_number": 21564002, "log_index": 0, "from_address": EVM,
        "to_address": "0xe892aaf88af08f7ae77451857c61c7d3bee83da3", "asset": "ETH",
        "token_address": None, "amount_raw": "665845000000000000", "decimals": 18,
        "amount_usd": "2430.19", "event_time": "2025-01-06T00:00:24Z",
    },
    "accounts.profiles.v1": {
        "account_id": "cust-0001", "wallets": [EVM], "tier": "tier1", "country": "SG",
        "pep": False, "kyc_status": "verified", "updated_at": "2025-01-05T00:00:00Z",
    },
}  # fmt: skip

BIG = "9" * 10_000_000  # one 10 MB field, shared (building it per example is slow)

NASTY_STRINGS = [
            "²",
            "١٢٣",
            "１２３",
            "0x" + "AB" * 20,
            "0x" + "ab" * 19,
            "0xé" + "a" * 39,
            "2024-01-01T00:00:00",
            "2024-01-01",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "1970-01-01T00:00:00Z",
            "2999-01-01T00:00:00Z",
            "NaN",
            "Infinity",
            "-0",
            "1e400",
            "   ",
            "",
            "\x00\x1b[31m",
            "a\nb",
            "T" * 34,
            str(2**256),
            str(2**80),
            "007",
            " 12 ",
        ]  # fmt: skip
NASTY_VALUES = [None, True, False, 0, -1, 10**30, 10**80, 2**256, 2**256 - 1, 2**63, 2**80, 1.5,
                float("nan"), float("inf"), [], {}, [[["x"]]], {"a": {"b": 1}}, *NASTY_STRINGS]  # fmt: skip


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def random_payload(topic: str, rng: random.Random) -> bytes:
    """A payload of ``topic`` broken the way the fuzz breaks them, from a seeded generator."""
    kind = rng.choice(["field", "two_fields", "drop", "raw", "deep", "big"])
    record = dict(VALID[topic])
    fields = sorted(record)
    if kind == "raw":
        return rng.randbytes(rng.randint(0, 200))
    if kind == "deep":
        record[rng.choice(fields)] = "__DEEP__"
        return (
            json.dumps(record)
            .replace('"__DEEP__"', deep_json(rng.choice([100, 5_000, 200_000])))
            .encode()
        )
    if kind == "big":
        record[rng.choice(fields)] = "__BIG__"
        return json.dumps(record).replace("__BIG__", BIG).encode()
    if kind == "drop":
        record.pop(rng.choice(fields))
    else:
        for _ in range(1 if kind == "field" else 2):
            record[rng.choice(fields)] = rng.choice(NASTY_VALUES)
    return json.dumps(record, allow_nan=True).encode()


def parse_one(topic: str, payload):
    out = list(ParseEventFn(topic, "Fuzz", "json", None).process(payload))
    assert len(out) == 1, "every payload comes out exactly once"
    return out[0]


def check_accepted(topic: str, record) -> None:
    """What the contract lets through is valid by its own rules."""
    assert isinstance(record, TOPICS[topic])
    for name in type(record).model_fields:
        value = getattr(record, name)
        if isinstance(value, bool):
            assert type(type(record).model_fields[name].annotation) is not int
        if isinstance(value, str):
            assert len(value) <= 256 and value.isprintable(), name
            if name.endswith("_raw"):
                assert value.isascii() and value.isdigit() and int(value) <= UINT256_MAX
            if name in ("round_id", "answered_in_round"):
                assert int(value) <= UINT80_MAX
        if isinstance(value, Decimal):
            assert value.is_finite()
            if name in ("price", "amount_usd", "confidence", "ema_price"):
                assert value >= 0
        if isinstance(value, int) and not isinstance(value, bool):
            assert 0 <= value <= 10**12, name
    for name in ("pool_address", "trader", "recipient", "sender", "from_address", "to_address"):
        if hasattr(record, name):
            value = getattr(record, name)
            assert canonical_address(record.chain_id, value) == value  # already canonical
    if topic == "accounts.profiles.v1":
        assert all(canonical_wallet(w) == w for w in record.wallets)
    assert len(to_json(record)) <= MAX_RECORD_BYTES
    to_row(record)


def check_dead_letter(row, payload) -> None:
    assert row.error_reason and row.error
    assert len(row.raw_payload) <= 100_100
    if 0 < len(payload) <= 1000:
        assert row.raw_payload  # the payload is kept for replay
    json.loads(to_json(row))
    to_row(row)  # the Parquet/BigQuery writer's input must build
