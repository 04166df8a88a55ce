"""Account profiles (accounts.profiles.v1) and the combined AML scenario of issue 7.

Profiles: every EVM DEX trader is a customer account with one wallet; tiers, countries, PEP flags
and KYC statuses are drawn so that each policy rule has a few accounts to act on (one customer
resident in an embargoed country, a few in FATF-listed ones, a few PEPs, some with KYC pending).

The scenario: a tier-1 account (two wallets) receives 12 deposits of $9,500-9,900 within 20 h,
moves them to its second wallet, then pays a wallet that a listed address funded the day before.
The expected alerts (structuring, accumulation, the tier-1 volume limit, 2-hop exposure) and
their evidence go to ground_truth.json under ``compliance_scenario``.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from runners.synthetic.assets import ETHEREUM, Clock
from runners.synthetic.rng import address
from runners.synthetic.transfers import Transfers, listed_in_both

TIERS = {"tier1": 0.55, "tier2": 0.35, "tier3": 0.10}
COUNTRIES = {  # mostly low-risk; MM is on FATF's call for action, VN on its grey list
    "DE": 0.2, "US": 0.2, "GB": 0.14, "SG": 0.1, "FR": 0.1, "JP": 0.1, "BR": 0.06,
    "VN": 0.04, "NG": 0.03, "AE": 0.02, "MM": 0.01,
}  # fmt: skip
KYC = {"verified": 0.98, "pending": 0.015, "unverified": 0.005}


def account_profiles(rng: np.random.Generator, wallets: list[str], clock: Clock) -> list[dict]:
    """One profile per wallet, effective a day before the market starts."""
    since = clock.start - timedelta(days=1)
    n = len(wallets)
    tiers = rng.choice(list(TIERS), n, p=list(TIERS.values()))
    countries = rng.choice(list(COUNTRIES), n, p=list(COUNTRIES.values()))
    kyc = rng.choice(list(KYC), n, p=list(KYC.values()))
    pep = rng.random(n) < 0.01
    profiles = [
        {
            "account_id": f"cust-{i + 1:04d}",
            "wallets": [w],
            "tier": str(tiers[i]),
            "country": str(countries[i]),
            "pep": bool(pep[i]),
            "kyc_status": str(kyc[i]),
            "updated_at": since,
            "_sort": (i,),
        }
        for i, w in enumerate(wallets)
    ]
    profiles[int(rng.integers(n))]["country"] = "IR"  # embargoed: its transfers are blocked
    return profiles


def scenario(tr: Transfers, rng: np.random.Generator, clock: Clock) -> tuple[list[dict], dict]:
    """The combined scenario's transfers; returns (profiles to add, its ground truth)."""
    span = tr.market.n_minutes * 60.0
    listed = listed_in_both("brave-intl-2025-11-19/ETH", "0xB10C-2024-09-27/ETH")
    root = listed[int(rng.integers(len(listed)))]
    middle, deposit_wallet, pay_wallet = address(rng), address(rng), address(rng)
    t0 = float(rng.uniform(0.15, 0.4) * span)
    funding = tr.add_usd(ETHEREUM, t0, root, middle, "USDC", float(rng.uniform(20e3, 40e3)))
    offsets = np.sort(rng.uniform(1, 21, 12)) * 3600  # 12 deposits within 20 h
    deposits = [
        tr.add_usd(
            ETHEREUM, t0 + off, address(rng), deposit_wallet, "USDC", float(rng.uniform(9500, 9900))
        )
        for off in offsets.tolist()
    ]
    total = sum(int(d["amount_raw"]) for d in deposits)
    t_last = t0 + offsets[-1]
    consolidate = tr.add(ETHEREUM, t_last + 1800, deposit_wallet, pay_wallet, "USDC", total)
    payment = tr.add(ETHEREUM, t_last + 3600, pay_wallet, middle, "USDC", total * 95 // 100)
    account = "cust-scenario"
    profile = {
        "account_id": account,
        "wallets": [deposit_wallet, pay_wallet],
        "tier": "tier1",
        "country": "DE",
        "pep": False,
        "kyc_status": "verified",
        "updated_at": clock.start - timedelta(days=1),
        "_sort": (10**6,),
    }
    dep_hashes = [d["tx_hash"] for d in deposits]
    truth = {
        "account_id": account,
        "wallets": [deposit_wallet, pay_wallet],
        "listed_address": root,
        "intermediary": middle,
        "funding_tx": funding["tx_hash"],
        "deposit_txs": dep_hashes,
        "consolidation_tx": consolidate["tx_hash"],
        "payment_tx": payment["tx_hash"],
        "expected_alerts": [
            {"rule_id": "aml.structuring", "subject": account, "evidence_from": dep_hashes},
            {
                "rule_id": "aml.accumulation",
                "subject": account,
                "evidence_from": [*dep_hashes, payment["tx_hash"]],
            },
            {
                "rule_id": "policy.tier_daily_volume",
                "subject": account,
                "evidence_from": dep_hashes,
            },
            {
                "rule_id": "exposure.sanctioned_counterparty",
                "address": pay_wallet,
                "hop": 2,
                "path": [root.lower(), middle, pay_wallet],
                "evidence_tx_hashes": [funding["tx_hash"], payment["tx_hash"]],
            },
        ],
    }
    return [profile], truth
