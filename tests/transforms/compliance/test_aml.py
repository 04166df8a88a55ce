"""AML rules engine (transforms/compliance/aml.py): every rule, its near misses, cooldowns, state.

.venv/bin/python -m pytest -q tests/transforms/compliance/test_aml.py
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import yaml

from schemas.events import AccountProfile, Transfer
from transforms.compliance.aml import AmlEngine, AmlHit, Leg, legs_of_transfer, normalise_address
from transforms.compliance.policy import DEFAULT_POLICY, Policy, load_policy, parse_policy

POLICY = load_policy()
T0 = datetime(2025, 3, 3, tzinfo=UTC)
WALLET = "0x" + "a" * 40
ACCOUNT = "acct-1"
MIXER = POLICY.rules.mixer.addresses[0]  # lower-cased by the policy


def at(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def profile(**changes) -> AccountProfile:
    data = {
        "account_id": ACCOUNT,
        "wallets": [WALLET],
        "tier": "tier1",
        "country": "DE",
        "pep": False,
        "kyc_status": "verified",
        "updated_at": T0 - timedelta(days=30),
    }
    return AccountProfile(**{**data, **changes})


def leg(
    n: int | str,
    h: float,
    amount: str | None,
    direction: str = "in",
    *,
    prof: AccountProfile | None = None,
    counterparty: str | None = None,
    subject: str | None = None,
) -> Leg:
    """Leg n at T0 + h hours; an account leg when a profile is given, else a wallet leg."""
    return Leg(
        subject=subject or (prof.account_id if prof else WALLET),
        subject_kind="account" if prof else "wallet",
        direction=direction,
        wallet=WALLET,
        counterparty=counterparty or "0x" + str(n).encode().hex().rjust(40, "0")[-40:],
        chain_id="eip155:1",
        event_id=f"ev{n}",
        tx_hash=f"0xtx{n}",
        amount_usd=None if amount is None else Decimal(amount),
        event_time=at(h),
        profile=prof,
    )


def run(legs: list[Leg], policy: Policy = POLICY) -> list[AmlHit]:
    engine = AmlEngine(policy)
    return [hit for x in legs for hit in engine.process(x)]


def of(hits: list[AmlHit], rule_id: str) -> list[AmlHit]:
    return [h for h in hits if h.rule_id == rule_id]


def with_rule(policy: Policy, rule: str, **changes) -> Policy:
    current = getattr(policy.rules, rule)
    rules = policy.rules.model_copy(update={rule: current.model_copy(update=changes)})
    return policy.model_copy(update={"rules": rules})


def from_yaml(edit) -> Policy:
    """The default policy file, edited as a dict and validated again."""
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    edit(data)
    return parse_policy(data)


# ---- structuring ---------------------------------------------------------------------------


def test_structuring_hit_reads_min_count_from_policy():
    legs = [leg(1, 0, "9500"), leg(2, 2, "9000.00"), leg(3, 5, "9999.99")]
    hits = of(run(legs), "aml.structuring")
    assert len(hits) == 1
    h = hits[0]
    assert (h.rule_id, h.screening_type, h.subject, h.subject_kind) == (
        "aml.structuring",
        "aml",
        WALLET,
        "wallet",
    )
    assert h.evidence_tx_hashes == ("0xtx1", "0xtx2", "0xtx3")
    assert (h.tx_hash, h.event_time, h.window_end) == ("0xtx3", at(5), at(5))
    assert h.window_start == at(5 - 24)
    assert (h.screening_result, h.risk_score) == ("flagged", 70.0)
    ev = h.evidence()
    assert ev["count"] == 3 and ev["sum_usd"] == "28499.99" and ev["direction"] == "in"
    assert ev["params"]["min_count"] == 3 and ev["params"]["threshold_usd"] == "10000"
    assert ev["policy_version"] == POLICY.policy_version
    json.dumps(ev)

    def four(d):
        d["rules"]["structuring"]["min_count"] = 4

    assert of(run(legs, from_yaml(four)), "aml.structuring") == []


def test_structuring_near_misses():
    at_threshold = [leg(i, i, "10000.00") for i in range(5)]
    assert of(run(at_threshold), "aml.structuring") == []
    below_band = [leg(i, i, "8999.99") for i in range(5)]
    assert of(run(below_band), "aml.structuring") == []
    assert of(run([leg(1, 0, "9500"), leg(2, 1, "9600")]), "aml.structuring") == []
    # Directions are counted apart: 2 in + 1 out is not 3.
    mixed = [leg(1, 0, "9500"), leg(2, 1, "9600"), leg(3, 2, "9700", "out")]
    assert of(run(mixed), "aml.structuring") == []
    # Out of the 24 h window: the first has left when the third arrives.
    spread = [leg(1, 0, "9500"), leg(2, 12, "9600"), leg(3, 24.01, "9700")]
    assert of(run(spread), "aml.structuring") == []
    # A narrower band (from the policy) no longer holds 9,000.
    three = [leg(1, 0, "9500"), leg(2, 1, "9000"), leg(3, 2, "9600")]
    assert len(of(run(three), "aml.structuring")) == 1
    narrow = with_rule(POLICY, "structuring", band_pct=5.0)
    assert of(run(three, narrow), "aml.structuring") == []


def test_structuring_outflows():
    outs = [leg(i, i, "9800", "out") for i in range(3)]
    (h,) = of(run(outs), "aml.structuring")
    assert h.evidence()["direction"] == "out" and h.evidence_tx_hashes == (
        "0xtx0",
        "0xtx1",
        "0xtx2",
    )


# ---- velocity ------------------------------------------------------------------------------


def test_velocity_by_count_counts_unpriced_legs():
    policy = with_rule(POLICY, "velocity", max_count=3)
    legs = [leg(1, 0, "10"), leg(2, 1, None, "out"), leg(3, 2, None), leg(4, 3, None)]
    assert of(run(legs[:3], policy), "aml.velocity") == []
    (h,) = of(run(legs, policy), "aml.velocity")
    assert h.tx_hash == "0xtx4" and h.window_start == at(3 - 24)
    assert h.evidence_tx_hashes == ("0xtx1", "0xtx2", "0xtx3", "0xtx4")
    ev = h.evidence()
    assert ev["reasons"] == ["count"] and ev["count"] == 4 and ev["priced_count"] == 1
    assert ev["sum_usd"] == "10" and ev["params"]["max_count"] == 3


def test_velocity_by_sum():
    legs = [leg(1, 0, "300000"), leg(2, 1, "200000", "out")]
    assert of(run(legs), "aml.velocity") == []  # 500,000 is not above 500,000
    (h,) = of(run([*legs, leg(3, 2, "0.01")]), "aml.velocity")
    assert h.evidence()["reasons"] == ["sum"] and h.evidence()["sum_usd"] == "500000.01"
    assert h.evidence_tx_hashes == ("0xtx1", "0xtx2", "0xtx3")
    lower = with_rule(POLICY, "velocity", max_sum_usd=Decimal(400000))
    assert [h.tx_hash for h in of(run(legs, lower), "aml.velocity")] == ["0xtx2"]


# ---- daily aggregate -----------------------------------------------------------------------


def test_daily_aggregate_threshold_and_evidence():
    legs = [leg(1, 0, "6000"), leg(2, 1, None), leg(3, 2, "4000", "out")]
    assert of(run(legs), "aml.daily_aggregate") == []  # 10,000 is not above 10,000
    (h,) = of(run([*legs, leg(4, 3, "0.01")]), "aml.daily_aggregate")
    assert h.evidence_tx_hashes == ("0xtx1", "0xtx3", "0xtx4")  # the unpriced leg is no evidence
    ev = h.evidence()
    assert (ev["sum_usd"], ev["in_usd"], ev["out_usd"], ev["count"]) == (
        "10000.01",
        "6000.01",
        "4000",
        3,
    )
    assert ev["window"] == {"start": at(3 - 24).isoformat(), "end": at(3).isoformat()}
    lower = with_rule(POLICY, "daily_aggregate", threshold_usd=Decimal(5000))
    assert [h.tx_hash for h in of(run(legs, lower), "aml.daily_aggregate")] == ["0xtx1"]


def test_unpriced_legs_never_sum():
    legs = [leg(1, 0, "9000"), leg(2, 1, None), leg(3, 2, None, "out")]
    hits = run(legs)
    assert of(hits, "aml.daily_aggregate") == [] and of(hits, "aml.structuring") == []
    p = profile()
    acct = [leg(i, i, None, prof=p) for i in range(5)]
    hits = run(acct)
    assert [h.rule_id for h in hits] == []  # no tier limit can be judged without amounts


# ---- accumulation --------------------------------------------------------------------------


def small_inflows(n: int, amount: str = "1000") -> list[Leg]:
    return [leg(f"in{i}", i * 0.5, amount) for i in range(n)]


def test_accumulation_hit():
    ins = small_inflows(10)  # 10 x 1,000 in 0..4.5 h
    (h,) = of(run([*ins, leg("out", 10, "8000", "out")]), "aml.accumulation")
    assert h.evidence_tx_hashes == tuple(f"0xtxin{i}" for i in range(10)) + ("0xtxout",)
    assert h.window_start == at(4.5 - 24) and h.window_end == at(10)
    ev = h.evidence()
    assert (ev["inflow_count"], ev["inflow_sum_usd"], ev["outflow_usd"], ev["moved_pct"]) == (
        10,
        "10000",
        "8000",
        "80.00",
    )
    assert ev["hours_after_last_inflow"] == 5.5


def test_accumulation_near_misses():
    ins = small_inflows(10)
    assert of(run([*ins, leg("out", 10, "7999.99", "out")]), "aml.accumulation") == []
    assert of(run([*ins[:9], leg("out", 10, "8000", "out")]), "aml.accumulation") == []
    # Too late: more than consolidation_within_h (24 h) after the last inflow.
    assert of(run([*ins, leg("out", 4.5 + 24.01, "9000", "out")]), "aml.accumulation") == []
    # An inflow above max_inflow_usd is not small.
    big = [*ins[:9], leg("big", 4.6, "10000.01"), leg("out", 10, "9000", "out")]
    assert of(run(big), "aml.accumulation") == []
    # The inflows of window_h (24 h) before the last one (at 4 h) count: from -20 h on.
    old = [leg("old", -20, "1000"), *ins[:9], leg("out", 10, "8000", "out")]
    (h,) = of(run(old), "aml.accumulation")
    assert h.evidence_tx_hashes[0] == "0xtxold" and h.window_start == at(-20)
    older = [leg("old", -20.01, "1000"), *ins[:9], leg("out", 10, "8000", "out")]
    assert of(run(older), "aml.accumulation") == []


def test_accumulation_reads_policy():
    ins = small_inflows(9)
    out = leg("out", 10, "7200", "out")
    policy = with_rule(POLICY, "accumulation", min_inflows=9)
    assert len(of(run([*ins, out], policy), "aml.accumulation")) == 1
    stricter = with_rule(policy, "accumulation", consolidation_pct=95.0)
    assert of(run([*ins, out], stricter), "aml.accumulation") == []


# ---- rapid in/out --------------------------------------------------------------------------


def test_rapid_in_out_hit_and_near_misses():
    ins = [leg(1, 0, "4000"), leg(2, 0.5, "2000")]
    (h,) = of(run([*ins, leg(3, 1.5, "5400", "out")]), "aml.rapid_in_out")
    assert h.evidence_tx_hashes == ("0xtx1", "0xtx2", "0xtx3")
    assert h.window_start == at(1.5 - 2)
    ev = h.evidence()
    assert (ev["inflow_sum_usd"], ev["outflow_usd"], ev["moved_pct"]) == ("6000", "5400", "90.00")
    assert of(run([*ins, leg(3, 1.5, "5399.99", "out")]), "aml.rapid_in_out") == []
    # Only the inflows of the last 2 h count: at 2.25 h the first has left.
    later = [leg(1, 0, "4000"), leg(2, 0.5, "6000")]
    (late,) = of(run([*later, leg(3, 2.25, "5400", "out")]), "aml.rapid_in_out")
    assert late.evidence_tx_hashes == ("0xtx2", "0xtx3")
    assert late.evidence()["inflow_sum_usd"] == "6000"
    assert of(run([*later, leg(3, 2.51, "5400", "out")]), "aml.rapid_in_out") == []
    # Below min_amount_usd (5,000).
    small = [leg(1, 0, "4000"), leg(2, 1, "4000", "out")]
    assert of(run(small), "aml.rapid_in_out") == []
    lower = with_rule(POLICY, "rapid_in_out", min_amount_usd=Decimal(3000))
    assert len(of(run(small, lower), "aml.rapid_in_out")) == 1
    # A dust inflow before an ordinary payment is no pass-through.
    assert of(run([leg(1, 0, "1"), leg(2, 1, "6000", "out")]), "aml.rapid_in_out") == []


# ---- jurisdiction, embargo -----------------------------------------------------------------


def with_lists(*lists: str) -> Policy:
    """The default policy applying the given FATF lists (the default applies call_for_action)."""
    j = POLICY.jurisdictions.model_copy(update={"high_risk_lists": lists})
    return POLICY.model_copy(update={"jurisdictions": j})


def test_jurisdiction_high_risk_country_and_region():
    assert POLICY.jurisdictions.high_risk_lists == ("call_for_action",)
    (h,) = of(run([leg(1, 0, "10", prof=profile(country="MM"))]), "aml.jurisdiction")
    assert (h.subject, h.subject_kind, h.screening_result, h.risk_score) == (
        ACCOUNT,
        "account",
        "flagged",
        POLICY.rules.jurisdiction.score,
    )
    assert h.evidence()["matched"] == "MM" and h.evidence()["params"]["fatf_snapshot"] == (
        POLICY.jurisdictions.fatf_snapshot
    )
    # A region is judged by its ISO2 part: KP (call_for_action) through a region code.
    (kp,) = of(run([leg(1, 0, "10", prof=profile(country="KP-01"))]), "aml.jurisdiction")
    assert kp.evidence()["country"] == "KP-01" and kp.evidence()["matched"] == "KP"
    assert of(run([leg(1, 0, "10", prof=profile(country="DE"))]), "aml.jurisdiction") == []
    # VN and BG are on increased_monitoring only: the default (call_for_action alone) skips
    # them, a policy that adds the grey list reviews them.
    monitored = with_lists("call_for_action", "increased_monitoring")
    vn = [leg(1, 0, "10", prof=profile(country="VN-SG"))]
    assert of(run(vn), "aml.jurisdiction") == []
    (r,) = of(run(vn, monitored), "aml.jurisdiction")
    assert r.evidence()["country"] == "VN-SG" and r.evidence()["matched"] == "VN"
    bg = [leg(1, 0, "10", prof=profile(country="BG"))]
    assert of(run(bg), "aml.jurisdiction") == []
    assert len(of(run(bg, monitored), "aml.jurisdiction")) == 1
    assert (
        len(of(run([leg(1, 0, "10", prof=profile(country="MM"))], monitored), "aml.jurisdiction"))
        == 1
    )

    def grey_too(d):
        d["jurisdictions"]["high_risk_lists"] = ["call_for_action", "increased_monitoring"]

    assert len(of(run(bg, from_yaml(grey_too)), "aml.jurisdiction")) == 1


def test_embargo_blocks_every_leg():
    p = profile(country="IR")
    hits = of(run([leg(1, 0, "10", prof=p), leg(2, 3, None, "out", prof=p)]), "policy.embargo")
    assert [(h.tx_hash, h.screening_type, h.screening_result, h.risk_score) for h in hits] == [
        ("0xtx1", "policy", "blocked", 100.0),
        ("0xtx2", "policy", "blocked", 100.0),
    ]
    (crimea,) = of(run([leg(1, 0, "10", prof=profile(country="UA-43"))]), "policy.embargo")
    assert crimea.evidence()["matched"] == "UA-43"
    (cuba,) = of(run([leg(1, 0, "10", prof=profile(country="CU-03"))]), "policy.embargo")
    assert cuba.evidence()["matched"] == "CU"
    for country in ("UA", "UA-40", "DE"):
        assert of(run([leg(1, 0, "10", prof=profile(country=country))]), "policy.embargo") == []

    def flag_ru(d):
        d["jurisdictions"]["embargoed"].append("RU")
        d["jurisdictions"]["embargo_action"] = "flagged"

    ru_legs = [leg(1, 0, "10", prof=profile(country="RU"))]
    (ru,) = of(run(ru_legs, from_yaml(flag_ru)), "policy.embargo")
    assert ru.screening_result == "flagged"


# ---- mixer ---------------------------------------------------------------------------------


def test_mixer_every_leg_and_min_amount():
    legs = [leg(1, 0, "50", counterparty=MIXER), leg(2, 1, None, "out", counterparty=MIXER)]
    hits = of(run(legs), "aml.mixer")
    assert [h.tx_hash for h in hits] == ["0xtx1", "0xtx2"]  # per transfer, unpriced too (min 0)
    assert hits[0].evidence()["mixer_address"] == MIXER and hits[0].risk_score == 75.0
    assert "addresses" not in hits[0].params
    assert of(run([leg(1, 0, "50")]), "aml.mixer") == []
    policy = with_rule(POLICY, "mixer", min_amount_usd=Decimal(100))
    checks = [leg(1, 0, None, counterparty=MIXER), leg(2, 1, "99.99", counterparty=MIXER)]
    checks.append(leg(3, 2, "100", counterparty=MIXER))
    assert [h.tx_hash for h in of(run(checks, policy), "aml.mixer")] == ["0xtx3"]


# ---- tiers ---------------------------------------------------------------------------------


TIER1 = POLICY.tiers["tier1"]


def test_tier_single_transfer():
    limit = TIER1.single_transfer_usd
    over = limit + Decimal("0.01")
    p = profile()
    assert of(run([leg(1, 0, str(limit), prof=p)]), "policy.tier_single_transfer") == []
    (h,) = of(run([leg(1, 0, str(over), prof=p)]), "policy.tier_single_transfer")
    assert h.screening_type == "policy" and h.params["single_transfer_usd"] == str(limit)
    assert h.screening_result == TIER1.action
    assert POLICY.tiers["tier2"].single_transfer_usd > over  # tier2 allows more
    t2 = profile(tier="tier2")
    assert of(run([leg(1, 0, str(over), prof=t2)]), "policy.tier_single_transfer") == []
    gold = [leg(1, 0, str(over), prof=profile(tier="gold"))]
    (u,) = of(run(gold), "policy.tier_single_transfer")
    ev = u.evidence()
    assert (ev["tier"], ev["tier_unknown"], ev["tier_applied"]) == ("gold", True, "tier1")


def test_tier_daily_volume():
    limit = TIER1.daily_volume_usd
    parts = [limit * 8 / 25, limit * 8 / 25, limit * 9 / 25]  # in, out, in: exactly the limit
    assert sum(parts) == limit and max(parts) <= TIER1.single_transfer_usd
    p = profile()
    legs = [
        leg(1, 0, str(parts[0]), prof=p),
        leg(2, 1, str(parts[1]), "out", prof=p),
        leg(3, 2, str(parts[2]), prof=p),
    ]
    assert of(run(legs), "policy.tier_daily_volume") == []  # the limit itself is not above it
    (h,) = of(run([*legs, leg(4, 3, "0.01", prof=p)]), "policy.tier_daily_volume")
    assert h.evidence_tx_hashes == ("0xtx1", "0xtx2", "0xtx3", "0xtx4")
    assert h.window_start == at(3 - 24)
    assert Decimal(h.evidence()["sum_usd"]) == limit + Decimal("0.01")
    # tier2 allows more in 24 h
    t2 = profile(tier="tier2")
    assert POLICY.tiers["tier2"].daily_volume_usd > limit
    more = [leg(i, i, str(parts[i % 3]), prof=t2) for i in range(4)]
    assert of(run(more), "policy.tier_daily_volume") == []
    g = profile(tier="gold")
    gold = [
        leg(1, 0, str(limit * 4 / 5), prof=g),
        leg(2, 1, str(limit / 5 + Decimal("0.01")), prof=g),
    ]
    (u,) = of(run(gold), "policy.tier_daily_volume")
    assert u.evidence()["tier_unknown"] is True and u.params["tier"] == "tier1"


# ---- pep, kyc ------------------------------------------------------------------------------


def test_pep():
    p = profile(pep=True)
    assert of(run([leg(1, 0, "999.99", prof=p)]), "policy.pep") == []
    (h,) = of(run([leg(1, 0, "999.99", prof=p), leg(2, 1, "1000", prof=p)]), "policy.pep")
    assert h.tx_hash == "0xtx2" and h.risk_score == 50.0
    assert of(run([leg(1, 0, "5000", prof=profile())]), "policy.pep") == []
    off = POLICY.model_copy(update={"pep": POLICY.pep.model_copy(update={"enabled": False})})
    assert of(run([leg(1, 0, "5000", prof=p)], off), "policy.pep") == []


def test_kyc():
    (h,) = of(run([leg(1, 0, None, prof=profile(kyc_status="pending"))]), "policy.kyc")
    assert (h.screening_result, h.risk_score, h.evidence()["kyc_status"]) == (
        "flagged",
        50.0,
        "pending",
    )
    assert of(run([leg(1, 0, "10", prof=profile())]), "policy.kyc") == []

    def lenient(d):
        d["kyc"] = {"allowed": ["verified", "pending"], "action": "blocked"}

    policy = from_yaml(lenient)
    pending = [leg(1, 0, "10", prof=profile(kyc_status="pending"))]
    assert of(run(pending, policy), "policy.kyc") == []
    (b,) = of(run([leg(1, 0, "10", prof=profile(kyc_status="rejected"))], policy), "policy.kyc")
    assert (b.screening_result, b.risk_score) == ("blocked", 100.0)


# ---- cooldowns -----------------------------------------------------------------------------


def test_cooldown_worked_timeline():
    """The timeline of the AmlEngine docstring."""
    legs = [leg(1, 0, "12000"), leg(2, 3, "5000", "out"), leg(3, 25, "1000"), leg(4, 26, "8000")]
    assert [h.tx_hash for h in of(run(legs), "aml.daily_aggregate")] == ["0xtx1", "0xtx4"]


def test_cooldown_profile_rules_and_per_transfer_rules():
    p = profile(country="IR", kyc_status="pending", pep=True)
    legs = [leg(1, 0, "2000", prof=p), leg(2, 3, "2000", "out", prof=p), leg(3, 25, "2000", prof=p)]
    hits = run(legs)
    for rule in ("policy.kyc", "policy.pep", "aml.jurisdiction"):
        assert [h.tx_hash for h in of(hits, rule)] == ["0xtx1", "0xtx3"], rule
    assert [h.tx_hash for h in of(hits, "policy.embargo")] == ["0xtx1", "0xtx2", "0xtx3"]


def test_cooldown_structuring_refires_after_window():
    legs = [leg(i, i, "9500") for i in range(6)]  # hit at 2 h; 3..5 h suppressed
    legs += [leg(f"b{i}", 25 + i, "9500") for i in range(3)]  # 25 h: cooling; 26 h fires again
    hits = of(run(legs), "aml.structuring")
    assert [h.tx_hash for h in hits] == ["0xtx2", "0xtxb1"]
    # At 26 h the window (2 h..26 h, both ends included) holds 2..5 h and 25, 26 h.
    expected = ("0xtx2", "0xtx3", "0xtx4", "0xtx5", "0xtxb0", "0xtxb1")
    assert hits[1].evidence_tx_hashes == expected


# ---- enabled flags -------------------------------------------------------------------------

SCENARIOS = {
    "velocity": [leg(i, i * 0.1, "1") for i in range(51)],
    "daily_aggregate": [leg(1, 0, "10000.01")],
    "structuring": [leg(i, i, "9500") for i in range(3)],
    "accumulation": [*small_inflows(10), leg("out", 10, "9000", "out")],
    "rapid_in_out": [leg(1, 0, "6000"), leg(2, 1, "6000", "out")],
    "jurisdiction": [leg(1, 0, "10", prof=profile(country="MM"))],
    "mixer": [leg(1, 0, "10", counterparty=MIXER)],
}


@pytest.mark.parametrize("rule", sorted(SCENARIOS))
def test_enabled_false_disables(rule):
    rule_id = f"aml.{rule}"
    assert len(of(run(SCENARIOS[rule]), rule_id)) == 1
    off = with_rule(POLICY, rule, enabled=False)
    assert of(run(SCENARIOS[rule], off), rule_id) == []


# ---- subjects, state, determinism ----------------------------------------------------------


def test_wallet_subjects_never_get_account_rules():
    bad = profile(country="IR", kyc_status="rejected", pep=True, tier="gold")
    legs = [
        Leg(
            subject=WALLET,
            subject_kind="wallet",
            direction="in" if i % 2 == 0 else "out",
            wallet=WALLET,
            counterparty=MIXER,
            chain_id="eip155:1",
            event_id=f"ev{i}",
            tx_hash=f"0xtx{i}",
            amount_usd=Decimal("9600"),
            event_time=at(i),
            profile=bad,  # a stray profile on a wallet leg changes nothing
        )
        for i in range(8)
    ]
    rules = {h.rule_id for h in run(legs)}
    assert not any(r.startswith("policy.") for r in rules)
    assert "aml.jurisdiction" not in rules
    assert {"aml.mixer", "aml.structuring", "aml.daily_aggregate"} <= rules


def test_purge_drops_idle_subjects():
    engine = AmlEngine(POLICY)
    assert POLICY.max_window_h() == 48.0
    engine.process(leg(1, 0, "10", subject="w1"))
    engine.process(leg(2, 10, "10", subject="w2"))
    engine.process(leg(3, 40, "10", subject="w3"))
    assert len(engine) == 3
    assert engine.purge(at(48)) == 0  # idle exactly 48 h is not longer than 48 h
    assert engine.purge(at(58.5)) == 2 and len(engine) == 1
    assert engine.purge(at(200)) == 1 and len(engine) == 0


def test_state_is_bounded_by_the_longest_window():
    engine = AmlEngine(POLICY)
    for i in range(300):
        engine.process(leg(i, i, "1"))  # one leg an hour
    (st,) = engine._subjects.values()
    assert all(len(w.legs) <= 25 for w in st.windows.values())
    assert len(st.small.legs) <= 49 and len(st.inflows.legs) <= 3


def test_out_of_order_leg_is_refused():
    engine = AmlEngine(POLICY)
    engine.process(leg(2, 5, "10"))
    with pytest.raises(ValueError, match="older than"):
        engine.process(leg(1, 4, "10"))


def test_determinism_with_interleaved_subjects():
    a = [leg(f"a{i}", i * 0.7, "9700", subject="wa") for i in range(12)]
    b = [leg(f"b{i}", i * 0.9, "9200", "out", prof=profile()) for i in range(12)]
    legs = [x for pair in zip(a, b, strict=True) for x in pair]
    first, second = run(legs), run(legs)
    assert first and first == second
    assert [h.hit_id for h in first] == [h.hit_id for h in second]
    assert len({h.hit_id for h in first}) == len(first)


# ---- the scenario of the issue -------------------------------------------------------------


def test_tier1_structuring_and_consolidation_scenario():
    p = profile()
    ins = [
        leg(f"in{i}", i * 20 / 11, str(9500 + 36 * i), counterparty="0x" + f"{i + 1:040x}", prof=p)
        for i in range(12)
    ]  # 12 inflows of 9,500..9,896 over 0..20 h from 12 addresses
    total = sum(x.amount_usd for x in ins)
    assert total == Decimal(116376)
    out = leg("out", 21, str(total * Decimal("0.95")), "out", prof=p)
    hits = run([*ins, out])
    by_rule = {h.rule_id: h for h in hits}
    assert len(of(hits, "aml.structuring")) == 1
    assert by_rule["aml.structuring"].evidence_tx_hashes == ("0xtxin0", "0xtxin1", "0xtxin2")
    assert by_rule["aml.daily_aggregate"].evidence_tx_hashes == ("0xtxin0", "0xtxin1")
    # The tier-volume hit comes with the first inflow that takes the 24 h sum above tier1's
    # daily_volume_usd (with 50,000: the 6th deposit, 57,540), and once only (cooldown).
    limit = POLICY.tiers["tier1"].daily_volume_usd
    running = [sum(x.amount_usd for x in ins[: k + 1]) for k in range(12)]
    first = next(k for k, s in enumerate(running) if s > limit)
    assert running[first - 1] <= limit < running[first]
    (tier,) = of(hits, "policy.tier_daily_volume")
    assert tier.tx_hash == f"0xtxin{first}"
    assert tier.evidence_tx_hashes == tuple(f"0xtxin{i}" for i in range(first + 1))
    assert Decimal(tier.evidence()["sum_usd"]) == running[first]
    acc = by_rule["aml.accumulation"]
    assert acc.evidence_tx_hashes == tuple(f"0xtxin{i}" for i in range(12)) + ("0xtxout",)
    assert acc.evidence()["moved_pct"] == "95.00" and acc.window_start == at(20 - 24)
    assert by_rule["aml.rapid_in_out"].evidence_tx_hashes == ("0xtxin11", "0xtxout")
    assert by_rule["policy.tier_single_transfer"].tx_hash == "0xtxout"
    assert {h.subject for h in hits} == {ACCOUNT}
    assert "aml.velocity" not in by_rule
    for h in hits:
        json.dumps(h.evidence())


# ---- legs_of_transfer ----------------------------------------------------------------------


def transfer(src: str, dst: str, amount: str | None = "100") -> Transfer:
    return Transfer(
        event_id="eip155:1:0xabc:0",
        tx_hash="0xabc",
        block_number=1,
        log_index=0,
        from_address=src,
        to_address=dst,
        asset="USDC",
        amount_raw="100000000",
        decimals=6,
        amount_usd=amount,
        event_time=T0,
    )


def test_legs_of_transfer():
    other = "0x" + "B" * 40
    profiles = {WALLET: profile()}
    out, inn = legs_of_transfer(transfer(WALLET.upper().replace("0X", "0x"), other), profiles.get)
    assert (out.subject, out.subject_kind, out.direction, out.counterparty) == (
        ACCOUNT,
        "account",
        "out",
        other.lower(),
    )
    assert (inn.subject, inn.subject_kind, inn.direction, inn.profile) == (
        other.lower(),
        "wallet",
        "in",
        None,
    )
    second = "0x" + "c" * 40
    same = {WALLET: profile(), second: profile(wallets=[WALLET, second])}
    assert legs_of_transfer(transfer(WALLET, second), same.get) == []
    assert legs_of_transfer(transfer(other, other), profiles.get) == []
    assert normalise_address(" TXYZabc ") == "TXYZabc"


def test_wallet_keys_are_the_sanctions_screens_keys():
    """One key rule for AML subjects and sanctions matching: bech32 in either case is one wallet,
    Tron stays case-sensitive, a mixed-case bech32 (invalid) stays as written."""
    from transforms.compliance.lists import normalise_address as sanctions_key

    lower = "bc1qa5wkgaew2dkv56kfvj49j0av5nml45x9ek9hz6"
    for address in (lower, lower.upper(), "0x" + "AbC" * 13 + "d", "TXYZabc"):
        assert normalise_address(address) == sanctions_key(address)
    assert normalise_address(lower.upper()) == normalise_address(lower)
    mixed = "bc1qA5wkgaew2dkv56kfvj49j0av5nml45x9ek9hz6"
    assert sanctions_key(mixed) is None and normalise_address(mixed) == mixed
