"""Reliability figures: bad records, redelivery and restarts, as JSON lines.

    .venv/bin/python -m tests.benchmarks.bench_reliability [--cases 2000] [--kills 10]

- ``parse``: per input topic, ``--cases`` payloads broken by the seeded mutator of
  ``tests/support/fuzz.py`` (nested JSON, unicode digits, huge integers, naive and absurd times,
  booleans for integers, control characters, 10 MB fields, garbage bytes) through ParseEventFn:
  tried, dead-lettered, accepted by the contract, crashed (an exception escaping: must be 0) and
  accepted_invalid (accepted but breaking the contract's own bounds: must be 0);
- ``restarts``: the kill-and-restart scenario of ``tests/support/restarts.py`` on the Pub/Sub
  emulator when gcloud has it (``--kills`` SIGKILLs): restarts survived, messages lost (must be
  0), false alerts (must be 0), margin events and alerts equal to the uninterrupted batch run.
  Skipped, with the reason, without the emulator.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from apache_beam.pvalue import TaggedOutput

from schemas.registry import INPUT_TOPICS
from tests.benchmarks.common import emit
from tests.support.fuzz import check_accepted, check_dead_letter, parse_one, random_payload


def bench_parse(cases: int, seed: int = 16) -> None:
    for topic in INPUT_TOPICS:
        rng = random.Random(f"{seed}:{topic}")
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        started = time.perf_counter()
        for _ in range(cases):
            payload = random_payload(topic, rng)
            counts["tried"] += 1
            try:
                out = parse_one(topic, payload)
            except Exception:  # what the fuzz forbids: counted, never raised here
                counts["crashed"] += 1
                continue
            if isinstance(out, TaggedOutput):
                counts["dead_lettered"] += 1
                reasons[out.value.error_reason] += 1
                check_dead_letter(out.value, payload)
                continue
            counts["accepted"] += 1
            try:
                check_accepted(topic, out.value)
            except AssertionError:
                counts["accepted_invalid"] += 1
        emit(
            "reliability_parse",
            topic=topic,
            tried=counts["tried"],
            dead_lettered=counts["dead_lettered"],
            accepted=counts["accepted"],
            crashed=counts["crashed"],
            accepted_invalid=counts["accepted_invalid"],
            reasons=dict(reasons.most_common()),
            seconds=round(time.perf_counter() - started, 2),
        )


def bench_restarts(kills: int) -> None:
    from runners.live.emulator import (
        emulator_unavailable_reason,
        free_host_port,
        start_emulator,
    )
    from tests.support.restarts import kill_and_restart

    reason = emulator_unavailable_reason()
    if reason:
        emit("reliability_restarts", skipped=reason)
        return
    with tempfile.TemporaryDirectory() as tmp:
        emulator = start_emulator(free_host_port(), "defi-risk-bench", Path(tmp) / "emulator.log")
        try:
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
            started = time.perf_counter()
            r = kill_and_restart(emulator.host, "defi-risk-bench-restarts", Path(tmp), kills)
        finally:
            emulator.stop()
    emit(
        "reliability_restarts",
        kills=len(r.kills),
        lives_s=r.kills,
        restarts_survived=len(r.kills) if r.final_exit == 0 else 0,
        published=r.published,
        messages_lost=r.lost,
        parsed_twice=sum(n - 1 for n in r.parsed.values() if n > 1),
        false_alerts=r.false_alerts,
        margin_events_equal=r.events == r.ref_events,
        alerts_equal=r.alerts == r.ref_alerts,
        alerts=sum(r.alerts.values()),
        seconds=round(time.perf_counter() - started, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="payloads per topic")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the live run")
    args = parser.parse_args()
    bench_parse(args.cases)
    bench_restarts(args.kills)


if __name__ == "__main__":
    main()
