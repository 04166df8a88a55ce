"""Jurisdiction reference data: OFAC embargoes, FATF snapshots and OFAC country codes.

Read from ``transforms/compliance/data/jurisdictions/`` (copied from the shared datasets; see its
SOURCE.md for the provenance and the confidence of every row). Pure: no Beam imports.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

DATA_DIR = Path(__file__).resolve().parent / "data" / "jurisdictions"


class PolicyJurisdictions(Protocol):
    """What the checks read of a policy's ``jurisdictions`` section (``policy.Jurisdictions``;
    structural, so that the data does not import the policy that checks against it)."""

    fatf_snapshot: str
    embargoed: tuple[str, ...]


@dataclass(frozen=True)
class JurisdictionData:
    iso2: frozenset[str]  # every country code OFAC uses
    embargoes: dict[str, str]  # code -> status ("active" or "TERMINATED <date>")
    fatf: dict[str, dict[str, frozenset[str]]]  # snapshot -> list -> ISO2 codes

    def high_risk(self, snapshot: str, lists: tuple[str, ...]) -> frozenset[str]:
        lists_of = self.fatf[snapshot]
        return frozenset().union(*(lists_of.get(name, frozenset()) for name in lists))

    def check_policy(self, j: PolicyJurisdictions) -> list[str]:
        """Problems of a policy's jurisdiction section against the data (key: message)."""
        problems = []
        if j.fatf_snapshot not in self.fatf:
            problems.append(
                f"jurisdictions.fatf_snapshot: unknown snapshot {j.fatf_snapshot!r} "
                f"(known: {sorted(self.fatf)})"
            )
        unknown = [c for c in j.embargoed if c.split("-")[0] not in self.iso2]
        if unknown:
            problems.append(f"jurisdictions.embargoed: unknown country codes {unknown}")
        return problems

    def missing_embargoes(self, j: PolicyJurisdictions) -> list[str]:
        """Active comprehensive OFAC embargoes that the policy does not list (a warning)."""
        return sorted(
            c for c, s in self.embargoes.items() if s == "active" and c not in j.embargoed
        )


@lru_cache(maxsize=1)
def load_jurisdictions(data_dir: str | None = None) -> JurisdictionData:
    d = Path(data_dir) if data_dir else DATA_DIR
    with open(d / "ofac_sdn_advanced_country_codes_2025-11-19.csv", encoding="utf-8") as f:
        iso2 = frozenset(r["iso2"] for r in csv.DictReader(f) if r["iso2"])
    with open(d / "ofac_comprehensive_embargoes.csv", encoding="utf-8") as f:
        embargoes = {r["code"]: r["status"] for r in csv.DictReader(f)}
    fatf: dict[str, dict[str, set[str]]] = {}
    with open(d / "fatf_high_risk_and_monitored_jurisdictions.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            fatf.setdefault(r["as_of_plenary"], {}).setdefault(r["fatf_list"], set()).add(r["iso2"])
    return JurisdictionData(
        iso2=iso2,
        embargoes=embargoes,
        fatf={s: {k: frozenset(v) for k, v in lists.items()} for s, lists in fatf.items()},
    )
