"""Small builders of valid contract records for tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from schemas.events import Settlement


def settlement(
    event_id: str,
    account: str,
    kind: str,
    asset: str,
    amount: str,
    when: datetime,
    decimals: int = 18,
) -> Settlement:
    """A settlement of ``amount`` token units (converted to raw units with ``decimals``)."""
    return Settlement(
        event_id=event_id,
        account_id=account,
        venue="aave_v3",
        kind=kind,
        asset=asset,
        amount_raw=str(int(Decimal(amount).scaleb(decimals))),
        decimals=decimals,
        event_time=when,
    )
