"""Compliance throughput: the pure cores, and the compliance pipeline on the local runner.

On the generated transfers (and their account profiles) of DAYS days:
- ``compliance_core``: per transfer, the sanctions matching core (both addresses looked up in the
  version in force), ``screen_transfer`` (the same plus the row and alert models), the exposure
  graph and the AML engine (legs resolved to subjects), each in one process without Beam;
- ``compliance_pipeline``: ``defi-risk run compliance`` (SanctionsJoin, ScreenExposure, MonitorAml,
  parsing and sinks) on the local runner, transfers/s over the whole run, with the ratio to the
  sum of the pure cores measured in the same run (the baseline: the same screening work in one
  process without Beam).

    .venv/bin/python -m tests.benchmarks.bench_compliance [DAYS]
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from runners.local.run import run_local
from runners.synthetic import generate
from schemas.events import AccountProfile, Transfer
from tests.benchmarks.common import emit, peak_rss_mb, timer
from transforms.common.parse import decode
from transforms.compliance.aml import AmlEngine, resolve_legs
from transforms.compliance.exposure import ExposureGraph
from transforms.compliance.lists import SanctionsIndex, normalise_address
from transforms.compliance.policy import load_policy
from transforms.compliance.screening import in_force, screen_transfer
from transforms.compliance.store import bundled_versions


def _read(path: Path, model):
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            out.append(decode(model, raw, "json"))
        except ValueError:  # the generator's injected bad lines
            continue
    return out


def cores(transfers: list[Transfer], profiles: list[AccountProfile]) -> dict:
    policy = load_policy()
    versions = bundled_versions()
    t_us = int(transfers[0].event_time.timestamp() * 1e6)
    index = SanctionsIndex(in_force(versions, t_us))
    lookup = index.lookup
    pairs = [(t.chain_id, t.from_address, t.to_address) for t in transfers]
    with timer() as match:
        hits = 0
        for chain, a, b in pairs:
            hits += (lookup(chain, a) is not None) + (lookup(chain, b) is not None)
    with timer() as screen:
        for t in transfers:
            screen_transfer(index, t)
    graph = ExposureGraph(policy.exposure)
    with timer() as expo:
        exposed = sum(len(graph.process(t, index)) for t in transfers)
    by_wallet: dict[str, list[AccountProfile]] = {}
    for p in profiles:
        for w in p.wallets:
            by_wallet.setdefault(normalise_address(w), []).append(p)
    engine = AmlEngine(policy)
    with timer() as aml:
        legs = aml_hits = 0
        for t in transfers:
            for leg in resolve_legs(t, by_wallet):
                legs += 1
                aml_hits += len(engine.process(leg))
    n = len(transfers)
    return {
        "transfers": n,
        "list_hits": hits,
        "exposure_hits": exposed,
        "aml_legs": legs,
        "aml_hits": aml_hits,
        "matching_core_transfers_per_s": round(n / match["seconds"]),
        "screen_transfer_per_s": round(n / screen["seconds"]),
        "exposure_transfers_per_s": round(n / expo["seconds"]),
        "aml_transfers_per_s": round(n / aml["seconds"]),
        "seconds": match["seconds"] + screen["seconds"] + expo["seconds"] + aml["seconds"],
    }


def main(days: int = 7) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "in", Path(tmp) / "out"
        generate(data, days=days, accounts=200, seed=7, start=datetime(2025, 1, 6, tzinfo=UTC))
        transfers = sorted(
            _read(data / "transfers.v1.jsonl", Transfer),
            key=lambda t: (t.event_time, t.event_id),  # the order MonitorAml feeds its engine
        )
        profiles = _read(data / "accounts.profiles.v1.jsonl", AccountProfile)
        core = cores(transfers, profiles)
        base_seconds = core.pop("seconds")
        emit(
            "compliance_core",
            days=days,
            **core,
            target_matching_core_transfers_per_s=100_000,
            peak_rss_mb=peak_rss_mb(),
        )
        with timer() as run:
            report = run_local(data, out, pipeline="compliance", num_workers=2)
        n = core["transfers"]
        emit(
            "compliance_pipeline",
            days=days,
            transfers=n,
            workers=2,
            pipeline_seconds=round(run["seconds"], 2),
            pipeline_transfers_per_s=round(n / run["seconds"]),
            baseline_seconds=round(base_seconds, 2),
            baseline_transfers_per_s=round(n / base_seconds),
            ratio_pipeline_over_baseline_throughput=round(base_seconds / run["seconds"], 3),
            balanced=report.balanced(),
            peak_rss_mb=peak_rss_mb(),
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
