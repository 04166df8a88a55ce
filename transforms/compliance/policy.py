"""Compliance policy-as-code: one versioned YAML file holds every limit and AML threshold.

    defi-risk policy check transforms/compliance/config/policy.yaml

The file is validated on load (unknown keys, wrong types, impossible values), and every error
names its key path, for example ``rules.structuring.band_pct: must be > 0 and < 100``. The AML
rules (``transforms.compliance.aml``), the exposure screen (``transforms.compliance.exposure``) and the profile
rules read their parameters from here; nothing in them is hard-coded. The default file is
``transforms/compliance/config/policy.yaml``.

Jurisdictions: the policy names its embargoed countries and regions itself (an embargo on RU
would be a policy choice, not a legal fact) and pins the FATF snapshot it applies
(``jurisdictions.fatf_snapshot``); ``transforms.compliance.jurisdictions`` reads that snapshot from the bundled
reference data. Pure: no Beam imports.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from transforms.compliance.jurisdictions import load_jurisdictions

DEFAULT_POLICY = Path(__file__).resolve().parent / "config" / "policy.yaml"
Action = Literal["flagged", "blocked"]
KycStatus = Literal["verified", "pending", "unverified", "rejected"]
_REGION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")


class PolicyError(ValueError):
    """The policy file is invalid; ``problems`` lists ``key.path: message`` lines."""

    def __init__(self, path: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"invalid compliance policy {path}:\n  " + "\n  ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierLimits(_Strict):
    """Limits of one customer tier, in USD; volume counts inflows plus outflows."""

    daily_volume_usd: Decimal = Field(gt=0, description="Max in+out volume per rolling 24 h.")
    single_transfer_usd: Decimal = Field(gt=0, description="Max USD value of one transfer.")
    action: Action = "flagged"


class Jurisdictions(_Strict):
    embargoed: tuple[str, ...] = Field(
        description="ISO 3166-1 alpha-2 countries or ISO 3166-2 regions under embargo."
    )
    embargo_action: Action = "blocked"
    fatf_snapshot: str = Field(description="as_of_plenary of the FATF snapshot to apply.")
    high_risk_lists: tuple[Literal["call_for_action", "increased_monitoring"], ...] = (
        "call_for_action",
    )
    high_risk_action: Action = "flagged"

    @field_validator("fatf_snapshot", mode="before")
    @classmethod
    def _snapshot(cls, v: Any) -> Any:
        return v.isoformat() if isinstance(v, date) else v  # YAML reads 2025-10-24 as a date

    @field_validator("embargoed")
    @classmethod
    def _codes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in v if not _REGION.match(c)]
        if bad:
            raise ValueError(f"not ISO 3166 codes: {bad}")
        return v


class PepRule(_Strict):
    """Politically exposed persons: review transfers from this size up."""

    enabled: bool = True
    min_amount_usd: Decimal = Field(ge=0)
    action: Action = "flagged"


class KycRule(_Strict):
    """Transfers by accounts whose KYC status is not in ``allowed`` get ``action``."""

    allowed: tuple[KycStatus, ...] = ("verified",)
    action: Action = "flagged"


class _Rule(_Strict):
    enabled: bool = True
    action: Action = "flagged"
    score: float = Field(50.0, ge=0, le=100, description="risk_score of a hit.")
    alert: bool = Field(True, description="Hits also go to alerts.compliance.v1 (else rows only).")


class VelocityRule(_Rule):
    window_h: float = Field(24, gt=0)
    max_count: int = Field(gt=0, description="More transfers than this in the window hit.")
    max_sum_usd: Decimal = Field(gt=0, description="A larger in+out sum in the window hits.")


class DailyAggregateRule(_Rule):
    window_h: float = Field(24, gt=0)
    threshold_usd: Decimal = Field(Decimal(10000), gt=0, description="CTR analogue.")


class StructuringRule(_Rule):
    window_h: float = Field(24, gt=0)
    threshold_usd: Decimal = Field(Decimal(10000), gt=0)
    band_pct: float = Field(10, description="Counts transfers in [threshold*(1-band), threshold).")
    min_count: int = Field(3, ge=2)

    @field_validator("band_pct")
    @classmethod
    def _band(cls, v: float) -> float:
        if not 0 < v < 100:
            raise ValueError("must be > 0 and < 100")
        return v


class AccumulationRule(_Rule):
    """Many small inflows, then one outflow that moves most of them on."""

    window_h: float = Field(24, gt=0, description="Window of the inflows.")
    min_inflows: int = Field(10, ge=2)
    max_inflow_usd: Decimal = Field(Decimal(10000), gt=0, description="'Small' means up to this.")
    consolidation_pct: float = Field(80, gt=0, le=100)
    consolidation_within_h: float = Field(24, gt=0, description="After the last inflow.")


class RapidInOutRule(_Rule):
    window_h: float = Field(2, gt=0, description="Max time from an inflow to the outflow.")
    min_amount_usd: Decimal = Field(Decimal(1000), ge=0)
    pass_through_pct: float = Field(90, gt=0, le=100)


class JurisdictionRule(_Rule):
    """Transfers of accounts whose profile country is high risk (FATF) or embargoed."""


class MixerRule(_Rule):
    addresses: tuple[str, ...] = Field(description="Mixer contracts (EVM, any case).")
    min_amount_usd: Decimal = Field(Decimal(0), ge=0)

    @field_validator("addresses")
    @classmethod
    def _evm(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in v if not re.fullmatch(r"0x[0-9a-fA-F]{40}", a)]
        if bad:
            raise ValueError(f"not EVM addresses: {bad}")
        return tuple(a.lower() for a in v)


class AmlRules(_Strict):
    velocity: VelocityRule
    daily_aggregate: DailyAggregateRule
    structuring: StructuringRule
    accumulation: AccumulationRule
    rapid_in_out: RapidInOutRule
    jurisdiction: JurisdictionRule
    mixer: MixerRule


class ExposurePolicy(_Strict):
    """Counterparty distance to listed addresses: hop 1 traded with one, hop 2 with a hop-1."""

    window_h: float = Field(72, gt=0, description="Links older than this no longer carry exposure.")
    max_hops: Literal[1, 2] = 2
    min_amount_usd: Decimal = Field(
        Decimal(100), ge=0, description="Smaller transfers carry no exposure (dusting)."
    )
    hop_scores: dict[int, float] = Field(description="Base risk score per hop.")
    full_amount_usd: Decimal = Field(
        Decimal(10000), gt=0, description="Path amount from which the full hop score applies."
    )
    alert_score: float = Field(40, ge=0, le=100, description="Rows at or above it are flagged.")

    @field_validator("hop_scores")
    @classmethod
    def _hops(cls, v: dict[int, float], info: ValidationInfo) -> dict[int, float]:
        max_hops = info.data.get("max_hops")
        if max_hops is not None:
            missing = [h for h in range(1, max_hops + 1) if h not in v]
            if missing:
                raise ValueError(f"hop_scores has no score for hop(s) {missing}")
        if any(not 0 <= s <= 100 for s in v.values()):
            raise ValueError("hop_scores must be between 0 and 100")
        return v


class Policy(_Strict):
    policy_version: str = Field(min_length=1)
    effective_from: date
    tiers: dict[str, TierLimits] = Field(min_length=1)
    default_tier: str = Field(description="Tier of an account whose profile names none.")
    jurisdictions: Jurisdictions
    pep: PepRule
    kyc: KycRule
    rules: AmlRules
    exposure: ExposurePolicy

    @field_validator("default_tier")
    @classmethod
    def _default_tier(cls, v: str, info: ValidationInfo) -> str:
        tiers = info.data.get("tiers")
        if tiers is not None and v not in tiers:
            raise ValueError(f"default_tier {v!r} is not a tier (tiers: {sorted(tiers)})")
        return v

    def alerts(self, rule_id: str) -> bool:
        """Whether hits of ``rule_id`` (``aml.<rule>`` or ``policy.*``) are also alerts."""
        family, _, name = rule_id.partition(".")
        rule = getattr(self.rules, name, None) if family == "aml" else None
        return rule.alert if rule is not None else True

    def max_window_h(self) -> float:
        r = self.rules
        return max(
            24.0,
            r.velocity.window_h,
            r.daily_aggregate.window_h,
            r.structuring.window_h,
            r.accumulation.window_h + r.accumulation.consolidation_within_h,
            r.rapid_in_out.window_h,
        )


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_policy(data: Any, path: str = "<policy>") -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(path, ["(top level): must be a mapping of keys"])
    problems: list[str] = []
    policy = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append(f"{_loc(err['loc'])}: {msg}")
        try:  # the data check of a jurisdictions section that is valid on its own
            j = Jurisdictions.model_validate(data.get("jurisdictions"))
        except ValidationError:
            j = None
    else:
        j = policy.jurisdictions
    if j is not None:
        problems += load_jurisdictions().check_policy(j)
    if problems:
        raise PolicyError(path, problems)
    return policy


def load_policy(path: str | Path | None = None) -> Policy:
    """Reads and validates a policy file; raises PolicyError naming every bad key."""
    p = Path(path) if path else DEFAULT_POLICY
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(str(p), [f"(file): cannot read: {e.strerror or e}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise PolicyError(str(p), [f"(yaml, {where}): {getattr(e, 'problem', e)}"]) from None
    return parse_policy(data, str(p))
