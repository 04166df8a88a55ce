"""The compliance policy file (transforms.compliance.policy) and its jurisdiction reference data
(transforms.compliance.jurisdictions): the default file loads, every invalid file names its key path.

    .venv/bin/pytest tests/transforms/compliance/test_policy.py -q
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from transforms.compliance.jurisdictions import load_jurisdictions
from transforms.compliance.policy import (
    DEFAULT_POLICY,
    Policy,
    PolicyError,
    load_policy,
    parse_policy,
)

BASE = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))


def problems_of(change: Callable[[dict], object]) -> list[str]:
    """The problems of the default policy after ``change`` edits a copy of its dict."""
    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(PolicyError) as exc:
        parse_policy(data)
    assert exc.value.problems, "a PolicyError always names its problems"
    for p in exc.value.problems:
        assert p in str(exc.value)
    return exc.value.problems


def load_problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert str(path) in str(exc.value)
    return exc.value.problems


# ---------------------------------------------------------------- the default file


def test_default_file_loads():
    policy = load_policy()
    assert isinstance(policy, Policy)
    assert policy == load_policy(DEFAULT_POLICY) == parse_policy(copy.deepcopy(BASE))
    assert policy.policy_version == "2025-01-01.1"
    assert policy.effective_from == date(2025, 1, 1)
    assert sorted(policy.tiers) == ["tier1", "tier2", "tier3"]
    assert policy.default_tier == "tier1"
    for name, limits in policy.tiers.items():  # the limits are the file's, read exactly
        raw = BASE["tiers"][name]
        assert limits.daily_volume_usd == Decimal(str(raw["daily_volume_usd"]))
        assert limits.single_transfer_usd == Decimal(str(raw["single_transfer_usd"]))
        assert limits.single_transfer_usd <= limits.daily_volume_usd
    t1, t2, t3 = (policy.tiers[t] for t in ("tier1", "tier2", "tier3"))
    assert t1.daily_volume_usd < t2.daily_volume_usd < t3.daily_volume_usd
    assert t1.single_transfer_usd < t2.single_transfer_usd < t3.single_transfer_usd


def test_default_mixer_addresses_are_90_lower_cased_evm_addresses():
    addresses = load_policy().rules.mixer.addresses
    assert len(addresses) == 90 == len(set(addresses))
    assert all(a == a.lower() and a.startswith("0x") and len(a) == 42 for a in addresses)
    assert "0x4736dcf1b7a3d580672cce6e7c65cd5cc9cfba9d" in addresses  # EIP-55 in the file


def test_default_exposure_section():
    e = load_policy().exposure
    assert (e.window_h, e.max_hops, e.min_amount_usd) == (72, 2, Decimal(100))
    assert e.hop_scores == {1: 80, 2: 50}
    assert (e.full_amount_usd, e.alert_score) == (Decimal(10000), 40)


def test_default_jurisdictions_and_windows():
    policy = load_policy()
    j = policy.jurisdictions
    assert j.fatf_snapshot == "2025-10-24"
    assert set(j.embargoed) == {"CU", "IR", "KP", "UA-43", "UA-14", "UA-09"}
    assert policy.max_window_h() == 48.0  # accumulation 24 h + consolidation 24 h


def test_default_high_risk_lists_are_call_for_action_only():
    j = load_policy().jurisdictions
    assert j.high_risk_lists == ("call_for_action",)
    assert load_jurisdictions().high_risk(j.fatf_snapshot, j.high_risk_lists) == {"KP", "IR", "MM"}
    data = copy.deepcopy(BASE)
    data["jurisdictions"]["high_risk_lists"].append("increased_monitoring")
    assert parse_policy(data).jurisdictions.high_risk_lists == (
        "call_for_action",
        "increased_monitoring",
    )


def test_alerts_per_rule():
    policy = load_policy()
    assert BASE["rules"]["daily_aggregate"]["alert"] is False
    assert policy.rules.daily_aggregate.alert is False
    assert policy.alerts("aml.daily_aggregate") is False
    for rule in (
        "velocity",
        "structuring",
        "accumulation",
        "rapid_in_out",
        "jurisdiction",
        "mixer",
    ):
        assert "alert" not in BASE["rules"][rule]  # the default: true
        assert policy.alerts(f"aml.{rule}") is True, rule
    for rule_id in (
        "policy.embargo",
        "policy.kyc",
        "policy.pep",
        "policy.tier_single_transfer",
        "policy.tier_daily_volume",
    ):
        assert policy.alerts(rule_id) is True, rule_id


def test_alert_false_parses():
    data = copy.deepcopy(BASE)
    data["rules"]["structuring"]["alert"] = False
    data["rules"]["daily_aggregate"]["alert"] = True
    policy = parse_policy(data)
    assert policy.alerts("aml.structuring") is False
    assert policy.alerts("aml.daily_aggregate") is True
    assert policy.alerts("aml.accumulation") is True


def test_alert_not_a_bool():
    problems = problems_of(lambda d: d["rules"]["structuring"].update(alert="sometimes"))
    assert len(problems) == 1 and problems[0].startswith("rules.structuring.alert: ")


def test_alert_is_no_key_of_tiers():
    problems = problems_of(lambda d: d["tiers"]["tier1"].update(alert=False))
    assert problems == ["tiers.tier1.alert: unknown key"]


def test_policy_is_frozen():
    policy = load_policy()
    with pytest.raises(ValidationError):
        policy.default_tier = "tier2"


# ---------------------------------------------------------------- invalid policies


def test_unknown_key():
    problems = problems_of(lambda d: d["rules"]["structuring"].update(bandpct=5))
    assert problems == ["rules.structuring.bandpct: unknown key"]


def test_unknown_top_level_key():
    assert problems_of(lambda d: d.update(extra=1)) == ["extra: unknown key"]


def test_missing_required_key():
    problems = problems_of(lambda d: d["rules"]["velocity"].pop("max_count"))
    assert problems == ["rules.velocity.max_count: required key is missing"]
    assert problems_of(lambda d: d.pop("exposure")) == ["exposure: required key is missing"]


@pytest.mark.parametrize("band", [150, 100, 0, -1])
def test_band_pct_out_of_range(band):
    problems = problems_of(lambda d: d["rules"]["structuring"].update(band_pct=band))
    assert problems == ["rules.structuring.band_pct: must be > 0 and < 100"]


def test_negative_tier_limit():
    problems = problems_of(lambda d: d["tiers"]["tier1"].update(daily_volume_usd=-5))
    assert len(problems) == 1
    assert problems[0].startswith("tiers.tier1.daily_volume_usd: ")
    assert "greater than 0" in problems[0]


def test_wrong_type():
    problems = problems_of(lambda d: d["rules"]["velocity"].update(max_count="many"))
    assert len(problems) == 1 and problems[0].startswith("rules.velocity.max_count: ")


def test_bad_action():
    problems = problems_of(lambda d: d["tiers"]["tier2"].update(action="ignore"))
    assert len(problems) == 1 and problems[0].startswith("tiers.tier2.action: ")
    assert "'flagged' or 'blocked'" in problems[0]


def test_default_tier_not_among_tiers():
    problems = problems_of(lambda d: d.update(default_tier="gold"))
    assert len(problems) == 1
    assert "default_tier 'gold' is not a tier" in problems[0]
    assert "['tier1', 'tier2', 'tier3']" in problems[0]


def test_default_tier_problem_names_its_key():
    problems = problems_of(lambda d: d.update(default_tier="gold"))
    assert problems[0].startswith("default_tier: ")


def test_unknown_fatf_snapshot():
    problems = problems_of(lambda d: d["jurisdictions"].update(fatf_snapshot="2024-01-01"))
    assert len(problems) == 1
    assert problems[0].startswith("jurisdictions.fatf_snapshot: unknown snapshot '2024-01-01'")
    assert "2025-10-24" in problems[0]  # lists the known ones


def test_unquoted_fatf_snapshot_is_a_yaml_date(tmp_path):
    path = tmp_path / "policy.yaml"
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert 'fatf_snapshot: "2025-10-24"' in text
    path.write_text(text.replace('fatf_snapshot: "2025-10-24"', "fatf_snapshot: 2025-10-24"))
    assert isinstance(yaml.safe_load(path.read_text())["jurisdictions"]["fatf_snapshot"], date)
    policy = load_policy(path)
    assert policy.jurisdictions.fatf_snapshot == "2025-10-24"
    assert policy == load_policy()
    # A date that is no snapshot is still refused, as the ISO string.
    path.write_text(text.replace('fatf_snapshot: "2025-10-24"', "fatf_snapshot: 2024-01-01"))
    problems = load_problems(path)
    assert len(problems) == 1
    assert problems[0].startswith("jurisdictions.fatf_snapshot: unknown snapshot '2024-01-01'")


def test_unknown_embargoed_country_code():
    problems = problems_of(lambda d: d["jurisdictions"]["embargoed"].append("XX"))
    assert problems == ["jurisdictions.embargoed: unknown country codes ['XX']"]


def test_malformed_embargoed_code():
    problems = problems_of(lambda d: d["jurisdictions"]["embargoed"].append("cuba"))
    assert problems == ["jurisdictions.embargoed: not ISO 3166 codes: ['cuba']"]


def test_non_evm_mixer_address():
    tron = "TAYhjpL8pPs8T84FSM329nffQpc6jD8GBM"
    problems = problems_of(lambda d: d["rules"]["mixer"]["addresses"].append(tron))
    assert problems == [f"rules.mixer.addresses: not EVM addresses: ['{tron}']"]


def test_hop_scores_missing_hop_2():
    problems = problems_of(lambda d: d["exposure"].update(hop_scores={1: 80}))
    assert len(problems) == 1
    assert problems[0].startswith("exposure")
    assert "hop_scores has no score for hop(s) [2]" in problems[0]
    # with max_hops 1 the same scores are fine
    data = copy.deepcopy(BASE)
    data["exposure"].update(hop_scores={1: 80}, max_hops=1)
    assert parse_policy(data).exposure.max_hops == 1


def test_hop_scores_problem_names_its_key():
    problems = problems_of(lambda d: d["exposure"].update(hop_scores={1: 80}))
    assert problems == ["exposure.hop_scores: hop_scores has no score for hop(s) [2]"]


def test_hop_score_out_of_range():
    problems = problems_of(lambda d: d["exposure"].update(hop_scores={1: 80, 2: 150}))
    assert len(problems) == 1 and "hop_scores must be between 0 and 100" in problems[0]


def test_max_hops_3_is_rejected():
    problems = problems_of(lambda d: d["exposure"].update(max_hops=3))
    assert len(problems) == 1 and problems[0].startswith("exposure.max_hops: ")


def test_not_a_mapping():
    with pytest.raises(PolicyError) as exc:
        parse_policy([1, 2])
    assert exc.value.problems == ["(top level): must be a mapping of keys"]


def test_several_errors_are_all_listed():
    def break_three(d):
        d["rules"]["structuring"]["band_pct"] = 150
        d["tiers"]["tier1"]["daily_volume_usd"] = -1
        d["pep"]["foo"] = 1

    problems = problems_of(break_three)
    assert len(problems) == 3
    keys = {p.split(": ", 1)[0] for p in problems}
    assert keys == {"rules.structuring.band_pct", "tiers.tier1.daily_volume_usd", "pep.foo"}
    assert "rules.structuring.band_pct: must be > 0 and < 100" in problems


def test_several_data_errors_are_all_listed():
    def break_two(d):
        d["jurisdictions"]["fatf_snapshot"] = "nope"
        d["jurisdictions"]["embargoed"].append("XX")

    problems = problems_of(break_two)
    assert [p.split(": ", 1)[0] for p in problems] == [
        "jurisdictions.fatf_snapshot",
        "jurisdictions.embargoed",
    ]


def test_model_and_data_errors_are_listed_together():
    def break_two(d):
        d["rules"]["structuring"]["band_pct"] = 150
        d["jurisdictions"]["fatf_snapshot"] = "nope"

    problems = problems_of(break_two)
    assert len(problems) == 2


# ---------------------------------------------------------------- YAML and file errors


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("policy_version: x\ntiers:\n  tier1: {daily_volume_usd: 1\n")
    problems = load_problems(path)
    assert len(problems) == 1
    assert problems[0].startswith("(yaml, line 4, column 1): ")


def test_bad_indentation_names_the_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("policy_version: x\ndefault_tier: a\n  b: c\n")
    assert load_problems(path) == ["(yaml, line 3, column 4): mapping values are not allowed here"]


def test_empty_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("")
    assert load_problems(path) == ["(top level): must be a mapping of keys"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    problems = load_problems(path)
    assert len(problems) == 1
    assert problems[0].startswith("(file): cannot read: ")
    assert "No such file" in problems[0]


def test_a_valid_copy_on_disk_loads(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_policy(path) == load_policy()


# ---------------------------------------------------------------- jurisdictions


def test_fatf_2025_10_24_call_for_action():
    jd = load_jurisdictions()
    assert jd.fatf["2025-10-24"]["call_for_action"] == {"KP", "IR", "MM"}
    assert jd.high_risk("2025-10-24", ("call_for_action",)) == {"KP", "IR", "MM"}


def test_fatf_2026_02_13_increased_monitoring():
    jd = load_jurisdictions()
    monitored = jd.fatf["2026-02-13"]["increased_monitoring"]
    assert {"KW", "PG"} <= monitored
    both = jd.high_risk("2026-02-13", ("call_for_action", "increased_monitoring"))
    assert both == monitored | {"KP", "IR", "MM"}
    assert "KW" not in jd.fatf["2025-10-24"]["increased_monitoring"]


def test_missing_embargoes():
    jd = load_jurisdictions()
    policy = load_policy()
    assert jd.missing_embargoes(policy.jurisdictions) == []
    data = copy.deepcopy(BASE)
    data["jurisdictions"]["embargoed"].remove("CU")
    without_cu = parse_policy(data)
    assert jd.missing_embargoes(without_cu.jurisdictions) == ["CU"]


def test_syria_is_not_an_active_embargo():
    jd = load_jurisdictions()
    assert jd.embargoes["SY"].startswith("TERMINATED")
    assert jd.embargoes["SY"] != "active"
    assert {c for c, s in jd.embargoes.items() if s == "active"} == {
        "CU",
        "IR",
        "KP",
        "UA-43",
        "UA-14",
        "UA-09",
    }
    data = copy.deepcopy(BASE)
    data["jurisdictions"]["embargoed"].append("SY")  # a known code: allowed as a policy choice
    assert "SY" in parse_policy(data).jurisdictions.embargoed


def test_country_codes_cover_the_policy():
    jd = load_jurisdictions()
    assert {"CU", "IR", "KP", "UA", "RU"} <= jd.iso2
    assert jd.check_policy(load_policy().jurisdictions) == []
