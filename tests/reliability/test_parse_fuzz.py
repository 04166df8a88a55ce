"""Fuzzing every input topic's contract: no payload crashes a parse, and what is accepted is valid.

Each example takes a valid record of a topic and breaks it the way producers and attackers do:
nested JSON, unicode digits, huge integers, naive and out-of-range times, booleans for integers,
control characters, 10 MB fields, garbage bytes. Every payload must come out exactly once, as a
typed record or as a dead-letter row (which itself serialises), and no exception may escape.

    .venv/bin/pytest tests/reliability/test_parse_fuzz.py -q
"""

from __future__ import annotations

import json

import pytest
from apache_beam.pvalue import TaggedOutput
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.registry import INPUT_TOPICS
from tests.support.fuzz import (
    BIG,
    NASTY_STRINGS,
    VALID,
    check_accepted,
    check_dead_letter,
    deep_json,
    parse_one,
)
from transforms.common.dead_letter import DEAD_LETTER_TAG

NASTY_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**30, 10**80, 2**256, 2**256 - 1, -1, 2**63, 2**80]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(NASTY_STRINGS),
)
NESTED = st.recursive(NASTY_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=10)  # fmt: skip


def mutate(topic: str, data) -> bytes:
    """A payload: the valid record of ``topic`` with one or two fields broken, or raw garbage."""
    kind = data.draw(st.sampled_from(["field", "two_fields", "drop", "raw", "deep", "big"]))
    record = dict(VALID[topic])
    fields = sorted(record)
    if kind == "raw":
        return data.draw(st.binary(max_size=200))
    if kind == "deep":
        depth = data.draw(st.sampled_from([100, 5_000, 200_000]))
        record[data.draw(st.sampled_from(fields))] = "__DEEP__"
        return json.dumps(record).replace('"__DEEP__"', deep_json(depth)).encode()
    if kind == "big":
        record[data.draw(st.sampled_from(fields))] = "__BIG__"
        return json.dumps(record).replace("__BIG__", BIG).encode()
    if kind == "drop":
        record.pop(data.draw(st.sampled_from(fields)))
    else:
        for _ in range(1 if kind == "field" else 2):
            record[data.draw(st.sampled_from(fields))] = data.draw(NESTED)
    return json.dumps(record, allow_nan=True).encode()


@pytest.mark.parametrize("topic", INPUT_TOPICS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_payload_crashes_a_parse(topic, data):
    payload = mutate(topic, data)
    out = parse_one(topic, payload)
    if isinstance(out, TaggedOutput):
        assert out.tag == DEAD_LETTER_TAG
        check_dead_letter(out.value, payload)
    else:
        check_accepted(topic, out.value)


@pytest.mark.parametrize("topic", INPUT_TOPICS)
def test_the_valid_record_of_each_topic_is_accepted(topic):
    out = parse_one(topic, json.dumps(VALID[topic]).encode())
    assert not isinstance(out, TaggedOutput), out


# One regression case per family the adversarial run found; each crashed or passed silently.
REGRESSIONS = [
    ("settlements.v1", {"event_time": "2025-01-06T00:01:00"}, "absurd_timestamp"),
    ("transfers.v1", {"event_time": "2025-01-06"}, "absurd_timestamp"),
    ("dex.trades.v1", {"event_time": "0001-01-01T00:00:00+01:00"}, "absurd_timestamp"),
    ("market.prices.v1", {"round_id": "not-a-number"}, "wrong_type"),
    ("settlements.v1", {"amount_raw": "²"}, "wrong_type"),
    ("settlements.v1", {"block_number": 10**30}, "out_of_range"),
    ("settlements.v1", {"amount_raw": str(10**80)}, "out_of_range"),
    ("settlements.v1", {"decimals": True}, "wrong_type"),
    ("transfers.v1", {"amount_usd": "-5"}, "negative_amount_usd"),
    ("transfers.v1", {"to_address": "0x" + "ab" * 19}, "invalid_address"),
    ("transfers.v1", {"to_address": "0x" + "é" * 40}, "invalid_address"),
    ("transfers.v1", {"event_id": ""}, "empty_field"),
    ("liquidity.v1", {"sender": "x" * 10_000_000}, "too_large"),
    ("dex.trades.v1", {"venue": "uni\x1bswap"}, "control_character"),
    # Found by the fuzz: a Name accepted unassigned code points and separators (not printable).
    ("dex.trades.v1", {"venue": "\ud7fc"}, "control_character"),
    ("liquidity.v1", {"token0": "\U00012544"}, "control_character"),
    ("dex.trades.v1", {"venue": "uni\u2028swap"}, "control_character"),
    ("transfers.v1", {"chain_id": "ethereum"}, "invalid_chain_id"),
    ("transfers.v1", {"to_address": "0x2260FAC5E5542a773Aa44fBCC0dF28dbCAb6F9E5"}, "invalid_address"),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "patch", "reason"), REGRESSIONS)
def test_each_adversarial_family_is_a_dead_letter_with_its_reason(topic, patch, reason):
    payload = json.dumps({**VALID[topic], **patch}).encode()
    out = parse_one(topic, payload)
    assert isinstance(out, TaggedOutput), f"{patch} was accepted"
    assert out.value.error_reason == reason, out.value.error
    check_dead_letter(out.value, payload)


def test_deeply_nested_json_is_a_dead_letter():
    out = parse_one("settlements.v1", deep_json(200_000).encode())
    assert isinstance(out, TaggedOutput) and out.value.error_reason in ("invalid_json", "too_large")


def test_an_upper_cased_pool_address_is_the_same_pool():
    lower = VALID["liquidity.v1"]["pool_address"]
    upper = "0x" + lower[2:].upper()
    out = parse_one("liquidity.v1", json.dumps({**VALID["liquidity.v1"], "pool_address": upper}))
    assert out.value.pool_address == lower


def test_leading_zeros_of_a_raw_amount_are_one_spelling():
    out = parse_one("transfers.v1", json.dumps({**VALID["transfers.v1"], "amount_raw": "007"}))
    assert out.value.amount_raw == "7"
