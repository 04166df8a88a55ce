"""Oracle adapters: the feed registry and the decoding of Chainlink and Pyth updates (pure).

Chainlink AggregatorV3 ``latestRoundData()`` returns (roundId, answer, startedAt, updatedAt,
answeredInRound); roundId is ``(phaseId << 64) | aggregatorRoundId`` and is kept whole. The answer
is scaled by the feed's ``decimals()``. Pyth's Hermes API returns ``{"id", "price": {"price",
"conf", "expo", "publish_time"}, "ema_price": {...}}``; value = price * 10**expo.

    >>> decode_scaled(300012345678, -8), decode_scaled(12276250, -5), decode_scaled(1500, -5)
    (Decimal('3000.12345678'), Decimal('122.76250'), Decimal('0.01500'))

Both become ``PriceEvent`` (market.prices.v1). Decoding failures raise ``OracleDecodeError`` with a
reason code, which the Beam wrapper turns into a dead letter.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.base import deterministic_id
from schemas.events import PriceEvent
from transforms.common.dead_letter import reason_from_validation, short_message

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "config" / "feeds.toml"
MAX_ABS_EXPONENT = 40  # a Pyth expo or Chainlink decimals beyond this is corrupt, not a price


class OracleDecodeError(ValueError):
    """A raw oracle payload that cannot become a price event; ``reason`` is the dead-letter code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Feed:
    source: str
    asset: str
    feed_id: str
    heartbeat_s: int
    chain_id: str | None = None
    decimals: int | None = None
    deviation_pct: float | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None

    @property
    def key(self) -> str:
        return normalise_feed_id(self.feed_id)


@dataclass(frozen=True)
class FeedRegistry:
    feeds: tuple[Feed, ...]
    grace_s: int = 120
    max_conf_ratio: float = 0.02
    max_source_deviation_bps: float = 100.0

    def by_id(self, feed_id: str | None) -> Feed | None:
        return self._index().get(normalise_feed_id(feed_id)) if feed_id else None

    def for_asset(self, asset: str, source: str) -> Feed | None:
        return next((f for f in self.feeds if f.asset == asset and f.source == source), None)

    def assets(self) -> tuple[str, ...]:
        return tuple(sorted({f.asset for f in self.feeds}))

    def heartbeat(self, asset: str, source: str) -> int | None:
        feed = self.for_asset(asset, source)
        return feed.heartbeat_s if feed else None

    def _index(self) -> dict[str, Feed]:
        # frozen dataclass: cache the index on the instance without mutating its fields
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = {f.key: f for f in self.feeds}
            object.__setattr__(self, "_idx", idx)
        return idx


def normalise_feed_id(feed_id: str | None) -> str:
    """EVM addresses and Pyth ids compare case-insensitively, with or without 0x."""
    text = (feed_id or "").strip().lower()
    return text[2:] if text.startswith("0x") else text


class RegistryError(ValueError):
    """The feed registry file is invalid; the message names the feed and the key."""


def load_registry(path: str | Path | None = None) -> FeedRegistry:
    return _load_registry(str(path or DEFAULT_REGISTRY))


@lru_cache(maxsize=8)
def _load_registry(path: str) -> FeedRegistry:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"cannot read feed registry {path}: {exc}") from exc
    defaults = data.get("defaults", {})
    feeds, seen = [], set()
    for i, raw in enumerate(data.get("feed", [])):
        where = f"{path}: feed #{i + 1} ({raw.get('source')} {raw.get('asset')})"
        for key in ("source", "asset", "feed_id", "heartbeat_s"):
            if key not in raw:
                raise RegistryError(f"{where}: missing key '{key}'")
        if raw["source"] not in ("chainlink", "pyth"):
            raise RegistryError(f"{where}: source must be chainlink or pyth, got {raw['source']!r}")
        if raw["source"] == "chainlink" and "decimals" not in raw:
            raise RegistryError(f"{where}: a chainlink feed needs 'decimals'")
        if not isinstance(raw["heartbeat_s"], int) or raw["heartbeat_s"] <= 0:
            raise RegistryError(f"{where}: heartbeat_s must be a positive integer of seconds")
        feed = Feed(
            source=raw["source"],
            asset=raw["asset"],
            feed_id=raw["feed_id"],
            heartbeat_s=raw["heartbeat_s"],
            chain_id=raw.get("chain_id"),
            decimals=raw.get("decimals"),
            deviation_pct=raw.get("deviation_pct"),
            min_price=Decimal(raw["min_price"]) if "min_price" in raw else None,
            max_price=Decimal(raw["max_price"]) if "max_price" in raw else None,
        )
        if feed.key in seen:
            raise RegistryError(f"{where}: duplicate feed_id {feed.feed_id}")
        seen.add(feed.key)
        feeds.append(feed)
    if not feeds:
        raise RegistryError(f"{path}: no [[feed]] entries")
    return FeedRegistry(
        feeds=tuple(feeds),
        grace_s=int(defaults.get("grace_s", 120)),
        max_conf_ratio=float(defaults.get("max_conf_ratio", 0.02)),
        max_source_deviation_bps=float(defaults.get("max_source_deviation_bps", 100.0)),
    )


