"""Margin events from a stream of health scores (pure state machine, no Beam).

Zone transitions become events: entering ``margin_call`` or ``liquidation``, and ``recovered``
when an account climbs back out. Two rules keep alerts trustworthy:

- **Hysteresis.** An account leaves a zone only when its health clears that zone's threshold by
  ``band`` points (default 2): at 29.9 / 30.1 / 29.9 / 30.1 it enters margin_call once and stays
  there until health reaches 32. Entering a worse zone needs no band.
- **Price status.** An update valued with a ``degraded`` or ``price_unavailable`` price never moves
  an account into margin_call or liquidation; the zone is held until a good price confirms it.

Every transition is an event (the ``margin_events`` table). Alerts are throttled per
(account, event type): after an alert, the same alert is suppressed for ``cooldown_s`` seconds of
event time (default 300). A timeline for one account:

    12:00:00  health 29.5  -> margin_call   event, ALERT (first one)
    12:01:00  health 33.0  -> recovered     event, ALERT (another event type)
    12:02:00  health 29.0  -> margin_call   event, suppressed (12:00:00 + 5 min not reached)
    12:04:30  health 34.0  -> recovered     event, suppressed (12:01:00 + 5 min not reached)
    12:06:00  health 28.0  -> margin_call   event, ALERT (the window since 12:00:00 has passed)

The Beam wrapper keeps ``AccountState`` per account in state and clears it with an event-time
timer once the account has no debt and its cooldowns have expired, so state stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from schemas.base import deterministic_id
from schemas.tables import MarginEventRow
from transforms.margin.health import (
    LIQUIDATION,
    MARGIN_CALL,
    WARNING,
    to_decimal,
    validate_thresholds,
    zone_of,
)

RANK = {"no_debt": 0, "healthy": 0, "warning": 1, "margin_call": 2, "liquidation": 3}
ENTRY_EVENT = {"margin_call": "margin_call", "liquidation": "liquidation"}
GOOD_PRICE = "ok"


@dataclass(frozen=True)
class DetectorConfig:
    warning: Decimal = WARNING
    margin_call: Decimal = MARGIN_CALL
    liquidation: Decimal = LIQUIDATION
    band: Decimal = Decimal(2)
    cooldown_s: int = 300


@dataclass
class AccountState:
    zone: str = "no_debt"
    last_alert: dict[str, datetime] = field(default_factory=dict)  # event type -> last alert time


@lru_cache(maxsize=64)
def _thresholds(cfg: DetectorConfig) -> tuple[Decimal, Decimal, Decimal]:
    """The checked thresholds of a config, once per config (``next_zone`` runs per row)."""
    return validate_thresholds(cfg.warning, cfg.margin_call, cfg.liquidation)


def next_zone(
    state_zone: str, health: Decimal | None, price_status: str, cfg: DetectorConfig
) -> str:
    """The zone after one observation, with hysteresis and the price-status guard."""
    if health is None:
        return "no_debt"  # the debt is gone: nothing left to call
    h = health if type(health) is Decimal else to_decimal(health, "health", allow_negative=True)
    raw = zone_of(h, *_thresholds(cfg))
    if RANK[raw] > RANK[state_zone]:
        # Worse: move at once, but never into margin_call/liquidation on a doubtful price.
        if price_status != GOOD_PRICE and RANK[raw] >= RANK["margin_call"]:
            return state_zone if RANK[state_zone] >= RANK["warning"] else "warning"
        return raw
    if RANK[raw] == RANK[state_zone]:
        return raw
    # Better: climb out of a zone only once health clears its threshold by the band.
    current = state_zone
    if current == "liquidation":
        if health < cfg.liquidation + cfg.band:
            return "liquidation"
        current = "margin_call"
    if current == "margin_call" and health < cfg.margin_call + cfg.band:
        return "margin_call" if RANK[raw] < RANK["margin_call"] else raw
    return raw


def observe(
    account_id: str,
    state: AccountState,
    health: Decimal | None,
    price_status: str,
    event_ts: datetime,
    cfg: DetectorConfig = DetectorConfig(),
) -> list[MarginEventRow]:
    """Applies one health observation; returns the transition events (``alerted`` set by the
    cooldown). ``state`` is updated in place."""
    previous = state.zone
    new = next_zone(previous, health, price_status, cfg)
    state.zone = new
    if new == previous:
        return []
    if new in ENTRY_EVENT and RANK[new] > RANK[previous]:
        event_type = ENTRY_EVENT[new]
    elif RANK[previous] >= RANK["margin_call"] and RANK[new] < RANK["margin_call"]:
        event_type = "recovered"
    else:
        return []  # healthy <-> warning, or liquidation -> margin_call: not an event
    last = state.last_alert.get(event_type)
    alerted = last is None or event_ts >= last + timedelta(seconds=cfg.cooldown_s)
    if alerted:
        state.last_alert[event_type] = event_ts
    return [
        MarginEventRow(
            alert_id=deterministic_id("margin_event", account_id, event_type, event_ts),
            account_id=account_id,
            event_type=event_type,
            zone=new,
            previous_zone=previous,
            health_score=health,
            event_ts=event_ts,
            alerted=alerted,
        )
    ]
