"""bench_margin_peers at a small size: a correctness check, not a timing (issue 17).

The generated margin job (``tests/benchmarks/margin_job.py``; 300 accounts, 20,000 events: 37 s
of BTC / ETH / USDC ticks from Chainlink and Pyth, 19,778 settlements) goes through our ``risk``
pipeline (``run_local``, 1-s price windows, VaR off) and through the plain numpy reference of the
same rules. Our run must account for every record with no dead letter and no refusal (every
tick valid, every composite ok, no withdraw or repay beyond what is held); margin calls,
liquidations and recoveries must happen (so that the comparison can fail); and per account the
number of each must equal the reference's. The job is what the benchmark says it is (sizes,
settlement times off the whole seconds, at most one per account and microsecond, unique ids)
and byte-identical for the same arguments. The reference's shortcut (a zone is kept while
health stays in that zone's interval, so only the other rows go through ``next_zone``) and the
scalar path of the Bytewax job are checked against ``next_zone`` itself on random healths, and
the check of the benchmark is shown to fail on a changed count or an unbalanced report. The
Bytewax job is checked against the reference too when bytewax is installed (never in ``make
test``: it is not a test dependency).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from runners.local.run import run_local
from tests.benchmarks.bench_margin_peers import RISK_ARGS, mismatches, our_counts, report_problems
from tests.benchmarks.margin_job import (
    ND,
    PRICES_FILE,
    SETTLEMENT_COLUMNS,
    SETTLEMENTS_FILE,
    STAY_HI,
    STAY_LO,
    Job,
    event_codes,
    event_one,
    generate,
    next_zone,
    next_zone_one,
    read_blocks,
    run_reference,
)

EVENTS, ACCOUNTS, SEED = 20_000, 300, 7


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, dict]:
    data = tmp_path_factory.mktemp("margin-job") / "input"
    return data, generate(data, EVENTS, ACCOUNTS, SEED)


@pytest.fixture(scope="module")
def ours(job, tmp_path_factory) -> tuple[dict, dict]:
    data, _ = job
    out = tmp_path_factory.mktemp("margin-job-ours")
    run_local(data, out, pipeline="risk", extra_args=RISK_ARGS)
    return json.loads((out / "run_report.json").read_text()), our_counts(out)


@pytest.fixture(scope="module")
def reference(job) -> dict:
    return run_reference(job[0])


def test_the_job_is_what_the_benchmark_says(job):
    data, sizes = job
    spec = Job(EVENTS, ACCOUNTS, SEED)
    assert sizes["price_events"] + sizes["settlements"] == EVENTS
    assert sizes["price_events"] == spec.price_events == spec.seconds * 6
    prices = (data / PRICES_FILE).read_text().splitlines()
    assert len(prices) == sizes["price_events"]
    sources = {(json.loads(x)["asset"], json.loads(x)["source"]) for x in prices}
    assert sources == {(a, s) for a in ("BTC", "ETH", "USDC") for s in ("chainlink", "pyth")}
    t = pa.Table.from_batches(list(read_blocks(data / SETTLEMENTS_FILE, SETTLEMENT_COLUMNS)))
    assert t.num_rows == sizes["settlements"]
    us = t["event_time"].cast(pa.int64()).to_numpy()
    assert (np.diff(us) >= 0).all()  # in time order
    assert (us % 1_000_000 != 0).all()  # never at a composite instant
    keys = pc.binary_join_element_wise(t["account_id"], pa.array(us).cast(pa.string()), "@")
    assert pc.count_distinct(keys).as_py() == t.num_rows  # one per account and microsecond
    ids = [json.loads(x)["event_id"] for x in (data / SETTLEMENTS_FILE).read_text().splitlines()]
    assert len(set(ids)) == len(ids)
    assert set(t["kind"].to_pylist()) == {"deposit", "withdraw", "borrow", "repay"}
    assert pc.count_distinct(t["account_id"]).as_py() == ACCOUNTS


def test_our_run_accounts_for_every_record_without_dead_letters(job, ours):
    _, sizes = job
    report, _ = ours
    expected = {"market.prices.v1": sizes["price_events"], "settlements.v1": sizes["settlements"]}
    assert report_problems(report, expected) == []


def test_margin_events_per_account_equal_the_numpy_reference(ours, reference):
    _, counts = ours
    assert reference["refused"] == 0
    assert reference["composites"] == Job(EVENTS, ACCOUNTS, SEED).seconds
    calls, liquidations, recoveries = np.array(list(counts.values())).sum(axis=0)
    assert calls > 0 and liquidations > 0 and recoveries > 0
    assert mismatches(counts, reference["accounts"]) == []
    assert counts == reference["accounts"]  # recoveries too


def test_the_check_fails_on_a_changed_count_or_an_unbalanced_report(job, ours):
    _, sizes = job
    report, counts = ours
    account = next(iter(counts))
    changed = {**counts, account: [counts[account][0] + 1, *counts[account][1:]]}
    assert mismatches(counts, changed) == [
        f"{account}: margin_call {counts[account][0]} vs {counts[account][0] + 1}"
    ]
    extra = {**counts, "acct-x": [0, 1, 0]}
    assert mismatches(counts, extra) == ["acct-x: liquidation 0 vs 1"]
    lost = json.loads(json.dumps(report))
    lost["topics"]["settlements.v1"]["out"] -= 1
    lost["topics"]["settlements.v1"]["dead_letter"] += 1
    lost["dead_letter_reasons"] = {"MonitorMargins.negative_balance": 1}
    expected = {"market.prices.v1": sizes["price_events"], "settlements.v1": sizes["settlements"]}
    assert len(report_problems(lost, expected)) == 2


def test_the_generator_is_deterministic(job, tmp_path):
    data, _ = job
    generate(tmp_path / "again", EVENTS, ACCOUNTS, SEED)
    generate(tmp_path / "other", EVENTS, ACCOUNTS, SEED + 1)
    for name in (PRICES_FILE, SETTLEMENTS_FILE):
        assert (tmp_path / "again" / name).read_bytes() == (data / name).read_bytes(), name
        assert (tmp_path / "other" / name).read_bytes() != (data / name).read_bytes(), name


def test_a_zone_is_kept_exactly_inside_its_interval():
    """The reference screens rows with STAY_LO / STAY_HI; next_zone keeps a zone exactly there
    (thresholds and band edges included)."""
    rng = np.random.default_rng(1)
    edges = np.array([15.0, 17.0, 30.0, 32.0, 50.0])
    health = np.concatenate(
        [rng.uniform(-100, 120, 20_000), edges, np.nextafter(edges, -np.inf), [np.nan] * 5]
    )
    for zone in range(5):
        state = np.full(health.size, zone, dtype=np.int8)
        kept = next_zone(state, health) == zone
        screen = (health >= STAY_LO[zone]) & (health < STAY_HI[zone])
        screen |= np.isnan(health) & (zone == ND)
        np.testing.assert_array_equal(kept, screen, err_msg=f"zone {zone}")


def test_the_scalar_path_equals_the_vectorised_one():
    """The Bytewax job applies a settlement with next_zone_one / event_one."""
    rng = np.random.default_rng(2)
    health = np.concatenate([rng.uniform(-100, 120, 2_000), [15, 17, 30, 32, 50], [np.nan]])
    for zone in range(5):
        state = np.full(health.size, zone, dtype=np.int8)
        new = next_zone(state, health)
        scalar = [next_zone_one(zone, None if np.isnan(h) else h) for h in health.tolist()]
        assert new.tolist() == scalar
        assert event_codes(state, new).tolist() == [event_one(zone, z) for z in scalar]


def test_bytewax_job_equals_the_reference(job, reference):
    pytest.importorskip("bytewax.dataflow")
    from tests.benchmarks.bytewax_job import run

    assert run(job[0], shards=8)["accounts"] == reference["accounts"]
