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

from pydantic import AfterValidator, BeforeValidator, Field, Strict, ValidationInfo
from pydantic_core import PydanticCustomError

from schemas.addresses import AddressError, canonical_address, canonical_wallet, check_chain_id


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
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise PydanticCustomError(
            "absurd_timestamp", "timestamp out of range: {v}", {"v": value.isoformat()}
        ) from exc


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

# ---------------------------------------------------------------- input bounds
# What a valid input record is: the limits below are the contract, enforced at parse, so a stage
# never sees a value its arithmetic or its output columns cannot hold.
MAX_RECORD_BYTES = 256 * 1024  # one message; a profile with 1,000 wallets is ~45 KB
UINT256_MAX = 2**256 - 1
UINT80_MAX = 2**80 - 1  # Chainlink roundId / answeredInRound
MAX_BLOCK_NUMBER = 10**12  # Ethereum is near 2.4e7, Solana slots near 4e8
MAX_INDEX = 2**31 - 1  # log and transaction indexes within one block
MAX_DECIMALS = 36
# One trade or transfer of more than a quadrillion dollars is a corrupt price, not a market; the
# bound keeps every sum of them a stage writes (wash volume, AML totals) far inside NUMERIC.
MAX_USD = Decimal(10**15)
_ASCII_DIGITS = frozenset("0123456789")


def positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise PydanticCustomError("non_positive", "must be > 0, got {v}", {"v": str(value)})
    return value


def non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise PydanticCustomError("negative", "must be >= 0, got {v}", {"v": str(value)})
    return value


def usd_bound(value: Decimal) -> Decimal:
    if value > MAX_USD:
        raise PydanticCustomError(
            "out_of_range", "{v} USD exceeds the bound of {m}", {"v": f"{value:.3e}", "m": "1e15"}
        )
    return value


def _uint_string(value: str, limit: int, what: str) -> str:
    # str.isdigit() accepts "²" and other unicode digits; only ASCII 0-9 are a number here.
    if not value or not _ASCII_DIGITS.issuperset(value):
        raise PydanticCustomError(
            "wrong_type",
            "{what} must be a non-negative integer string of ASCII digits, got {v}",
            {"what": what, "v": value[:40]},
        )
    value = value.lstrip("0") or "0"
    if len(value) > len(str(limit)) or int(value) > limit:  # length first: int() of 10 MB is slow
        raise PydanticCustomError(
            "out_of_range",
            "{what} {v} exceeds {limit}",
            {"what": what, "v": value[:40], "limit": limit},
        )
    return value  # one spelling: no leading zeros


def raw_units(value: str) -> str:
    return _uint_string(value, UINT256_MAX, "raw token amount")


def round_number(value: str) -> str:
    return _uint_string(value, UINT80_MAX, "Chainlink round id")


def _printable(value: str) -> str:
    # Control characters (C0, DEL, C1), and the other characters Python does not print (line
    # and paragraph separators, format characters, unassigned code points), corrupt logs, CSV
    # reports and terminals downstream. Any script's letters, and the plain space, are printable.
    if not value.isprintable():
        raise PydanticCustomError(
            "control_character", "control or other non-printable characters are not allowed"
        )
    return value


def _ascii_token(value: str) -> str:
    if not value.isascii() or not value.isprintable() or " " in value:
        raise PydanticCustomError(
            "wrong_type", "must be printable ASCII without spaces, got {v}", {"v": value[:40]}
        )
    return value


def _chain_id(value: str) -> str:
    try:
        return check_chain_id(value)
    except AddressError as exc:
        raise PydanticCustomError("invalid_chain_id", str(exc)) from exc


def _address(value: str, info: ValidationInfo) -> str:
    chain_id = info.data.get("chain_id")
    if chain_id is None:  # the chain id itself failed; its error is reported
        return value
    try:
        return canonical_address(chain_id, value)
    except AddressError as exc:
        raise PydanticCustomError(
            "invalid_address",
            "{v} on {chain}: {why}",
            {"v": value[:50], "chain": chain_id, "why": str(exc)},
        ) from exc


def _wallet(value: str) -> str:
    try:
        return canonical_wallet(value)
    except AddressError as exc:
        raise PydanticCustomError(
            "invalid_address", "{v}: {why}", {"v": value[:50], "why": str(exc)}
        ) from exc


PositiveNumeric = Annotated[Numeric, AfterValidator(positive)]
NonNegativeNumeric = Annotated[Numeric, AfterValidator(non_negative)]
UsdAmount = Annotated[NonNegativeNumeric, AfterValidator(usd_bound)]
"""A USD value of one input record: 0 to 1e15."""
RawAmount = Annotated[TokenRaw, AfterValidator(raw_units)]
RoundId = Annotated[str, BQ("STRING"), AfterValidator(round_number)]

# Integers are strict: JSON true is not 1 and "18" is not 18.
Decimals = Annotated[int, Strict(), Field(ge=0, le=MAX_DECIMALS)]
BlockNumber = Annotated[int, Strict(), Field(ge=0, le=MAX_BLOCK_NUMBER)]
Index = Annotated[int, Strict(), Field(ge=0, le=MAX_INDEX)]

Id = Annotated[str, Strict(), Field(min_length=1, max_length=256), AfterValidator(_ascii_token)]
"""An identifier (event id, account id, tx hash, feed id): printable ASCII, 1-256 characters."""
Name = Annotated[str, Strict(), Field(min_length=1, max_length=64), AfterValidator(_printable)]
"""A short name (asset symbol, venue, tier): any script, no control characters, 1-64 chars."""
ChainId = Annotated[str, Strict(), Field(max_length=41), AfterValidator(_chain_id)]
Address = Annotated[str, Strict(), Field(min_length=1, max_length=128), AfterValidator(_address)]
"""An address on the record's ``chain_id``, checked and normalised by ``schemas.addresses``."""
Wallet = Annotated[str, Strict(), Field(min_length=1, max_length=128), AfterValidator(_wallet)]
"""An address whose chain is not given (a KYC profile's wallets), normalised by its format."""
