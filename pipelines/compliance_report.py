"""``defi-risk policy check`` and the demo's compliance summary against ground_truth.json.

defi-risk policy check transforms/config/compliance_policy.yaml
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def policy_check_command(args) -> int:
    from transforms.compliance_policy import PolicyError, load_policy
    from transforms.jurisdictions import load_jurisdictions

    try:
        policy = load_policy(args.file)
    except PolicyError as e:
        print(e, file=sys.stderr)
        return 1
    j = load_jurisdictions()
    high = sorted(
        j.high_risk(policy.jurisdictions.fatf_snapshot, policy.jurisdictions.high_risk_lists)
    )
    print(
        f"{args.file}: valid. policy_version {policy.policy_version}, effective from "
        f"{policy.effective_from}; tiers {', '.join(policy.tiers)} (default {policy.default_tier}); "
        f"embargoed {', '.join(policy.jurisdictions.embargoed)}; high-risk (FATF "
        f"{policy.jurisdictions.fatf_snapshot}: {'+'.join(policy.jurisdictions.high_risk_lists)}) "
        f"{', '.join(high)}; {len(policy.rules.mixer.addresses)} mixer addresses"
    )
    missing = j.missing_embargoes(policy.jurisdictions)
    if missing:
        print(f"warning: active OFAC comprehensive embargoes not in the policy: {missing}")
    return 0


def add_policy_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ck = sub.add_parser("check", help="Validate a compliance policy file; errors name the key.")
    ck.add_argument("file", help="Policy YAML (see transforms/config/compliance_policy.yaml).")
    ck.set_defaults(func=policy_check_command)


def compliance_truth_check(output_dir: Path, truth_path: Path) -> dict | None:
    """The injected sanctioned touches and the combined scenario vs the screenings written."""
    import pyarrow.parquet as pq

    table_dir = output_dir / "tables" / "compliance_screenings"
    if not truth_path.exists() or not any(table_dir.glob("*.parquet")):
        return None
    truth = json.loads(truth_path.read_text())
    rows = pq.read_table(table_dir).to_pylist()
    by_type = Counter((r["screening_type"], r["screening_result"]) for r in rows)
    blocked = {
        (r["tx_hash"], r["address"])
        for r in rows
        if r["screening_type"] == "sanctions" and r["screening_result"] == "blocked"
    }
    exposure = {
        (r["address"], r["hop_distance"]): r for r in rows if r["screening_type"] == "exposure"
    }

    def key(addr: str) -> str:
        return addr.lower() if addr.startswith("0x") else addr

    direct = [t for t in truth["sanctioned_transfers"] if t["kind"] == "direct"]
    expected = [t for t in direct if t["expected_result"] == "blocked"]
    found = [t for t in expected if (t["tx_hash"], key(t["listed_address"])) in blocked]
    paths = [t for t in truth["sanctioned_transfers"] if t["kind"] == "exposure_2hop"]
    paths_found = [t for t in paths if (key(t["path"][-1]), 2) in exposure]
    injected = {(t["tx_hash"], key(t["listed_address"])) for t in direct}
    scenario = truth.get("compliance_scenario") or {}
    rules = {}
    for exp in scenario.get("expected_alerts", []):
        if exp["rule_id"].startswith("exposure."):
            row = exposure.get((key(exp["address"]), exp["hop"]))
            ok = row is not None and json.loads(row["evidence"])["path"] == exp["path"]
        else:
            ok = any(
                r["rule_id"] == exp["rule_id"] and r["matched_entity"] == exp["subject"]
                for r in rows
            )
        rules[exp["rule_id"]] = ok
    return {
        "rows": len(rows),
        "by_type": dict(sorted(by_type.items())),
        "direct_expected": len(expected),
        "direct_found": len(found),
        "direct_missed": [t["id"] for t in expected if t not in found],
        "extra_blocked": sorted(blocked - injected),
        "paths_expected": len(paths),
        "paths_found": len(paths_found),
        "scenario": rules,
    }


def print_compliance_check(check: dict) -> None:
    print("compliance screenings (type/result):")
    for (kind, result), n in check["by_type"].items():
        print(f"    {kind:<10} {result:<8} {n:>9,}")
    print(
        f"OFAC hits vs ground_truth.json: {check['direct_expected']} injected listed touches, "
        f"{check['direct_found']} blocked (missed: {check['direct_missed'] or 'none'}), "
        f"{len(check['extra_blocked'])} blocked beyond them; 2-hop exposure paths "
        f"{check['paths_found']}/{check['paths_expected']} found"
    )
    if check["scenario"]:
        marks = ", ".join(
            f"{r} {'found' if ok else 'MISSING'}" for r, ok in check["scenario"].items()
        )
        print(f"combined AML scenario: {marks}")
