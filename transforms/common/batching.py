"""Carrying many records per element into a stateful stage (Beam's per-element cost is paid per
batch, not per record).

``BatchByShardFn`` keys each record by its shard and emits one ``(shard, (tag, batch))``
element per shard per bundle (or per ``max_batch`` records), where ``batch`` is
``(first_us, last_us, pickled records)``: a stateful step keeps the bytes as one state entry,
without decoding them, and reads the batch's time span without unpickling it. Records are packed
first (``pack``), e.g. a settlement model into a plain tuple, ~10x cheaper to pickle. (A list of
records as the element would be pickled record by record by Beam's coder at every stage boundary.)

Batch (FnApiRunner): a bundle is most of a stage's input, so a shard gets a few large batches.
Streaming: a bundle is what arrived since the last one, so batches are small time slices, as
BEAM-FACTS.md advises ("carry a small time slice of settlements per element").
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from schemas.types import epoch_micros
from transforms.common.keys import shard_of
from transforms.common.positions import settlement_record

MAX_BATCH = 4096  # records per element at most: bounded buffers and bounded state entries


class BatchByShardFn(beam.DoFn):
    """records (in the global window) -> ``(shard, (tag, (first_us, last_us, pickled list)))``,
    the span of the records' ``time_us``; each batch is stamped with its earliest record's
    timestamp, so it is never later than one of them."""

    def __init__(
        self,
        tag: str,
        shard: Callable[[Any], int],
        time_us: Callable[[Any], int],
        pack: Callable[[Any], Any] = lambda r: r,
        max_batch: int = MAX_BATCH,
    ):
        self.tag, self.shard, self.time_us = tag, shard, time_us
        self.pack, self.max_batch = pack, max_batch

    def start_bundle(self):
        self._batches: dict[int, list] = {}
        self._span: dict[int, list] = {}  # shard -> [first_us, last_us, earliest timestamp]

    def process(self, record, ts=beam.DoFn.TimestampParam):
        key = self.shard(record)
        batch = self._batches.setdefault(key, [])
        batch.append(self.pack(record))
        t = self.time_us(record)
        span = self._span.get(key)
        if span is None:
            self._span[key] = [t, t, ts]
        else:
            span[0], span[1], span[2] = min(span[0], t), max(span[1], t), min(span[2], ts)
        if len(batch) >= self.max_batch:
            yield self._flush(key)

    def finish_bundle(self):
        for key in sorted(self._batches):
            yield self._flush(key)

    def _flush(self, key: int) -> WindowedValue:
        batch = pickle.dumps(self._batches.pop(key), protocol=pickle.HIGHEST_PROTOCOL)
        first, last, ts = self._span.pop(key)
        return WindowedValue((key, (self.tag, (first, last, batch))), ts, [GlobalWindow()])


def unpack(batch: tuple[int, int, bytes]) -> list:
    """The records of a ``BatchByShardFn`` batch."""
    return pickle.loads(batch[2])


def settlement_batches(shards: int) -> BatchByShardFn:
    """Settlements by their account's shard, as ``SettlementRecord`` batches spanning their
    event times: what ``MonitorMargins`` and ``ComputeVaR`` key their shards by."""
    return BatchByShardFn(
        "settle",
        lambda s: shard_of(s.account_id, shards),
        lambda s: epoch_micros(s.event_time),
        settlement_record,
    )
