"""The direct list match (pure, no Beam): both addresses of a transfer against the list version
in force at its event time.

A version takes effect at 00:00 UTC of its effective date, in event time, so a replay screens a
transfer against the list that was in force when it happened, and a new version (a delisting too)
applies from its date on (``in_force``). ``screen_transfer`` gives one ``compliance_screenings``
row per address (``screening_type`` sanctions; ``blocked`` with risk 100 on a list hit, ``clear``
with 0 otherwise; the list version always) and a ``ComplianceAlert`` per hit (``alert_of`` makes
the alert of any screening row). ``SanctionsScreener`` is the screener ``SanctionsJoin`` runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time

from schemas.base import deterministic_id
from schemas.events import ComplianceAlert, Transfer
from schemas.tables import ComplianceScreeningRow
from schemas.types import epoch_micros
from transforms.compliance.lists import ListVersion, SanctionsIndex

RULE_ID = "ofac_sdn_digital_currency"


def transfer_order(t: Transfer) -> tuple:
    """The chain's order of transfers (event time, block, log index; the id breaks ties)."""
    return (t.event_time, t.block_number, t.log_index, t.event_id)


def transfer_us(t: Transfer) -> int:
    return epoch_micros(t.event_time)


def effective_us(v: ListVersion) -> int:
    return epoch_micros(datetime.combine(v.effective_date, time(0), tzinfo=UTC))


def in_force(versions: list[ListVersion], t_us: int) -> ListVersion | None:
    """The latest version effective at ``t_us`` (ties: the later version id)."""
    due = [v for v in versions if effective_us(v) <= t_us]
    return max(due, key=lambda v: (v.effective_date, v.version_id)) if due else None


def screen_transfer(
    index: SanctionsIndex, t: Transfer
) -> tuple[list[ComplianceScreeningRow], list[ComplianceAlert]]:
    """Pure: the two screening rows of one transfer, and an alert per hit."""
    rows, alerts = [], []
    version = index.version.version_id
    for side, address in (("from", t.from_address), ("to", t.to_address)):
        hit = index.lookup(t.chain_id, address)
        sid = deterministic_id("sanctions", t.event_id, side, address, version)
        entity = None
        if hit is not None:
            names = sorted(n for _, n in hit.entry.entities if n)
            entity = names[0] if names else None
        rows.append(
            ComplianceScreeningRow(
                screening_id=sid,
                address=hit.key if hit else address,
                chain_id=t.chain_id,
                screening_type="sanctions",
                screening_result="blocked" if hit else "clear",
                rule_id=RULE_ID,
                list_version=version,
                matched_entity=entity,
                risk_score=100.0 if hit else 0.0,
                hop_distance=0 if hit else None,
                tx_hash=t.tx_hash,
                evidence=json.dumps(
                    {"side": side, "listed_assets": sorted(hit.assets)} if hit else {"side": side}
                ),
                screened_at=t.event_time,
            )
        )
        if hit:
            alerts.append(alert_of(rows[-1], (t.tx_hash,)))
    return rows, alerts


def by_event_id(t: Transfer) -> str:
    """Direct hits need no shared state: transfers spread evenly over the shards."""
    return t.event_id


class SanctionsScreener:
    """The direct list match: stateless, so one instance serves every firing."""

    stage = "SanctionsJoin"

    def screen(self, index: SanctionsIndex, t: Transfer):
        return screen_transfer(index, t)

    def purge(self, now_us: int) -> int:
        return 0


def alert_of(row: ComplianceScreeningRow, evidence_tx_hashes: tuple[str, ...]) -> ComplianceAlert:
    return ComplianceAlert(
        alert_id=deterministic_id("alert", row.screening_id),
        screening_id=row.screening_id,
        address=row.address,
        chain_id=row.chain_id,
        screening_result=row.screening_result,
        rule_id=row.rule_id,
        list_version=row.list_version,
        risk_score=row.risk_score,
        tx_hash=row.tx_hash,
        evidence_tx_hashes=list(evidence_tx_hashes),
        screened_at=row.screened_at,
    )
