"""Account positions from settlements (pure): the state that VaR and margin health share.

A ``PositionBook`` holds one account's collateral and debt per asset in token units. Settlements
apply idempotently by ``event_id``: deposit and withdraw move collateral, borrow and repay move
debt, and a liquidation seizes collateral. A settlement that would drive a balance below zero is
refused (``negative_balance``) rather than clipped, because it means an earlier event is missing.

``exposure_matrix`` turns many books into the accounts x assets matrix of net USD exposure that
the vectorised VaR functions multiply with scenario returns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from schemas.events import Settlement

COLLATERAL_KINDS = {"deposit": 1, "withdraw": -1, "liquidation": -1}
# Where the chain gives no order, credits go before debits: a deposit and a borrow of one
# instant never read as a borrow against nothing.
_CREDIT_FIRST = {"deposit": 0, "repay": 0, "borrow": 1, "withdraw": 1, "liquidation": 1}
_LAST = 1 << 62
DEBT_KINDS = {"borrow": 1, "repay": -1}
# A position above 1e15 tokens of a registered asset (USDT's whole supply is ~1.4e11) is corrupt
# input; refused, it can never overflow a USD column (feed prices are bounded at 1e10).
MAX_POSITION_UNITS = Decimal(10**15)
_ZERO = Decimal(0)
SEEN_IDS_KEPT = 10_000  # per account: enough for any redelivery window, bounded for state size


class SettlementRecord(NamedTuple):
    """A validated ``Settlement``'s values as a plain tuple, with the model's field names: what
    stateful stages carry and keep in state (a model costs ~10x more to pickle and to encode).
    Everything that reads a settlement's fields (``PositionBook``, ``settlement_order``, the
    margin engine) takes either."""

    event_id: str
    account_id: str
    venue: str
    chain_id: str
    kind: str
    asset: str
    amount_raw: str
    decimals: int
    tx_hash: str | None
    block_number: int | None
    log_index: int | None
    tx_index: int | None
    event_time: datetime


def settlement_record(s: Settlement) -> SettlementRecord:
    return SettlementRecord(**s.__dict__)


def settlement_model(s: Settlement | SettlementRecord) -> Settlement:
    """The model again (for a dead letter's raw JSON): its values were validated already."""
    return s if isinstance(s, Settlement) else Settlement.model_construct(**s._asdict())


def settlement_order(s: Settlement | SettlementRecord) -> tuple:
    """The order of settlements within one instant: the chain's own (block number, then log
    index, then transaction index, where present), then credits before debits, and the id last
    only to be deterministic. Never id order first: ids are hashes."""
    return (
        _LAST if s.block_number is None else s.block_number,
        _LAST if s.log_index is None else s.log_index,
        _LAST if s.tx_index is None else s.tx_index,
        _CREDIT_FIRST[s.kind],
        s.event_id,
    )


@dataclass(frozen=True)
class Outcome:
    applied: bool
    reason: str | None = None  # duplicate, negative_balance or out_of_range when not applied
    message: str = ""


@dataclass
class PositionBook:
    account_id: str
    collateral: dict[str, Decimal] = field(default_factory=dict)
    debt: dict[str, Decimal] = field(default_factory=dict)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def apply(self, s: Settlement) -> Outcome:
        if s.account_id != self.account_id:
            raise ValueError(
                f"settlement {s.event_id} is for {s.account_id}, not {self.account_id}"
            )
        if s.event_id in self.seen:
            return Outcome(False, "duplicate", f"settlement {s.event_id} was already applied")
        amount = Decimal(s.amount_raw).scaleb(-s.decimals)
        book, sign = (
            (self.collateral, COLLATERAL_KINDS[s.kind])
            if s.kind in COLLATERAL_KINDS
            else (self.debt, DEBT_KINDS[s.kind])
        )
        new = book.get(s.asset, Decimal(0)) + sign * amount
        if new > MAX_POSITION_UNITS:
            return Outcome(
                False,
                "out_of_range",
                f"{s.kind} of {amount:.3e} {s.asset} exceeds the position bound",
            )
        if new < 0:
            side = "collateral" if book is self.collateral else "debt"
            return Outcome(
                False, "negative_balance", f"{s.kind} of {amount} {s.asset} leaves {side} at {new}"
            )
        if new == 0:
            book.pop(s.asset, None)
        else:
            book[s.asset] = new
        self.seen[s.event_id] = None
        while len(self.seen) > SEEN_IDS_KEPT:
            self.seen.popitem(last=False)
        return Outcome(True)

    def is_closed(self) -> bool:
        return not self.collateral and not self.debt

    def value_usd(self, prices: dict[str, Decimal]) -> tuple[Decimal, Decimal]:
        """(collateral_usd, borrow_usd); a held asset without a price raises KeyError by name."""
        missing = [a for a in (*self.collateral, *self.debt) if a not in prices]
        if missing:
            raise KeyError(f"no price for {', '.join(sorted(missing))}")
        return self.value_priced(prices)

    def value_priced(self, prices: Mapping[str, Decimal]) -> tuple[Decimal, Decimal]:
        """``value_usd`` when every held asset is known to have a price (the margin engine's
        per-row path, which checks that first)."""
        coll = debt = _ZERO
        for a, q in self.collateral.items():
            coll += q * prices[a]
        for a, q in self.debt.items():
            debt += q * prices[a]
        return coll, debt


def exposure_matrix(
    books: list[PositionBook], assets: list[str], prices: dict[str, float]
) -> np.ndarray:
    """accounts x assets net USD exposure (collateral minus debt, valued at ``prices``).

    Scenario P&L of every account is then ``exposure @ returns.T`` in one matrix product.
    """
    index = {a: j for j, a in enumerate(assets)}
    out = np.zeros((len(books), len(assets)))
    for i, b in enumerate(books):
        for sign, side in ((1.0, b.collateral), (-1.0, b.debt)):
            for asset, qty in side.items():
                if asset not in index:
                    raise KeyError(
                        f"account {b.account_id} holds {asset}, which has no return series"
                    )
                out[i, index[asset]] += sign * float(qty) * prices[asset]
    return out
