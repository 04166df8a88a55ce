"""The per-update rules a price must pass before it can reach a risk number (pure, no Beam).

Stateless rules live here (``check_update``; ``ValidatePrices`` in ``transform.py`` applies them); the rules that need the order of a feed's
updates (a round or publish time going backwards, redelivered duplicates, late updates) are
applied by the composite, which sees each feed's updates in order. Every rejected update becomes a
dead letter with its reason and a ``prices`` counter ``ValidatePrices.<reason>``.

    pytest tests/transforms/prices/test_validation.py
"""

from __future__ import annotations

from decimal import Decimal

from schemas.events import PriceEvent
from transforms.prices.oracles import Feed, FeedRegistry

REASONS = (
    "unknown_feed",
    "unknown_asset",
    "non_positive_price",
    "stale",
    "answered_in_round_lag",
    "pinned_at_bound",
    "confidence_too_wide",
)


def feed_for(event: PriceEvent, registry: FeedRegistry) -> Feed | None:
    return (
        registry.by_id(event.feed_id)
        if event.feed_id
        else registry.for_asset(event.asset, event.source)
    )


def check_update(
    event: PriceEvent,
    registry: FeedRegistry,
    grace_s: int | None = None,
    max_conf_ratio: float | None = None,
) -> tuple[str, str] | None:
    """None when the update may be used, else (reason, message)."""
    if event.asset not in registry.assets():
        return "unknown_asset", f"asset {event.asset!r} has no feed in the registry"
    feed = feed_for(event, registry)
    if feed is None:
        return "unknown_feed", f"{event.source} feed {event.feed_id!r} is not in the registry"
    if feed.asset != event.asset or feed.source != event.source:
        return (
            "unknown_feed",
            f"feed {feed.feed_id} is {feed.source} {feed.asset}, the update says {event.source} {event.asset}",
        )
    if event.price <= 0:
        return "non_positive_price", f"price {event.price} is not positive"
    grace = registry.grace_s if grace_s is None else grace_s
    if event.observed_at is not None:
        age = (event.observed_at - event.publish_time).total_seconds()
        if age > feed.heartbeat_s + grace:
            return (
                "stale",
                f"age {age:.0f} s exceeds heartbeat {feed.heartbeat_s} s + grace {grace} s",
            )
    if (
        event.source == "chainlink"
        and event.round_id is not None
        and event.answered_in_round is not None
        and int(event.answered_in_round) < int(event.round_id)
    ):
        return (
            "answered_in_round_lag",
            f"answeredInRound {event.answered_in_round} < roundId {event.round_id}: the answer is carried over",
        )
    if feed.min_price is not None and event.price <= feed.min_price:
        return (
            "pinned_at_bound",
            f"price {event.price} is at the feed's minimum {feed.min_price} (circuit breaker)",
        )
    if feed.max_price is not None and event.price >= feed.max_price:
        return (
            "pinned_at_bound",
            f"price {event.price} is at the feed's maximum {feed.max_price} (circuit breaker)",
        )
    limit = registry.max_conf_ratio if max_conf_ratio is None else max_conf_ratio
    if event.confidence is not None and event.confidence / event.price > Decimal(str(limit)):
        return (
            "confidence_too_wide",
            f"conf/price {event.confidence / event.price:.4%} is above {limit:.2%}",
        )
    return None
