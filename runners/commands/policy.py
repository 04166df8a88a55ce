"""``defi-risk policy check FILE``: validate a compliance policy (errors name the key path).

defi-risk policy check transforms/compliance/config/policy.yaml
"""

from __future__ import annotations

import sys

from transforms.compliance.jurisdictions import load_jurisdictions
from transforms.compliance.policy import PolicyError, load_policy


def policy_check_command(args) -> int:
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
    ck.add_argument("file", help="Policy YAML (see transforms/compliance/config/policy.yaml).")
    ck.set_defaults(func=policy_check_command)
