"""BatchByShardFn: every record reaches its shard once, in batches of at most ``max_batch``,
each with the span of its records' times and stamped with its earliest record's time."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from runners.direct import local_pipeline_options
from transforms.common.batching import BatchByShardFn, unpack


def test_records_arrive_once_per_shard_in_bounded_batches_at_their_earliest_time():
    records = [(i % 3, i) for i in range(100)]  # (shard, value); time = 1000 + value
    with beam.Pipeline(options=local_pipeline_options()) as p:
        batches = (
            p
            | beam.Create(records)
            | beam.Map(lambda r: TimestampedValue(r, 1000 + r[1]))
            | beam.ParDo(
                BatchByShardFn("tag", lambda r: r[0], lambda r: r[1], lambda r: r[1], max_batch=7)
            )
            # (shard, (tag, (first, last, pickled))) -> (shard, tag, (first, last), values)
            | beam.Map(lambda kv: (kv[0], kv[1][0], kv[1][1][:2], unpack(kv[1][1])))
        )
        flat = batches | "Flat" >> beam.FlatMap(lambda b: [(b[0], b[1], v) for v in b[3]])
        assert_that(flat, equal_to([(i % 3, "tag", i) for i in range(100)]), label="Once")
        checks = batches | "Checks" >> beam.Map(
            lambda b, ts=beam.DoFn.TimestampParam: (
                len(b[3]) <= 7
                and all(v % 3 == b[0] for v in b[3])
                and b[2] == (min(b[3]), max(b[3]))  # the span of the records' times
                and ts.micros == (1000 + min(b[3])) * 1_000_000
            )
        )
        assert_that(checks | beam.Distinct(), equal_to([True]), label="Bounded")
