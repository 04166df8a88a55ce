"""Field types shared by every contract: money is Decimal, time is UTC event time.

The annotations carry the BigQuery type (``BQ``) so that Avro, BigQuery JSON and Arrow schemas are
all generated from the pydantic models in this package, the one source of truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class BQ:
    """The BigQuery column type of a field whose Python type alone is ambiguous."""

    type: str


NUMERIC_LIMIT = Decimal("1e29")  # BigQuery NUMERIC holds 29 integer digits

# Events from 1970 or from the far future are corrupt clocks, not markets.
MIN_EVENT_TIME = datetime(2009, 1, 3, tzinfo=UTC)  # the Bitcoin genesis block
MAX_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def _decimal_in(value: Any) -> Any:
    # Money travels as a decimal string. A JSON float has already lost precision, and a bool is
    # an int in Python, so both are refused rather than silently coerced.
    if isinstance(value, (bool, float)):
        raise PydanticCustomError(
            "wrong_type", "money must be a decimal string, not a JSON float or bool"
        )
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation as exc:
            raise PydanticCustomError(
                "wrong_type", "not a decimal number: {v}", {"v": value[:40]}
            ) from exc
    return value


def _decimal_finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise PydanticCustomError(
            "not_finite", "money must be finite (NaN and Infinity are rejected)"
        )
    if abs(value) >= NUMERIC_LIMIT:
        raise PydanticCustomError(
            "out_of_range", "{v} does not fit BigQuery NUMERIC", {"v": f"{value:.3e}"}
        )
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, in exact integer arithmetic (no float)."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def coerce_time(value: Any) -> Any:
    """Epoch seconds (or microseconds, when huge) to an aware UTC datetime; others unchanged."""
    if isinstance(value, bool):
        raise PydanticCustomError("wrong_type", "a timestamp cannot be a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise PydanticCustomError("not_finite", "timestamp must be finite")
        # Integers are epoch seconds when small and epoch microseconds when large.
        seconds = value / 1_000_000 if abs(value) > 10**11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PydanticCustomError(
                "absurd_timestamp", "timestamp out of range: {v}", {"v": str(value)}
            ) from exc
    return value


def _time_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise PydanticCustomError(
            "naive_timestamp", "timestamp must carry a timezone (UTC event time)"
        )
    return value.astimezone(UTC)


def _event_time(value: datetime) -> datetime:
    if not (MIN_EVENT_TIME <= value < MAX_EVENT_TIME):
        raise PydanticCustomError(
            "absurd_timestamp",
            "absurd event time {v} (outside 2009-01-03..2100-01-01)",
            {"v": value.isoformat()},
        )
    return value


Numeric = Annotated[
    Decimal, BQ("NUMERIC"), BeforeValidator(_decimal_in), AfterValidator(_decimal_finite)
]
"""USD amounts and prices: BigQuery NUMERIC (38 digits, scale 9), decimal string on the wire."""

Timestamp = Annotated[
    datetime, BQ("TIMESTAMP"), BeforeValidator(coerce_time), AfterValidator(_time_utc)
]
"""A UTC instant with microsecond precision (processing times, bookkeeping)."""

EventTime = Annotated[
    datetime,
    BQ("TIMESTAMP"),
    BeforeValidator(coerce_time),
    AfterValidator(_time_utc),
    AfterValidator(_event_time),
]
"""A UTC event time, checked to lie in a plausible range."""

Json = Annotated[str, BQ("JSON")]
"""A JSON document kept as its text (BigQuery JSON column)."""

TokenRaw = Annotated[str, BQ("STRING")]
"""A token amount in raw integer units (uint256 fits no numeric type), as a decimal string."""


def positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise PydanticCustomError("non_positive", "must be > 0, got {v}", {"v": str(value)})
    return value


def raw_units(value: str) -> str:
    if not value.isdigit():
        raise PydanticCustomError(
            "wrong_type",
            "raw token amount must be a non-negative integer string, got {v}",
            {"v": value[:40]},
        )
    return value


PositiveNumeric = Annotated[Numeric, AfterValidator(positive)]
RawAmount = Annotated[TokenRaw, AfterValidator(raw_units)]
