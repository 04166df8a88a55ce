"""Margin event detector: zone transitions, hysteresis, price-status guard, alert cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from transforms.margin.detector import AccountState, DetectorConfig, next_zone, observe

T = datetime(2025, 1, 6, 12, tzinfo=UTC)
D = Decimal


def run(healths, statuses=None, start=T, step_s=60):
    state, events = AccountState(), []
    for i, h in enumerate(healths):
        status = statuses[i] if statuses else "ok"
        events += observe(
            "acct",
            state,
            None if h is None else D(str(h)),
            status,
            start + timedelta(seconds=i * step_s),
        )
    return state, events


def kinds(events):
    return [(e.event_type, e.alerted) for e in events]


def test_zone_transitions_emit_margin_call_liquidation_and_recovered():
    state, events = run([80, 45, 29, 14, 20, 40])
    assert kinds(events) == [("margin_call", True), ("liquidation", True), ("recovered", True)]
    assert [(e.previous_zone, e.zone) for e in events] == [
        ("warning", "margin_call"),
        ("margin_call", "liquidation"),
        ("margin_call", "warning"),
    ]
    assert state.zone == "warning"  # 40 is below the warning level of 50


def test_no_flapping_between_29_9_and_30_1():
    _, events = run([40, 29.9, 30.1, 29.9, 30.1, 29.9, 31.9, 32.0])
    assert kinds(events) == [("margin_call", True), ("recovered", True)]
    assert events[1].health_score == D("32.0")


def test_liquidation_exits_need_the_band_too():
    assert next_zone("liquidation", D("16"), "ok", DetectorConfig()) == "liquidation"
    assert next_zone("liquidation", D("17"), "ok", DetectorConfig()) == "margin_call"
    assert next_zone("liquidation", D("31"), "ok", DetectorConfig()) == "margin_call"
    assert next_zone("liquidation", D("33"), "ok", DetectorConfig()) == "warning"


def test_a_degraded_or_missing_price_never_moves_an_account_into_margin_call_or_liquidation():
    _, events = run([40, 10, 10, 10], ["ok", "degraded", "price_unavailable", "ok"])
    assert kinds(events) == [("liquidation", True)]
    assert events[0].event_ts == T + timedelta(minutes=3)  # only once a good price confirms it


def test_suppression_timeline_from_the_docstring():
    state = AccountState()
    cfg = DetectorConfig(cooldown_s=300)
    timeline = [
        ("12:00:00", "29.5"),
        ("12:01:00", "33.0"),
        ("12:02:00", "29.0"),
        ("12:04:30", "34.0"),
        ("12:06:00", "28.0"),
    ]
    got = []
    for clock, health in timeline:
        h, m, s = map(int, clock.split(":"))
        got += observe("acct", state, D(health), "ok", T.replace(hour=h, minute=m, second=s), cfg)
    assert kinds(got) == [
        ("margin_call", True),
        ("recovered", True),
        ("margin_call", False),
        ("recovered", False),
        ("margin_call", True),
    ]


def test_repaying_all_debt_is_a_recovery_and_ids_are_deterministic():
    _, events = run([25, None])
    assert (
        kinds(events) == [("margin_call", True), ("recovered", True)]
        and events[1].zone == "no_debt"
    )
    _, again = run([25, None])
    assert [e.alert_id for e in events] == [e.alert_id for e in again]
