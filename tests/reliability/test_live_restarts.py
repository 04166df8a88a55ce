"""Kill the live run at random points (SIGKILL) and restart it, 10 times, on the real emulator
(the scenario: tests/support/restarts.py). Afterwards, across all the runs:

- every published message is accounted for (parsed once, or a parse dead letter);
- margin_events and alerts equal those of an uninterrupted batch run of the same messages;
- there is no false alert (a liquidation at -100 from a lost position, say).

    .venv/bin/pytest tests/reliability/test_live_restarts.py -q -rA     (~2.5 min)
"""

from __future__ import annotations

import pytest

from tests.support.restarts import kill_and_restart

pytestmark = pytest.mark.pubsub

KILLS = 10


def test_ten_kills_lose_nothing_and_invent_nothing(pubsub_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    r = kill_and_restart(pubsub_emulator.host, "defi-risk-restarts", tmp_path, KILLS)
    assert len(r.kills) == KILLS and r.final_exit == 0, r.logs[-1]
    assert sum(r.ref_alerts.values()) >= 12, r.ref_alerts  # every account called, some liquidated
    assert r.published == sum(r.expected_ids.values()) + r.malformed
    # every published message is accounted for: parsed once, or a parse dead letter
    assert r.parsed == r.expected_ids, (
        r.kills,
        r.expected_ids - r.parsed,
        r.parsed - r.expected_ids,
    )
    assert r.parse_dead_letters == r.malformed and r.lost == 0
    # margin events and alerts: those of the uninterrupted run, no more, no less
    assert r.events == r.ref_events, (r.kills, r.events - r.ref_events, r.ref_events - r.events)
    assert r.alerts == r.ref_alerts, (r.kills, r.alerts - r.ref_alerts, r.ref_alerts - r.alerts)
    assert r.false_alerts == 0 and r.negative_balance == 0  # positions survived every restart
