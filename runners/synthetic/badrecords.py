"""Malformed lines injected into the topic JSONL files (never built through the models)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np

from schemas.base import deterministic_id

BAD_SHARE = 0.0005
MIN_BAD = 3
REASONS = {
    "market.prices.v1": (
        "invalid_json",
        "missing_field",
        "wrong_type",
        "non_positive_price",
        "not_finite",
        "unknown_asset",
        "absurd_timestamp",
    ),
    "settlements.v1": ("invalid_json", "missing_field", "wrong_type", "absurd_timestamp"),
    "dex.trades.v1": (
        "invalid_json",
        "missing_field",
        "wrong_type",
        "not_finite",
        "absurd_timestamp",
    ),
    "liquidity.v1": ("invalid_json", "missing_field", "wrong_type", "absurd_timestamp"),
    "transfers.v1": (
        "invalid_json",
        "missing_field",
        "wrong_type",
        "not_finite",
        "absurd_timestamp",
    ),
    "accounts.profiles.v1": ("invalid_json", "missing_field", "wrong_type", "absurd_timestamp"),
}
TIME_FIELD = {"market.prices.v1": "publish_time", "accounts.profiles.v1": "updated_at"}
REQUIRED = {  # a required field (no default) to drop
    "market.prices.v1": "price",
    "settlements.v1": "amount_raw",
    "dex.trades.v1": "amount_in_raw",
    "liquidity.v1": "kind",
    "transfers.v1": "to_address",
    "accounts.profiles.v1": "kyc_status",
}
WRONG_TYPES = {  # (field, value): a JSON type the contract refuses
    "market.prices.v1": (("price", 3000.12), ("price", {"value": "3000.12"})),
    "settlements.v1": (("amount_raw", 1500000), ("block_number", "twelve")),
    "dex.trades.v1": (("amount_usd", 1234.56), ("log_index", "seven")),
    "liquidity.v1": (("amount0_raw", 42), ("block_number", "twelve")),
    "transfers.v1": (("amount_usd", 99.5), ("decimals", "six")),
    "accounts.profiles.v1": (("wallets", "0x" + "ab" * 20), ("country", 276)),
}
NUMERIC = {"market.prices.v1": "price", "dex.trades.v1": "amount_usd", "transfers.v1": "amount_usd"}


def n_bad(n_valid: int) -> int:
    return max(MIN_BAD, round(BAD_SHARE * n_valid))


def plan(topic: str, n_valid: int, rng: np.random.Generator) -> dict[int, list[str]]:
    """valid-record index -> reasons of the bad lines written right after that record."""
    reasons = REASONS[topic]
    order = [reasons[int(i)] for i in rng.permutation(len(reasons))]
    k = n_bad(n_valid)
    after = np.sort(rng.integers(0, max(n_valid, 1), k))
    out: dict[int, list[str]] = {}
    for i, pos in enumerate(after.tolist()):
        out.setdefault(pos, []).append(order[i % len(order)])
    return out


def corrupt(topic: str, template: str, reason: str, serial: int) -> str:
    """A bad line derived from a valid one (so it looks like a real record gone wrong)."""
    rec = json.loads(template)
    rec["event_id"] = deterministic_id("bad-record", topic, serial)
    time_field = TIME_FIELD.get(topic, "event_time")
    if reason == "invalid_json":
        text = json.dumps(rec, separators=(",", ":"))
        return text[: len(text) // 2]  # a truncated message: the object never closes
    if reason == "missing_field":
        rec.pop(REQUIRED[topic])
    elif reason == "wrong_type":
        field, value = WRONG_TYPES[topic][serial % 2]
        rec[field] = value
    elif reason == "non_positive_price":
        rec["price"] = "0" if serial % 2 else "-" + rec["price"]
    elif reason == "not_finite":
        rec[NUMERIC[topic]] = ("NaN", "Infinity")[serial % 2]
    elif reason == "unknown_asset":
        rec["asset"] = "FOO"
    elif reason == "absurd_timestamp":
        rec[time_field] = ("1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z")[serial % 2]
    else:
        raise ValueError(reason)
    return json.dumps(rec, separators=(",", ":"))


# ----------------------------------------------------------------------- rejected price updates
# Lines that satisfy the market.prices.v1 contract but that the pipeline must refuse: the price
# validation rules and the composite's ordered checks. They become dead letters with these reasons.
REJECT_REASONS = {
    "chainlink": (
        "stale",
        "answered_in_round_lag",
        "pinned_at_bound",
        "unknown_feed",
        "duplicate_update",
    ),
    "pyth": ("stale", "confidence_too_wide", "unknown_feed", "duplicate_update"),
}
N_REJECTS = 12  # per run: enough for every reason to appear in a demo


def plan_rejects(n_valid: int, rng: np.random.Generator) -> list[int]:
    """Positions (valid-record indices) after which a rejected update is written."""
    k = min(N_REJECTS, max(n_valid - 1, 0))
    return sorted(set(rng.choice(max(n_valid, 1), size=k, replace=False).tolist())) if k else []


def reject_update(template: str, reason: str, serial: int) -> str:
    """A contract-valid update derived from a valid one, which the pipeline must reject."""
    rec = json.loads(template)
    if reason == "duplicate_update":
        return template  # a redelivery: the very same message
    rec["event_id"] = deterministic_id("rejected-update", reason, serial)
    if reason == "stale":
        # Read two days after publication: beyond every heartbeat (USDC's is one day).
        published = datetime.fromisoformat(rec["publish_time"].replace("Z", "+00:00"))
        rec["observed_at"] = (published + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    elif reason == "answered_in_round_lag":
        rec["answered_in_round"] = str(int(rec["round_id"]) - 3)
    elif reason == "pinned_at_bound":
        rec["price"] = "0.00000001"  # the aggregators' minAnswer in the feed registry
    elif reason == "unknown_feed":
        rec["feed_id"] = "0x" + deterministic_id("unlisted-feed", serial)[:40]
    elif reason == "confidence_too_wide":
        rec["confidence"] = str(Decimal(rec["price"]) * Decimal("0.05"))
    else:
        raise ValueError(reason)
    return json.dumps(rec, separators=(",", ":"))
