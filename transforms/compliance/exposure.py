"""Exposure hops: how far an address is, in counterparties, from an OFAC-listed address.

Pure Python (no Beam). ``ExposureGraph`` is fed transfers one at a time, in event-time order
(ties by ``event_id``; ``transfer_order`` is the sort key), each with the ``SanctionsIndex`` of
the list version in force for it, and returns the ``ExposureHit`` rows of addresses that gained
exposure with that transfer. Parameters come from ``ExposurePolicy``
(``transforms.compliance.policy``, section ``exposure``); nothing is hard-coded.

Semantics:

- Nodes are (chain_id, normalised address): exposure never crosses chains. Addresses are
  normalised with ``SanctionsIndex.key_for`` (EVM lower-cased, ...), falling back to the
  stripped address when it returns None.
- A transfer *links* its two ends only when ``amount_usd >= min_amount_usd``; an unpriced
  transfer links only when ``min_amount_usd`` is 0 (its path amount then counts as 0). So a
  listed address dusting someone with $1 does not taint them.
- Hop 1: a link between a listed address L and a non-listed X (either direction) exposes X;
  path (L, X), evidence (tx L-X), path amount = the transfer's amount.
- Hop 2 (``max_hops == 2``): a link between a non-listed Y and an X that holds a *live* hop-1
  exposure, acquired at or before this link's time, exposes Y; path (L, X, Y), evidence
  (tx L-X, tx X-Y), path amount = the smaller of the two amounts.
- Temporal order matters: funds cannot flow backwards in time, so a Y-X link made before X
  became exposed never exposes Y, not even once X is exposed later. Exposure only propagates
  forward from the link that created it.
- An exposure expires ``window_h`` hours after the link that created it. Each address keeps
  its best live exposure: lowest hop, then highest score, then earliest.
- A hit is emitted when an address *gains* exposure: it had none (or only an expired one),
  or the hop improves, or the score rises at the same hop. Repeated links that do not change
  the best exposure emit nothing (anti-flood). Listed addresses (hop 0) are never emitted:
  the direct sanctions join covers them.
- Score = ``hop_scores[hop] * min(1, path_amount / full_amount_usd)``, rounded to 2 decimals;
  ``flagged`` at or above ``alert_score``, else ``clear``.

Continuity: a repeated link that does not beat the kept exposure is remembered as a single
*backup* (the latest one of the best hop and score seen since). When the kept exposure
expires, the backup takes over silently, so an address linked again and again within the
window stays exposed (and keeps exposing its counterparties) without re-emitting.

State holds only addresses with exposure (never every address seen); each transfer costs O(1)
dict work. Expired entries are dropped lazily when touched and in bulk by ``purge``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from schemas.base import deterministic_id
from schemas.events import Transfer
from schemas.tables import ComplianceScreeningRow
from transforms.compliance.lists import SanctionsIndex
from transforms.compliance.policy import ExposurePolicy
from transforms.compliance.screening import alert_of

_CENT = Decimal("0.01")
_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(frozen=True)
class ExposureHit:
    """One address gaining exposure; ``evidence()`` is the JSON row evidence."""

    hit_id: str
    address: str
    chain_id: str
    hop: int
    listed_address: str
    path: tuple[str, ...]
    evidence_tx_hashes: tuple[str, ...]
    path_amount_usd: Decimal
    risk_score: float
    screening_result: Literal["flagged", "clear"]
    tx_hash: str
    event_time: datetime
    list_version: str
    window_h: float = 0.0
    hop_score: float = 0.0

    def evidence(self) -> dict:
        return {
            "hop": self.hop,
            "listed_address": self.listed_address,
            "path": list(self.path),
            "evidence_tx_hashes": list(self.evidence_tx_hashes),
            "path_amount_usd": str(self.path_amount_usd),
            "window_h": self.window_h,
            "hop_score": self.hop_score,
            "list_version": self.list_version,
        }


@dataclass(frozen=True, slots=True)
class _Exposure:
    hop: int
    score: float
    path: tuple[str, ...]
    evidence: tuple[str, ...]
    amount: Decimal
    tx_hash: str
    event_time: datetime
    expires: datetime
    list_version: str

    def rank(self) -> tuple[int, float]:
        return (self.hop, -self.score)


class _State:
    __slots__ = ("best", "backup")

    def __init__(self, best: _Exposure) -> None:
        self.best: _Exposure | None = best
        self.backup: _Exposure | None = None

    def live(self, now: datetime) -> _Exposure | None:
        """The best exposure live at ``now``; promotes the backup when the best expired."""
        best = self.best
        if best is not None and now < best.expires:
            return best
        backup = self.backup
        self.backup = None
        if backup is not None and now < backup.expires:
            self.best = backup
            return backup
        self.best = None
        return None


def transfer_order(t: Transfer) -> tuple[datetime, str]:
    """The order ``ExposureGraph.process`` expects: event time, then event id."""
    return (t.event_time, t.event_id)


class ExposureGraph:
    """Counterparty-distance state of one stream of transfers (see the module docstring)."""

    def __init__(self, policy: ExposurePolicy) -> None:
        self.policy = policy
        self._window = timedelta(hours=policy.window_h)
        self._min_amount = policy.min_amount_usd
        self._full = policy.full_amount_usd
        self._max_hops = policy.max_hops
        self._hop_scores = {h: Decimal(str(s)) for h, s in policy.hop_scores.items()}
        self._state: dict[tuple[str, str], _State] = {}

    # ------------------------------------------------------------ helpers

    def _amount(self, t: Transfer) -> Decimal | None:
        """The path amount of a linking transfer, or None when it links nothing."""
        amount = t.amount_usd
        if amount is None:
            return _ZERO if self._min_amount == 0 else None
        return amount if amount >= self._min_amount else None

    def _score(self, hop: int, amount: Decimal) -> float:
        ratio = min(_ONE, amount / self._full) if amount > 0 else _ZERO
        return float((self._hop_scores[hop] * ratio).quantize(_CENT, ROUND_HALF_EVEN))

    def _live(self, node: tuple[str, str], now: datetime) -> _Exposure | None:
        state = self._state.get(node)
        if state is None:
            return None
        exp = state.live(now)
        if exp is None:
            del self._state[node]
        return exp

    def _offer(self, node: tuple[str, str], cand: _Exposure) -> ExposureHit | None:
        """Keeps ``cand`` if it beats the live exposure of ``node``; a hit when it does."""
        current = self._live(node, cand.event_time)
        if current is None:
            self._state[node] = _State(cand)
        elif cand.rank() < current.rank():
            state = self._state[node]
            state.best, state.backup = cand, None
        else:
            state = self._state[node]
            backup = state.backup
            if backup is None or cand.rank() <= backup.rank() or cand.event_time >= backup.expires:
                state.backup = cand
            return None
        chain_id, address = node
        hop_score = float(self._hop_scores[cand.hop])
        return ExposureHit(
            hit_id=deterministic_id(
                "exposure", chain_id, address, cand.hop, cand.tx_hash, cand.list_version
            ),
            address=address,
            chain_id=chain_id,
            hop=cand.hop,
            listed_address=cand.path[0],
            path=cand.path,
            evidence_tx_hashes=cand.evidence,
            path_amount_usd=cand.amount,
            risk_score=cand.score,
            screening_result="flagged" if cand.score >= self.policy.alert_score else "clear",
            tx_hash=cand.tx_hash,
            event_time=cand.event_time,
            list_version=cand.list_version,
            window_h=self.policy.window_h,
            hop_score=hop_score,
        )

    def _hop1(self, t: Transfer, listed: str, to: str, amount: Decimal, ver: str) -> _Exposure:
        return _Exposure(
            1,
            self._score(1, amount),
            (listed, to),
            (t.tx_hash,),
            amount,
            t.tx_hash,
            t.event_time,
            t.event_time + self._window,
            ver,
        )

    def _hop2(self, t: Transfer, via: _Exposure, to: str, amount: Decimal) -> _Exposure:
        amount = min(amount, via.amount)
        return _Exposure(
            2,
            self._score(2, amount),
            (*via.path, to),
            (*via.evidence, t.tx_hash),
            amount,
            t.tx_hash,
            t.event_time,
            t.event_time + self._window,
            via.list_version,
        )

    # ------------------------------------------------------------ API

    def process(self, t: Transfer, index: SanctionsIndex) -> list[ExposureHit]:
        """The hits of addresses that gain exposure with ``t`` (feed in ``transfer_order``)."""
        amount = self._amount(t)
        if amount is None:
            return []
        chain = t.chain_id
        a_raw, b_raw = t.from_address.strip(), t.to_address.strip()
        a_hit, b_hit = index.lookup(chain, a_raw), index.lookup(chain, b_raw)
        if a_hit is not None and b_hit is not None:
            return []
        a = a_hit.key if a_hit is not None else (index.key_for(chain, a_raw) or a_raw)
        b = b_hit.key if b_hit is not None else (index.key_for(chain, b_raw) or b_raw)
        if a == b:
            return []
        ver = index.version.version_id
        if a_hit is not None or b_hit is not None:
            listed, other = (a, b) if a_hit is not None else (b, a)
            hit = self._offer((chain, other), self._hop1(t, listed, other, amount, ver))
            return [hit] if hit is not None else []
        if self._max_hops < 2:
            return []
        now = t.event_time
        na, nb = (chain, a), (chain, b)
        ea, eb = self._live(na, now), self._live(nb, now)
        out = []
        # both candidates are built from the state before this transfer
        cands = []
        if eb is not None and eb.hop == 1 and eb.event_time <= now:
            cands.append((na, self._hop2(t, eb, a, amount)))
        if ea is not None and ea.hop == 1 and ea.event_time <= now:
            cands.append((nb, self._hop2(t, ea, b, amount)))
        for node, cand in cands:
            hit = self._offer(node, cand)
            if hit is not None:
                out.append(hit)
        return out

    def purge(self, now: datetime) -> int:
        """Drops the addresses whose exposure has expired at ``now``; returns how many."""
        dead = [node for node, state in self._state.items() if state.live(now) is None]
        for node in dead:
            del self._state[node]
        return len(dead)

    def __len__(self) -> int:
        """Addresses holding exposure state (expired ones count until touched or purged)."""
        return len(self._state)


EXPOSURE_RULE = "exposure.sanctioned_counterparty"


def exposure_row(hit: ExposureHit) -> ComplianceScreeningRow:
    return ComplianceScreeningRow(
        screening_id=hit.hit_id,
        address=hit.address,
        chain_id=hit.chain_id,
        screening_type="exposure",
        screening_result=hit.screening_result,
        rule_id=EXPOSURE_RULE,
        list_version=hit.list_version,
        matched_entity=None,
        risk_score=hit.risk_score,
        hop_distance=hit.hop,
        tx_hash=hit.tx_hash,
        evidence=json.dumps(hit.evidence(), sort_keys=True),
        screened_at=hit.event_time,
    )


def by_chain(t: Transfer) -> str:
    """Exposure paths never cross chains, and the graph of one chain must stay on one key."""
    return t.chain_id


class ExposureScreener:
    """``ScreenShardFn``'s screener for exposure hops: the graph state of one shard."""

    stage = "ScreenExposure"
    key_of = staticmethod(by_chain)

    def __init__(self, policy: ExposurePolicy):
        self.graph = ExposureGraph(policy)

    def screen(self, index: SanctionsIndex, t: Transfer):
        rows, alerts = [], []
        for hit in self.graph.process(t, index):
            row = exposure_row(hit)
            rows.append(row)
            if hit.screening_result != "clear":
                alerts.append(alert_of(row, hit.evidence_tx_hashes))
        return rows, alerts

    def purge(self, now_us: int) -> int:
        from datetime import UTC, datetime

        return self.graph.purge(datetime.fromtimestamp(now_us / 1e6, tz=UTC))
