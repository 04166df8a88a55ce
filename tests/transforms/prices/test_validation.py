"""Oracle decoding and price validation on real-format payloads of every registry feed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.direct import local_pipeline_options
from schemas.events import PriceEvent
from transforms.common.dead_letter import DEAD_LETTER_TAG, MAIN_TAG
from transforms.common.parse import ParseEvents
from transforms.prices.oracles import (
    OracleDecodeError,
    RegistryError,
    compose_round_id,
    decode_chainlink_round,
    decode_pyth_update,
    load_registry,
    split_round_id,
)
from transforms.prices.transform import ValidatePrices
from transforms.prices.validation import check_update

REG = load_registry()
T = 1736121600  # 2025-01-06T00:00:00Z
NOW = datetime.fromtimestamp(T, tz=UTC)
CHAINLINK = [f for f in REG.feeds if f.source == "chainlink"]
PYTH = [f for f in REG.feeds if f.source == "pyth"]
PRICES = {
    "ETH": 300012345678,
    "BTC": 9712345678900,
    "USDC": 99990000,
    "USDT": 100010000,
    "DAI": 99980000,
}


def chainlink_round(
    feed, answer=None, updated=T, answered_delta=0, aggregator_round=4242, phase=6
) -> dict:
    # latestRoundData() as an RPC client returns it, plus the proxy address it was read from.
    rid = compose_round_id(phase, aggregator_round)
    return {
        "feed": feed.feed_id,
        "round_id": str(rid),
        "answer": PRICES[feed.asset] if answer is None else answer,
        "started_at": updated,
        "updated_at": updated,
        "answered_in_round": str(rid - answered_delta),
        "decimals": 8,
    }


def hermes_update(feed, price="12276250", conf="1500", expo=-5, publish=T) -> dict:
    # One element of Hermes /v2/updates/price/latest?parsed=true "parsed".
    body = {"price": price, "conf": conf, "expo": expo, "publish_time": publish}
    ema = str(int(price) - 10) if price.lstrip("-").isdigit() else price
    return {
        "id": feed.feed_id[2:],
        "price": body,
        "ema_price": {**body, "price": ema},
        "metadata": {
            "slot": 180000000,
            "proof_available_time": publish + 1,
            "prev_publish_time": publish - 1,
        },
    }


# ------------------------------------------------------------------------------------ registry
def test_registry_lists_the_real_mainnet_feeds():
    by_id = {f.feed_id.lower(): f for f in REG.feeds}
    expected = {
        "0x5f4ec3df9cbd43714fe2740f5e3616155c5b8419": ("chainlink", "ETH", 3600, 0.5),
        "0xf4030086522a5beea4988f8ca5b36dbc97bee88c": ("chainlink", "BTC", 3600, 0.5),
        "0x8fffffd4afb6115b954bd326cbe7b4ba576818f6": ("chainlink", "USDC", 86400, 0.25),
        "0xe62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43": (
            "pyth",
            "BTC",
            60,
            None,
        ),
        "0xff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace": (
            "pyth",
            "ETH",
            60,
            None,
        ),
        "0xeaa020c61cc479712813461ce153894a96a6c00b21ed0cfc2798d1f9a9e9c94a": (
            "pyth",
            "USDC",
            60,
            None,
        ),
    }
    for fid, (source, asset, heartbeat, deviation) in expected.items():
        f = by_id[fid]
        assert (f.source, f.asset, f.heartbeat_s, f.deviation_pct) == (
            source,
            asset,
            heartbeat,
            deviation,
        )


def test_registry_errors_name_the_feed_and_the_key(tmp_path):
    bad = tmp_path / "feeds.toml"
    bad.write_text(
        '[[feed]]\nsource = "chainlink"\nasset = "ETH"\nfeed_id = "0x1"\nheartbeat_s = 60\n'
    )
    with pytest.raises(RegistryError, match=r"feed #1 \(chainlink ETH\).*decimals"):
        load_registry(bad)
    bad.write_text('[[feed]]\nsource = "pyth"\nasset = "ETH"\nfeed_id = "0x1"\n')
    with pytest.raises(RegistryError, match="missing key 'heartbeat_s'"):
        load_registry(bad)


def test_a_new_asset_is_added_by_config_not_code(tmp_path):
    extra = tmp_path / "feeds.toml"
    extra.write_text(
        '[[feed]]\nsource = "pyth"\nasset = "SOL"\nheartbeat_s = 60\n'
        'feed_id = "0xef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"\n'
    )
    reg = load_registry(extra)
    e = decode_pyth_update(hermes_update(reg.feeds[0], price="18512345678", expo=-8), reg)
    assert (e.asset, e.price) == ("SOL", Decimal("185.12345678")) and check_update(e, reg) is None


# ------------------------------------------------------------------------------------ decoding
def test_known_values():
    cl = decode_chainlink_round(chainlink_round(CHAINLINK[0], answer=300012345678), REG)
    assert cl.price == Decimal("3000.12345678")
    py = decode_pyth_update(hermes_update(PYTH[0]), REG)
    assert py.price == Decimal("122.7625") and py.confidence == Decimal("0.015")


def test_round_id_keeps_its_phase_bits_and_chainlink_fields_are_kept():
    e = decode_chainlink_round(
        chainlink_round(CHAINLINK[0], updated=T, aggregator_round=4242, phase=6), REG
    )
    assert int(e.round_id) == (6 << 64) | 4242 and split_round_id(int(e.round_id)) == (6, 4242)
    assert e.answered_in_round == e.round_id and e.started_at == e.publish_time == NOW
    raw = chainlink_round(CHAINLINK[0])
    del raw["round_id"]
    raw.update(phase_id=6, aggregator_round_id=4242)
    assert decode_chainlink_round(raw, REG).round_id == e.round_id


@pytest.mark.parametrize("feed", REG.feeds, ids=lambda f: f"{f.source}-{f.asset}")
def test_every_registry_feed_decodes_and_validates(feed):
    if feed.source == "chainlink":
        e = decode_chainlink_round(
            chainlink_round(feed), REG, observed_at=NOW + timedelta(seconds=3)
        )
        assert e.price == Decimal(PRICES[feed.asset]).scaleb(-8)
    else:
        e = decode_pyth_update(
            hermes_update(feed, price="100000000", conf="10000", expo=-8), REG, NOW
        )
        assert e.price == Decimal(1) and e.ema_price == Decimal("0.9999999")
    assert (e.asset, e.source) == (feed.asset, feed.source)
    assert check_update(e, REG) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            {**chainlink_round(CHAINLINK[0]), "feed": "0x0000000000000000000000000000000000000001"},
            "unknown_feed",
        ),
        ({**chainlink_round(CHAINLINK[0]), "answer": 0}, "non_positive_price"),
        ({**chainlink_round(CHAINLINK[0]), "answer": -5}, "non_positive_price"),
        ({**chainlink_round(CHAINLINK[0]), "answer": 1.5}, "wrong_type"),
        ({**chainlink_round(CHAINLINK[0]), "decimals": 10**6}, "absurd_exponent"),
        (
            {k: v for k, v in chainlink_round(CHAINLINK[0]).items() if k != "updated_at"},
            "missing_field",
        ),
        ({**chainlink_round(CHAINLINK[0]), "updated_at": 10**20}, "absurd_timestamp"),
    ],
)
def test_bad_chainlink_rounds_raise_a_reasoned_decode_error(raw, reason):
    with pytest.raises(OracleDecodeError) as err:
        decode_chainlink_round(raw, REG)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({**hermes_update(PYTH[0]), "id": "ab" * 32}, "unknown_feed"),
        (hermes_update(PYTH[0], expo=-(10**9)), "absurd_exponent"),
        (hermes_update(PYTH[0], price="12e3"), "wrong_type"),
        (hermes_update(PYTH[0], price="-1"), "non_positive_price"),
        ({**hermes_update(PYTH[0]), "price": "12276250"}, "wrong_type"),
        ("[]", "wrong_type"),
    ],
)
def test_bad_pyth_updates_raise_a_reasoned_decode_error(raw, reason):
    with pytest.raises(OracleDecodeError) as err:
        decode_pyth_update(raw, REG)
    assert err.value.reason == reason


# ---------------------------------------------------------------------------------- validation
def cl_event(feed_idx=0, **changes) -> PriceEvent:
    e = decode_chainlink_round(
        chainlink_round(CHAINLINK[feed_idx]), REG, observed_at=NOW + timedelta(seconds=5)
    )
    return e.model_copy(update=changes)


def py_event(**changes) -> PriceEvent:
    e = decode_pyth_update(
        hermes_update(PYTH[0], price="9700000000000", conf="500000000", expo=-8), REG, NOW
    )
    return e.model_copy(update=changes)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (cl_event(observed_at=NOW + timedelta(seconds=3600 + 120 + 1)), "stale"),
        (cl_event(answered_in_round=str(int(cl_event().round_id) - 1)), "answered_in_round_lag"),
        (cl_event(price=Decimal("0.00000001")), "pinned_at_bound"),
        (cl_event(price=Decimal("1000000000")), "pinned_at_bound"),
        (cl_event(feed_id="0x000000000000000000000000000000000000dEaD"), "unknown_feed"),
        (cl_event(asset="BTC"), "unknown_feed"),  # the ETH feed cannot carry a BTC price
        (cl_event(asset="FOO"), "unknown_asset"),
        (py_event(confidence=Decimal("97000") * Decimal("0.025")), "confidence_too_wide"),
        (py_event(observed_at=NOW + timedelta(seconds=181)), "stale"),
    ],
)
def test_each_rule_rejects_with_its_reason(event, reason):
    assert check_update(event, REG)[0] == reason


def test_staleness_uses_each_feeds_own_heartbeat():
    usdc = next(i for i, f in enumerate(CHAINLINK) if f.asset == "USDC")
    assert (
        check_update(cl_event(usdc, observed_at=NOW + timedelta(seconds=86400 + 120)), REG) is None
    )
    assert (
        check_update(cl_event(usdc, observed_at=NOW + timedelta(seconds=86400 + 121)), REG)[0]
        == "stale"
    )
    assert check_update(py_event(observed_at=NOW + timedelta(seconds=180)), REG) is None
    assert check_update(py_event(), REG, max_conf_ratio=0.00001)[0] == "confidence_too_wide"


def test_validate_prices_transform_routes_rejects_to_dead_letters_with_counters():
    good, stale = cl_event(), cl_event(observed_at=NOW + timedelta(days=1))
    with beam.Pipeline(options=local_pipeline_options()) as p:
        out = p | beam.Create([good, stale, py_event()]) | ValidatePrices()
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda e: e.source),
            equal_to(["chainlink", "pyth"]),
            label="Valid",
        )
        assert_that(
            out[DEAD_LETTER_TAG]
            | beam.Map(lambda d: (d.stage, d.error_reason, json.loads(d.raw_payload)["event_id"])),
            equal_to([("ValidatePrices", "stale", stale.event_id)]),
            label="Dead",
        )


# ----------------------------------------------------------------------------------- fuzzing
junk_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["1e400", "-0", "٣٣", "0x1f", "\u202e99", "NaN", "9" * 90]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
chainlink_junk = st.fixed_dictionaries(
    {},
    optional={
        k: junk_value
        for k in (
            "round_id",
            "answer",
            "started_at",
            "updated_at",
            "answered_in_round",
            "decimals",
            "phase_id",
        )
    },
).map(lambda d: {"feed": CHAINLINK[0].feed_id, **d})
pyth_junk = st.fixed_dictionaries(
    {"id": st.sampled_from([PYTH[0].feed_id[2:], "zz", ""])},
    optional={
        "price": st.one_of(
            junk_value,
            st.fixed_dictionaries(
                {}, optional={k: junk_value for k in ("price", "conf", "expo", "publish_time")}
            ),
        ),
        "ema_price": junk_value,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(chainlink_junk, pyth_junk, junk_value))
def test_decoders_yield_a_valid_event_or_a_reasoned_error_never_anything_else(raw):
    for decode in (decode_chainlink_round, decode_pyth_update):
        try:
            event = decode(raw, REG)
        except OracleDecodeError as err:
            assert err.reason
            continue
        assert isinstance(event, PriceEvent) and event.price > 0


price_junk = st.fixed_dictionaries(
    {"event_id": st.text(min_size=1, max_size=8)},
    optional={
        "asset": st.sampled_from(["ETH", "BTC", "FOO", "", "\u00e9"]),
        "source": st.sampled_from(["chainlink", "pyth", "x"]),
        "price": junk_value,
        "publish_time": st.one_of(junk_value, st.just("2025-01-06T00:00:00Z")),
        "feed_id": st.sampled_from([CHAINLINK[0].feed_id, PYTH[0].feed_id, "junk"]),
        "round_id": junk_value,
        "answered_in_round": junk_value,
        "confidence": junk_value,
        "observed_at": junk_value,
    },
).map(lambda d: json.dumps(d).encode())


@settings(max_examples=3, deadline=None)
@given(st.lists(st.one_of(price_junk, st.binary(max_size=64)), min_size=50, max_size=80))
def test_malformed_price_messages_through_the_pipeline_are_all_accounted_for(payloads):
    # Parse + validate in one pipeline: every payload is a valid event or a dead letter.
    with beam.Pipeline(options=local_pipeline_options()) as p:
        parsed = p | beam.Create(payloads) | ParseEvents("market.prices.v1", "json", REG.assets())
        checked = parsed[MAIN_TAG] | ValidatePrices()
        counts = (
            (parsed[DEAD_LETTER_TAG], checked[DEAD_LETTER_TAG], checked[MAIN_TAG])
            | beam.Flatten()
            | beam.combiners.Count.Globally()
        )
        assert_that(counts, equal_to([len(payloads)]))
