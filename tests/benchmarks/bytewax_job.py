"""The margin job of ``margin_job.py`` as a Bytewax 0.21 dataflow: the peer in bench_margin_peers.

    python -m tests.benchmarks.bytewax_job --input-dir DIR --out COUNTS.json [--shards 64]

Needs ``bytewax`` (the ``bench`` extra: ``pip install -e '.[bench]'``), never a test dependency;
imported only when it is installed. One worker (``bytewax.run.cli_main``, one process, one
worker), the input read with the reference's reader (``margin_job.read_blocks``, pyarrow's JSON
reader, one thread), the rules and the book of the reference (``margin_job.Composer``,
``margin_job.MarginBook``):

    read (both topic files, merged in event time: one item per price update or settlement)
      -> composite  (stateful_flat_map on one key: the 1-s composites, as in the reference, emitted
                     once a later event closes their window; settlements pass through after them)
      -> route      (flat_map: a composite to every shard, a settlement to its account's shard,
                     crc32(account) % shards)
      -> book       (stateful_flat_map per shard: a MarginBook, the shard's positions as numpy
                     arrays; a composite revalues the whole shard at once, a settlement its account)
      -> out        (the margin events, (account, type))

Writes the same counts JSON as ``margin_job.py reference``.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.run import cli_main
from bytewax.testing import TestingSink

from tests.benchmarks.margin_job import (
    COL,
    EVENT_TYPES,
    KIND,
    PRICES_FILE,
    SETTLEMENT_COLUMNS,
    SETTLEMENTS_FILE,
    Composer,
    JobError,
    MarginBook,
    int64s,
    numbers,
    price_updates,
    read_blocks,
    write_counts,
)

BATCH = 2048  # items handed to the dataflow per poll of the source


def _settlement_items(path: Path):
    """("s", t_us, account, column, side, signed amount) per settlement, in file order."""
    for b in read_blocks(path, SETTLEMENT_COLUMNS):
        qty = numbers(b.column("amount_raw")) / np.power(10.0, int64s(b.column("decimals")))
        times = int64s(b.column("event_time")).tolist()
        for t, account, kind, asset, q in zip(
            times,
            b.column("account_id").to_pylist(),
            b.column("kind").to_pylist(),
            b.column("asset").to_pylist(),
            qty.tolist(),
            strict=True,
        ):
            side, sign = KIND[kind]
            yield ("s", t, account, COL[asset], side, sign * q)


def merged(input_dir: Path):
    """Every event of the job in event-time order (a price update before a settlement at the same
    instant), then ("end",)."""
    prices = (("p", t, a, s, p) for a, s, p, t in price_updates(input_dir / PRICES_FILE))
    settlements = _settlement_items(input_dir / SETTLEMENTS_FILE)
    p, s = next(prices, None), next(settlements, None)
    while p is not None or s is not None:
        if s is None or (p is not None and p[1] <= s[1]):
            yield p
            p = next(prices, None)
        else:
            yield s
            s = next(settlements, None)
    yield ("end",)


class _JobPartition(StatefulSourcePartition):
    def __init__(self, input_dir: Path):
        self.items = merged(input_dir)

    def next_batch(self):
        batch = [x for _, x in zip(range(BATCH), self.items, strict=False)]
        if not batch:
            raise StopIteration
        return batch

    def snapshot(self):
        return None  # no recovery: the benchmark reads the files once


class JobSource(FixedPartitionedSource):
    def __init__(self, input_dir: Path):
        self.input_dir = Path(input_dir)

    def list_parts(self):
        return ["job"]

    def build_part(self, step_id, for_part, resume_state):
        return _JobPartition(self.input_dir)


def compose(composer: Composer | None, item):
    """One key for the whole stream: the composites of the windows an event closes, then the
    event when it is a settlement."""
    composer = composer or Composer()
    kind = item[0]
    if kind == "p":
        _, t, asset, source, price = item
        return composer, [("pack", end, p) for end, p in composer.add(asset, source, price, t)]
    if kind == "s":
        out = [("pack", end, p) for end, p in composer.until(item[1])]
        out.append(item)
        return composer, out
    return composer, [("pack", end, p) for end, p in composer.until(0, final=True)]


def build(input_dir: Path, shards: int, sink: list) -> Dataflow:
    flow = Dataflow("margin_job")
    events = op.input("read", flow, JobSource(input_dir))
    clock = op.key_on("one_clock", events, lambda _: "clock")
    timed = op.stateful_flat_map("composite", clock, compose)
    names = [str(k) for k in range(shards)]

    def route(keyed):
        item = keyed[1]
        if item[0] == "pack":
            return [(k, item) for k in names]
        return [(names[zlib.crc32(item[2].encode()) % shards], item)]

    routed = op.flat_map("route", timed, route)

    def book_step(book: MarginBook | None, item):
        book = book or MarginBook(capacity=256)
        if item[0] == "pack":
            return book, book.on_prices(item[2])
        _, _, account, col, side, delta = item
        return book, book.apply_one(book.row(account), col, side, delta)

    margin_events = op.stateful_flat_map("book", routed, book_step)
    op.output("out", margin_events, TestingSink(sink))
    return flow


def run(input_dir: str | Path, shards: int = 64) -> dict:
    """The job through the dataflow; the counts of ``margin_job.run_reference``'s shape."""
    sink: list = []
    cli_main(build(Path(input_dir), shards, sink), workers_per_process=1)
    counts: dict[str, list[int]] = {}
    index = {e: i for i, e in enumerate(EVENT_TYPES)}
    for _, (account, event) in sink:
        counts.setdefault(account, [0, 0, 0])[index[event]] += 1
    totals = np.array(list(counts.values()) or [[0, 0, 0]]).sum(axis=0).tolist()
    return {
        "accounts": dict(sorted(counts.items())),
        "events": dict(zip(EVENT_TYPES, totals, strict=True)),
        "margin_call_accounts": sum(1 for c in counts.values() if c[0]),
        "liquidation_accounts": sum(1 for c in counts.values() if c[1]),
        "shards": shards,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input-dir", required=True)
    p.add_argument("--out", required=True, help="where the counts go (JSON)")
    p.add_argument("--shards", type=int, default=64)
    a = p.parse_args(argv)
    start = time.perf_counter()
    try:
        result = run(a.input_dir, a.shards)
    except JobError as exc:
        print(f"bytewax_job: {exc}", file=sys.stderr)
        return 2
    write_counts(a.out, result, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
