"""Decoding of raw oracle numbers into decimal prices (pure; will move to transforms/ later)."""

from __future__ import annotations

from decimal import Decimal


def decode_scaled(mantissa: int | str, exponent: int) -> Decimal:
    """mantissa * 10**exponent, exactly: Chainlink uses exponent = -decimals, Pyth its expo.

    >>> decode_scaled(300012345678, -8), decode_scaled("12276250", -5)
    (Decimal('3000.12345678'), Decimal('122.76250'))
    """
    if isinstance(mantissa, bool):
        raise TypeError("mantissa must be an integer, not a bool")
    # The string constructor is exact; scaleb() would round to the 28-digit context.
    return Decimal(f"{int(mantissa)}E{int(exponent)}")


def decode_chainlink(answer: int | str, decimals: int) -> Decimal:
    """AggregatorV3 ``latestRoundData().answer`` with the feed's ``decimals()``."""
    return decode_scaled(answer, -decimals)


def decode_pyth(price: int | str, expo: int) -> Decimal:
    """Hermes ``price.price`` (or ``conf``) with ``price.expo``."""
    return decode_scaled(price, expo)
