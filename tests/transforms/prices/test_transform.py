"""DecodeOracleUpdates: raw oracle archives to timestamped PriceEvents, failures to dead letters."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from runners.direct import local_pipeline_options
from transforms.common.dead_letter import DEAD_LETTER_TAG, MAIN_TAG
from transforms.prices.transform import DecodeOracleUpdates

ETH = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"
ROUND = str((6 << 64) | 7)


def chainlink(answer) -> bytes:
    return json.dumps(
        {
            "feed": ETH,
            "round_id": ROUND,
            "answer": answer,
            "started_at": 1736121600,
            "updated_at": 1736121600,
            "answered_in_round": ROUND,
            "decimals": 8,
        }
    ).encode()


def test_chainlink_archive_decodes_and_counts_every_line():
    class Stamp(beam.DoFn):
        def process(self, e, ts=beam.DoFn.TimestampParam):
            yield (str(e.price), int(ts.micros // 1_000_000))

    with beam.Pipeline(options=local_pipeline_options()) as p:
        out = (
            p
            | beam.Create([chainlink(300012345678), chainlink(0), b"{", chainlink("x")])
            | DecodeOracleUpdates("chainlink")
        )
        assert_that(
            out[MAIN_TAG] | beam.ParDo(Stamp()),
            equal_to([("3000.12345678", 1736121600)]),
            label="Prices",
        )
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.stage, d.error_reason)),
            equal_to(
                [
                    ("DecodeChainlink", "non_positive_price"),
                    ("DecodeChainlink", "invalid_json"),
                    ("DecodeChainlink", "wrong_type"),
                ]
            ),
            label="Dead",
        )


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="kind must be one of"):
        DecodeOracleUpdates("band")
