"""ParseEvents: typed records out, every failure a dead letter with its reason, nothing dropped."""

from __future__ import annotations

import contextlib
import json
from collections import Counter

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.direct import local_pipeline_options
from schemas import serde
from schemas.events import PriceEvent
from transforms.common.dead_letter import DEAD_LETTER_TAG, MAIN_TAG
from transforms.common.parse import ParseEvents, decode

GOOD = {
    "event_id": "p1",
    "asset": "BTC",
    "source": "pyth",
    "price": "97000.5",
    "confidence": "12.5",
    "publish_time": "2025-01-06T00:00:00Z",
    "feed_id": "0xe62d",
}


def line(**changes) -> bytes:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


# (payload, expected reason or None when valid)
CASES = [
    (line(), None),
    (line(event_id="p2", asset="ETH", price="3000.12345678"), None),
    (line(event_id="p3", publish_time="2025-01-06T00:01:00+00:00"), None),
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_json"),
    (b"[1, 2, 3]", "wrong_type"),
    (line(price=...), "missing_field"),
    (line(publish_time=...), "missing_field"),
    (line(price=97000.5), "wrong_type"),
    (line(price={"v": 1}), "wrong_type"),
    (line(price="abc"), "wrong_type"),
    (line(source="binance-scraper"), "wrong_type"),
    (line(price="-1"), "non_positive_price"),
    (line(price="0"), "non_positive_price"),
    (line(price="NaN"), "not_finite"),
    (line(price="Infinity"), "not_finite"),
    (line(asset="FOO"), "unknown_asset"),
    (line(publish_time="1970-01-01T00:00:00Z"), "absurd_timestamp"),
    (line(publish_time="2999-12-31T00:00:00Z"), "absurd_timestamp"),
    (line(publish_time=10**30), "absurd_timestamp"),
    (line(price="1e40"), "out_of_range"),
]


def run_parse(payloads, payload_format="json"):
    opts = local_pipeline_options()
    p = beam.Pipeline(options=opts)
    res = (
        p | beam.Create(payloads) | ParseEvents("market.prices.v1", payload_format, ["BTC", "ETH"])
    )
    return p, res


def test_records_in_equal_records_out_plus_dead_letters_with_reasons():
    payloads = [c[0] for c in CASES]
    expected_reasons = sorted(r for _, r in CASES if r)
    p, res = run_parse(payloads)
    assert_that(
        res[MAIN_TAG] | beam.Map(lambda r: r.event_id), equal_to(["p1", "p2", "p3"]), label="Valid"
    )
    assert_that(
        res[DEAD_LETTER_TAG] | beam.Map(lambda d: d.error_reason),
        equal_to(expected_reasons),
        label="Reasons",
    )
    assert_that(
        res[DEAD_LETTER_TAG]
        | beam.Map(lambda d: (d.source, d.stage, bool(d.error), d.processing_time is not None)),
        equal_to([("market.prices.v1", "ParsePrices", True, True)] * len(expected_reasons)),
        label="DeadLetterFields",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        m.key.metric.name: m.committed
        for m in result.metrics().query(MetricsFilter().with_namespace("parse"))["counters"]
    }
    dead = {k.rsplit(".", 1)[1]: v for k, v in counters.items() if ".dead_letter." in k}
    assert counters["ParsePrices.in"] == len(CASES)
    assert counters["ParsePrices.out"] == 3
    assert counters["ParsePrices.in"] == counters["ParsePrices.out"] + sum(dead.values())
    assert dead == dict(Counter(expected_reasons))


def test_records_carry_their_event_time_as_the_beam_timestamp():
    p, res = run_parse([line(), line(event_id="p3", publish_time="2025-01-06T00:01:00Z")])

    class StampFn(beam.DoFn):
        def process(self, r, ts=beam.DoFn.TimestampParam):
            yield (r.event_id, ts.to_utc_datetime(has_tz=True).isoformat())

    assert_that(
        res[MAIN_TAG] | beam.ParDo(StampFn()),
        equal_to([("p1", "2025-01-06T00:00:00+00:00"), ("p3", "2025-01-06T00:01:00+00:00")]),
    )
    p.run().wait_until_finish()


def test_dead_letters_keep_the_payload_and_the_event_time_when_readable():
    p, res = run_parse([line(price="-5"), b"\xff\xfe"])
    assert_that(
        res[DEAD_LETTER_TAG]
        | beam.Map(
            lambda d: (d.payload_encoding, d.event_time is not None, len(d.raw_payload) > 0)
        ),
        equal_to([("utf-8", True, True), ("base64", False, True)]),
    )
    p.run().wait_until_finish()


def test_avro_payloads_parse_and_corrupt_avro_is_a_dead_letter():
    good = serde.to_avro(PriceEvent.model_validate_json(line()))
    p, res = run_parse([good, good[:5], b"\x00\x01\x02"], payload_format="avro")
    assert_that(
        res[MAIN_TAG] | beam.Map(lambda r: r.price),
        equal_to([PriceEvent.model_validate_json(line()).price]),
        label="Ok",
    )
    assert_that(
        res[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.error_reason, d.payload_encoding)),
        equal_to([("invalid_avro", "base64"), ("invalid_avro", "base64")]),
        label="Bad",
    )
    p.run().wait_until_finish()


def test_unknown_topic_or_format_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="unknown topic"):
        ParseEvents("prices.v9")
    with pytest.raises(ValueError, match="unknown payload format"):
        ParseEvents("market.prices.v1", "xml")


junk = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(
        st.sampled_from(list(GOOD) + ["extra", "\u0000", "é"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=True),
            st.text(max_size=30),
            st.lists(st.integers(), max_size=3),
            st.sampled_from(["1e999999", "-0", "0x10", "٣", "2025-01-06T00:00:00Z"]),
        ),
        max_size=9,
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=300, deadline=None)
@given(junk)
def test_decode_never_raises_anything_but_a_classified_error(payload):
    # The DoFn classifies ValidationError and ValueError into dead letters; nothing else may escape.
    from pydantic import ValidationError

    with contextlib.suppress(ValidationError, ValueError):
        decode(PriceEvent, payload, "json")