# ------------------------------------------------------------------------------------- decoding
def decode_scaled(mantissa: Any, exponent: Any) -> Decimal:
    """mantissa * 10**exponent exactly (Decimal.scaleb would round to 28 digits)."""
    m, e = _int(mantissa, "mantissa"), _int(exponent, "exponent")
    if abs(e) > MAX_ABS_EXPONENT:
        raise OracleDecodeError("absurd_exponent", f"exponent {e} is outside ±{MAX_ABS_EXPONENT}")
    return Decimal(f"{m}E{e}")


def _int(value: Any, name: str) -> int:
    # Oracle integers arrive as JSON numbers or decimal strings; floats and bools are corrupt.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise OracleDecodeError(
            "wrong_type", f"{name} must be an integer or integer string, got {type(value).__name__}"
        )
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit() or not text.isascii() or len(text) > 100:
            raise OracleDecodeError("wrong_type", f"{name} is not an integer: {value[:40]!r}")
        return int(text)
    return value


def compose_round_id(phase_id: int, aggregator_round_id: int) -> int:
    """Chainlink proxy round id: the phase in the top 16 bits of the uint80."""
    return (phase_id << 64) | aggregator_round_id


def split_round_id(round_id: int) -> tuple[int, int]:
    return round_id >> 64, round_id & ((1 << 64) - 1)


def _epoch(value: Any, name: str) -> datetime:
    seconds = _int(value, name)
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise OracleDecodeError("absurd_timestamp", f"{name} {seconds} is not a time") from exc


def _field(raw: dict, *names: str) -> Any:
    for name in names:
        if name in raw:
            return raw[name]
    raise OracleDecodeError("missing_field", f"missing field {names[0]!r}")


def _event(**fields) -> PriceEvent:
    try:
        return PriceEvent(**fields)
    except ValidationError as err:
        raise OracleDecodeError(reason_from_validation(err), short_message(err)) from err


def decode_chainlink_round(
    raw: Any, registry: FeedRegistry, observed_at: datetime | None = None
) -> PriceEvent:
    """A Chainlink round, as ``latestRoundData()`` plus the feed address, to a PriceEvent.

    Accepts snake_case or camelCase keys; ``round_id`` may be given whole or as
    ``phase_id`` + ``aggregator_round_id``.
    """
    if not isinstance(raw, dict):
        raise OracleDecodeError(
            "wrong_type", f"a Chainlink round is a JSON object, got {type(raw).__name__}"
        )
    feed = registry.by_id(_field(raw, "feed", "feed_id", "proxy"))
    if feed is None or feed.source != "chainlink":
        raise OracleDecodeError(
            "unknown_feed",
            f"feed {str(raw.get('feed'))[:66]!r} is not a Chainlink feed in the registry",
        )
    if "phase_id" in raw and "round_id" not in raw:
        round_id = compose_round_id(
            _int(raw["phase_id"], "phase_id"),
            _int(_field(raw, "aggregator_round_id"), "aggregator_round_id"),
        )
    else:
        round_id = _int(_field(raw, "round_id", "roundId"), "round_id")
    answered = _int(_field(raw, "answered_in_round", "answeredInRound"), "answered_in_round")
    decimals = _int(raw.get("decimals", feed.decimals), "decimals")
    if round_id < 0 or answered < 0 or round_id >= 1 << 80:
        raise OracleDecodeError("wrong_type", f"round ids must be uint80, got {round_id}")
    price = decode_scaled(_field(raw, "answer"), -decimals)
    updated = _epoch(_field(raw, "updated_at", "updatedAt"), "updated_at")
    started = _epoch(_field(raw, "started_at", "startedAt"), "started_at")
    return _event(
        event_id=deterministic_id("chainlink", feed.key, round_id),
        asset=feed.asset,
        source="chainlink",
        price=price,
        publish_time=updated,
        feed_id=feed.feed_id,
        round_id=str(round_id),
        answered_in_round=str(answered),
        started_at=started,
        chain_id=feed.chain_id,
        observed_at=observed_at,
    )


def decode_pyth_update(
    raw: Any, registry: FeedRegistry, observed_at: datetime | None = None
) -> PriceEvent:
    """One Hermes parsed price update (``/v2/updates/price/latest?parsed=true``) to a PriceEvent."""
    if not isinstance(raw, dict):
        raise OracleDecodeError(
            "wrong_type", f"a Pyth update is a JSON object, got {type(raw).__name__}"
        )
    feed_id = _field(raw, "id")
    feed = registry.by_id(feed_id) if isinstance(feed_id, str) else None
    if feed is None or feed.source != "pyth":
        raise OracleDecodeError(
            "unknown_feed", f"Pyth feed {str(feed_id)[:66]!r} is not in the registry"
        )
    price_obj = _field(raw, "price")
    if not isinstance(price_obj, dict):
        raise OracleDecodeError(
            "wrong_type", "price must be an object with price, conf, expo and publish_time"
        )
    expo = _field(price_obj, "expo")
    ema = raw.get("ema_price")
    ema_price = (
        decode_scaled(_field(ema, "price"), _field(ema, "expo")) if isinstance(ema, dict) else None
    )
    publish = _epoch(_field(price_obj, "publish_time"), "publish_time")
    return _event(
        event_id=deterministic_id("pyth", feed.key, int(publish.timestamp())),
        asset=feed.asset,
        source="pyth",
        price=decode_scaled(_field(price_obj, "price"), expo),
        confidence=decode_scaled(_field(price_obj, "conf"), expo),
        ema_price=ema_price,
        publish_time=publish,
        feed_id="0x" + feed.key,
        chain_id=feed.chain_id,
        observed_at=observed_at,
    )
