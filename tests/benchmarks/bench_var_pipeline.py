"""HS VaR + ES for 10,000 portfolios x 100 positions x 730 scenarios: inside a Beam pipeline vs
bare numpy, in the same run.

The pipeline carries one element per account shard (its exposure block) and the scenario returns
as a side input, and values each shard with ``transforms.var.engine._var_es``, the function
``ComputeVaR`` calls at every bucket end. Start-up is excluded: each DoFn times its own valuation
inside the worker and the pipeline figure is their sum (the wall time of the run, and of the same
pipeline with a DoFn that only touches the arrays, are reported beside it). Bare numpy is the same
function over all 10,000 portfolios at once.

    python -m tests.benchmarks.bench_var_pipeline [PORTFOLIOS] [SHARDS]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np

from runners.direct import local_pipeline_options
from tests.benchmarks.bench_var import market
from tests.benchmarks.common import emit, peak_rss_mb, timer
from transforms.var.engine import VarConfig, _var_es

CONFIG = VarConfig(methods=("historical",), level=0.99, es_level=0.975, window=730)


class ValueShardFn(beam.DoFn):
    def __init__(self, compute: bool):
        self.compute = compute

    def process(self, block, returns):
        started = time.perf_counter()
        if self.compute:
            var, es = _var_es("historical", returns, block, CONFIG)
        else:  # start-up and transport only
            var = es = block[:, 0]
        # (checksum, seconds spent valuing this shard inside the worker)
        yield float(var.sum() + es.sum()), time.perf_counter() - started


def _add_pairs(pairs) -> tuple[float, float]:
    """(checksum, seconds) summed over shards."""
    pairs = list(pairs)
    return (sum(p[0] for p in pairs), sum(p[1] for p in pairs))


def run_pipeline(
    blocks: list[np.ndarray], returns: np.ndarray, compute: bool
) -> tuple[float, float]:
    p = beam.Pipeline(options=local_pipeline_options())
    rets = p | "Returns" >> beam.Create([returns])
    total = (
        p
        | "Shards" >> beam.Create(blocks)
        | beam.ParDo(ValueShardFn(compute), beam.pvalue.AsSingleton(rets))
        | beam.CombineGlobally(_add_pairs)
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "total"
        total | beam.Map(lambda t: out.write_text(json.dumps(t)))  # DoFns are pickled: use a file
        with timer() as t:
            p.run().wait_until_finish()
        checksum, inside = json.loads(out.read_text())
        return t["seconds"], checksum, inside


def main(portfolios: int = 10_000, shards: int = 16) -> None:
    returns, positions = market(portfolios)
    blocks = np.array_split(positions, shards)
    _var_es("historical", returns, blocks[0], CONFIG)  # warm-up: first-call costs are not VaR
    bare_s, blocked_s = [], []
    for _ in range(3):  # best of three: the 2 cores are shared
        with timer() as bare:
            var, es = _var_es("historical", returns, positions, CONFIG)
        bare_s.append(bare["seconds"])
        with timer() as blocked:
            for block in blocks:
                _var_es("historical", returns, block, CONFIG)
        blocked_s.append(blocked["seconds"])
    expected = float(var.sum() + es.sum())
    empty_s, _, _ = run_pipeline(blocks, returns, compute=False)
    full_s, total, inside = run_pipeline(blocks, returns, compute=True)
    assert abs(total - expected) <= 1e-6 * abs(expected), (total, expected)
    emit(
        "var_hs_es_pipeline",
        portfolios=portfolios,
        positions=positions.shape[1],
        scenarios=returns.shape[0],
        shards=shards,
        numpy_seconds=round(min(bare_s), 4),
        numpy_same_shards_seconds=round(min(blocked_s), 4),
        pipeline_seconds=round(full_s, 3),
        startup_and_transport_seconds=round(empty_s, 3),
        pipeline_compute_seconds=round(inside, 4),
        ratio_pipeline_over_numpy=round(inside / min(bare_s), 2),
        ratio_pipeline_over_numpy_same_shards=round(inside / min(blocked_s), 2),
        target_ratio=2.0,
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
