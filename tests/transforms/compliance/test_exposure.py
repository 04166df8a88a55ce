"""Exposure hops on the real 2025-11-19 OFAC lists and the default compliance policy.

.venv/bin/pytest tests/transforms/compliance/test_exposure.py -q
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas.base import deterministic_id
from schemas.events import Transfer
from tests.support.factories import tron_address
from transforms.compliance.exposure import ExposureGraph, ExposureHit, transfer_order
from transforms.compliance.lists import SanctionsIndex, load_lists
from transforms.compliance.policy import load_policy
from transforms.compliance.store import BUNDLED_DIR

DATA = BUNDLED_DIR / "brave-intl-lists-2025-11-19"
VERSION = load_lists(DATA, date(2025, 11, 19))
INDEX = SanctionsIndex(VERSION)
POLICY = load_policy().exposure  # window 72 h, hops 1..2, min $100, {1: 80, 2: 50}, full $10k

ETH = "eip155:1"
ARB = "eip155:42161"
TRON = "tron:mainnet"
LISTED = "0x04DBA1194ee10112fE6C3207C0687DEf0e78baCf"  # sanctioned_addresses_ETH.txt, EIP-55
LISTED_KEY = LISTED.lower()
LISTED_2 = "0x08723392Ed15743cc38513C4925f5e6be5c17243"
LISTED_TRON = "TAYhjpL8pPs8T84FSM329nffQpc6jD8GBM"
X = "0x" + "a1" * 20
Y = "0x" + "b2" * 20
Z = "0x" + "c3" * 20
T0 = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)


def tx(
    n: int,
    frm: str,
    to: str,
    usd: str | None = "10000",
    hours: float = 0,
    chain: str = ETH,
) -> Transfer:
    return Transfer(
        event_id=f"e{n:04d}", chain_id=chain, tx_hash=f"0xtx{n}", block_number=n, log_index=0,
        from_address=frm, to_address=to, asset="USDC", amount_raw="1", decimals=6,
        amount_usd=None if usd is None else Decimal(usd), event_time=T0 + timedelta(hours=hours),
    )  # fmt: skip


def run(transfers: list[Transfer], policy=POLICY, graph: ExposureGraph | None = None):
    graph = graph or ExposureGraph(policy)
    hits: list[ExposureHit] = []
    for t in sorted(transfers, key=transfer_order):
        hits.extend(graph.process(t, INDEX))
    return hits, graph


def exposed(hits: list[ExposureHit]) -> list[tuple[str, int]]:
    return [(h.address, h.hop) for h in hits]


def test_the_listed_addresses_are_on_the_real_list():
    assert INDEX.lookup(ETH, LISTED).key == LISTED_KEY
    assert INDEX.lookup(ETH, LISTED_2) is not None
    assert INDEX.lookup(TRON, LISTED_TRON) is not None
    assert all(INDEX.lookup(ETH, a) is None for a in (X, Y, Z))


@pytest.mark.parametrize("direction", ["listed_pays", "pays_listed"])
def test_hop_1_in_both_directions(direction):
    t = tx(1, LISTED, X) if direction == "listed_pays" else tx(1, X, LISTED)
    hits, graph = run([t])
    assert len(hits) == 1
    h = hits[0]
    assert (h.address, h.chain_id, h.hop) == (X, ETH, 1)
    assert h.listed_address == LISTED_KEY
    assert h.path == (LISTED_KEY, X)
    assert h.evidence_tx_hashes == ("0xtx1",)
    assert h.path_amount_usd == Decimal("10000")
    assert h.risk_score == 80.0 and h.screening_result == "flagged"
    assert (h.tx_hash, h.event_time, h.list_version) == ("0xtx1", T0, VERSION.version_id)
    assert h.hit_id == deterministic_id("exposure", ETH, X, 1, "0xtx1", VERSION.version_id)
    assert len(graph) == 1  # the listed address itself holds no state


def test_hop_2_path_evidence_and_amount():
    hits, graph = run([tx(1, LISTED, X, "5000"), tx(2, X, Y, "20000", hours=1)])
    assert exposed(hits) == [(X, 1), (Y, 2)]
    h = hits[1]
    assert h.path == (LISTED_KEY, X, Y)
    assert h.evidence_tx_hashes == ("0xtx1", "0xtx2")
    assert h.listed_address == LISTED_KEY
    assert h.path_amount_usd == Decimal("5000")  # min of the two edges
    assert h.risk_score == 25.0  # 50 * 5000 / 10000
    assert h.tx_hash == "0xtx2" and h.event_time == T0 + timedelta(hours=1)
    ev = h.evidence()
    assert ev == {
        "hop": 2,
        "listed_address": LISTED_KEY,
        "path": [LISTED_KEY, X, Y],
        "evidence_tx_hashes": ["0xtx1", "0xtx2"],
        "path_amount_usd": "5000",
        "window_h": 72.0,
        "hop_score": 50.0,
        "list_version": VERSION.version_id,
    }
    json.dumps(ev)
    assert len(graph) == 2


def test_hop_2_either_direction_of_the_second_edge():
    hits, _ = run([tx(1, LISTED, X), tx(2, Y, X, hours=1)])
    assert exposed(hits) == [(X, 1), (Y, 2)]
    assert hits[1].path == (LISTED_KEY, X, Y)


def test_no_hop_3():
    hits, _ = run([tx(1, LISTED, X), tx(2, X, Y, hours=1), tx(3, Y, Z, hours=2)])
    assert exposed(hits) == [(X, 1), (Y, 2)]


def test_no_hop_2_when_max_hops_is_1():
    policy = POLICY.model_copy(update={"max_hops": 1})
    hits, graph = run([tx(1, LISTED, X), tx(2, X, Y, hours=1)], policy)
    assert exposed(hits) == [(X, 1)]
    assert len(graph) == 1


def test_dust_links_nothing():
    hits, graph = run([tx(1, LISTED, X, "1"), tx(2, LISTED, Y, "99.99")])
    assert hits == [] and len(graph) == 0
    # a dust second edge does not carry a real first edge on
    hits, _ = run([tx(1, LISTED, X), tx(2, X, Y, "5", hours=1)])
    assert exposed(hits) == [(X, 1)]
    # exactly the minimum links
    hits, _ = run([tx(1, LISTED, X, "100")])
    assert exposed(hits) == [(X, 1)]


def test_unpriced_transfers_link_only_without_a_minimum():
    hits, _ = run([tx(1, LISTED, X, None)])
    assert hits == []
    free = POLICY.model_copy(update={"min_amount_usd": Decimal(0)})
    hits, _ = run([tx(1, LISTED, X, None)], free)
    assert exposed(hits) == [(X, 1)]
    assert hits[0].path_amount_usd == 0 and hits[0].risk_score == 0.0
    assert hits[0].screening_result == "clear"


def test_hop_1_expires_after_the_window():
    hits, graph = run([tx(1, LISTED, X), tx(2, X, Y, hours=72)])
    assert exposed(hits) == [(X, 1)]  # the X-Y link came when X's exposure had expired
    assert len(graph) == 0  # X's expired state was dropped when touched
    hits, _ = run([tx(1, LISTED, X), tx(2, X, Y, hours=71.9)])
    assert exposed(hits) == [(X, 1), (Y, 2)]


def test_re_exposure_after_expiry_emits_again():
    hits, _ = run([tx(1, LISTED, X), tx(2, LISTED, X, hours=73)])
    assert exposed(hits) == [(X, 1), (X, 1)]
    assert [h.tx_hash for h in hits] == ["0xtx1", "0xtx2"]
    assert hits[0].hit_id != hits[1].hit_id


def test_temporal_order_no_backward_flow():
    # Y paid X before X ever dealt with the listed address: Y's funds cannot be tainted by it
    hits, _ = run([tx(1, Y, X, hours=0), tx(2, LISTED, X, hours=1)])
    assert exposed(hits) == [(X, 1)]
    # the same two transfers the other way round in time expose Y
    hits, _ = run([tx(1, LISTED, X, hours=0), tx(2, Y, X, hours=1)])
    assert exposed(hits) == [(X, 1), (Y, 2)]


def test_same_time_ties_follow_event_id():
    hits, _ = run([tx(2, X, Y), tx(1, LISTED, X)])  # equal times: e0001 then e0002
    assert exposed(hits) == [(X, 1), (Y, 2)]


def test_evm_matching_is_case_insensitive():
    hits, _ = run([tx(1, LISTED.upper().replace("0X", "0x"), X.upper().replace("0X", "0x"))])
    assert exposed(hits) == [(X, 1)]
    assert hits[0].listed_address == LISTED_KEY
    # the hop-1 address in another spelling still carries the exposure on
    hits, _ = run([tx(1, LISTED, X), tx(2, X.upper().replace("0X", "0x"), Y, hours=1)])
    assert exposed(hits) == [(X, 1), (Y, 2)]


def test_tron_addresses_are_case_sensitive():
    other = tron_address(7)
    hits, _ = run([tx(1, LISTED_TRON, other, chain=TRON)])
    assert exposed(hits) == [(other, 1)]
    # a case-folded Tron address fails its checksum: the contract refuses it at parse
    with pytest.raises(ValidationError, match="Tron address"):
        tx(1, LISTED_TRON.lower(), other, chain=TRON)


def test_exposure_does_not_cross_chains():
    hits, graph = run([tx(1, LISTED, X, chain=ETH), tx(2, X, Y, hours=1, chain=ARB)])
    assert exposed(hits) == [(X, 1)]
    assert hits[0].chain_id == ETH
    # the same EVM listing still roots paths on another EVM chain
    hits, _ = run([tx(1, LISTED, X, chain=ARB)])
    assert [(h.address, h.chain_id) for h in hits] == [(X, ARB)]


def test_listed_to_listed_and_self_transfers_expose_nothing():
    hits, graph = run([tx(1, LISTED, LISTED_2), tx(2, X, X), tx(3, LISTED, LISTED.lower())])
    assert hits == [] and len(graph) == 0


@pytest.mark.parametrize(
    ("usd", "score", "result"),
    [
        ("100", 0.8, "clear"),
        ("4999", 39.99, "clear"),
        ("5000", 40.0, "flagged"),  # exactly alert_score
        ("10000", 80.0, "flagged"),
        ("1000000", 80.0, "flagged"),  # capped at the full hop score
    ],
)
def test_score_scales_with_amount_and_threshold(usd, score, result):
    hits, _ = run([tx(1, LISTED, X, usd)])
    assert (hits[0].risk_score, hits[0].screening_result) == (score, result)


def test_hop_2_score_uses_the_smaller_edge():
    hits, _ = run([tx(1, LISTED, X, "100000"), tx(2, X, Y, "2000", hours=1)])
    assert hits[1].path_amount_usd == Decimal("2000")
    assert (hits[1].risk_score, hits[1].screening_result) == (10.0, "clear")


def test_no_re_emit_on_repeated_links():
    ts = [tx(i, LISTED, X, hours=i) for i in range(1, 6)]
    ts += [tx(10 + i, X, Y, hours=10 + i) for i in range(5)]
    hits, graph = run(ts)
    assert exposed(hits) == [(X, 1), (Y, 2)]
    assert len(graph) == 2


def test_score_rise_re_emits_but_a_fall_does_not():
    hits, _ = run(
        [tx(1, LISTED, X, "1000"), tx(2, LISTED, X, "500", 1), tx(3, X, LISTED, "6000", 2)]
    )
    assert [(h.tx_hash, h.risk_score) for h in hits] == [("0xtx1", 8.0), ("0xtx3", 48.0)]


def test_improvement_from_hop_2_to_hop_1_re_emits():
    hits, _ = run([tx(1, LISTED, X), tx(2, X, Y, hours=1), tx(3, LISTED_2, Y, "200", hours=2)])
    assert exposed(hits) == [(X, 1), (Y, 2), (Y, 1)]
    assert hits[2].path == (LISTED_2.lower(), Y)
    assert hits[2].risk_score == 1.6  # a lower score, but a better hop
    # and back: a later hop-2 path to Y does not replace its hop 1
    hits, _ = run([tx(1, LISTED, X), tx(3, LISTED_2, Y, "200", hours=2), tx(4, X, Y, hours=3)])
    assert exposed(hits) == [(X, 1), (Y, 1)]


def test_repeated_links_keep_the_exposure_alive_without_re_emitting():
    # X re-links with the listed address at 60 h: its first exposure expires at 72 h, the
    # renewal carries it to 132 h, so Y's link at 100 h is hop 2 via the renewal's evidence
    ts = [tx(1, LISTED, X), tx(2, LISTED, X, hours=60), tx(3, X, Y, hours=100)]
    hits, _ = run(ts)
    assert exposed(hits) == [(X, 1), (Y, 2)]
    assert hits[1].evidence_tx_hashes == ("0xtx2", "0xtx3")


def test_purge_and_len():
    hits, graph = run([tx(1, LISTED, X), tx(2, X, Y, hours=10), tx(3, LISTED, Z, hours=20)])
    assert len(graph) == 3
    assert graph.purge(T0 + timedelta(hours=71)) == 0
    assert graph.purge(T0 + timedelta(hours=72)) == 1  # X (exposed at 0 h)
    assert len(graph) == 2
    assert graph.purge(T0 + timedelta(hours=92)) == 2  # Y (10 h) and Z (20 h)
    assert len(graph) == 0
    assert graph.purge(T0 + timedelta(hours=1000)) == 0


def test_state_holds_only_exposed_addresses():
    ts = [tx(i, f"0x{i:040x}", f"0x{i + 1:040x}", hours=i / 100) for i in range(1, 500)]
    ts.append(tx(1000, LISTED, X, hours=6))
    _, graph = run(ts)
    assert len(graph) == 1


def test_deterministic():
    ts = [
        tx(1, LISTED, X, "3000"),
        tx(2, Y, X, "7000", hours=1),
        tx(3, X, Z, "150", hours=2),
        tx(4, LISTED_2, Z, "9000", hours=3),
        tx(5, Z, Y, "10000", hours=4),
    ]
    first, _ = run(ts)
    second, _ = run(list(reversed(ts)))
    assert first == second
    assert [h.hit_id for h in first] == [h.hit_id for h in second]
    assert len({h.hit_id for h in first}) == len(first)
    assert [(h.address, h.hop, h.risk_score) for h in first] == [
        (X, 1, 24.0),
        (Y, 2, 15.0),  # via X, $3000
        (Z, 2, 0.75),  # via X, $150
        (Z, 1, 72.0),
        (Y, 2, 45.0),  # via Z, $9000: a higher score at the same hop
    ]
    assert first[-1].path == (LISTED_2.lower(), Z, Y)
