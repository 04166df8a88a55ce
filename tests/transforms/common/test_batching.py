"""BatchByShardFn: every record reaches its shard once, in batches of at most ``max_batch``,
each stamped with its earliest record's time."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from runners.direct import local_pipeline_options
from transforms.common.batching import BatchByShardFn


def test_records_arrive_once_per_shard_in_bounded_batches_at_their_earliest_time():
    records = [(i % 3, i) for i in range(100)]  # (shard, value); time = 1000 + value
    with beam.Pipeline(options=local_pipeline_options()) as p:
        batches = (
            p
            | beam.Create(records)
            | beam.Map(lambda r: TimestampedValue(r, 1000 + r[1]))
            | beam.ParDo(BatchByShardFn("tag", lambda r: r[0], lambda r: r[1], max_batch=7))
        )
        flat = batches | "Flat" >> beam.FlatMap(lambda kv: [(kv[0], kv[1][0], v) for v in kv[1][1]])
        assert_that(flat, equal_to([(i % 3, "tag", i) for i in range(100)]), label="Once")
        stamps = batches | "Stamps" >> beam.Map(
            lambda kv, ts=beam.DoFn.TimestampParam: (
                len(kv[1][1]) <= 7
                and all(v % 3 == kv[0] for v in kv[1][1])
                and ts.micros == (1000 + min(kv[1][1])) * 1_000_000
            )
        )
        assert_that(stamps | beam.Distinct(), equal_to([True]), label="Bounded")
