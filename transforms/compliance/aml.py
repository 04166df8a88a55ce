"""AML monitoring rules over transfer legs, per subject, in event time. Pure: no Beam imports.

    .venv/bin/python -m pytest -q tests/transforms/compliance/test_aml.py

Every transfer has two *legs*, one per side, each seen from its *subject*: the customer account
that owns the wallet (``subject_kind`` ``account``, with the ``AccountProfile`` in force) or, for
a wallet without a profile, the bare wallet address (``wallet``). :class:`AmlEngine` keeps a
bounded state per subject and turns each leg into zero or more :class:`AmlHit`. The caller keys
the legs by subject, delivers the legs of one subject in event-time order (ties by event id) and
drops intra-account legs (both sides owned by the same account) before they get here;
:func:`legs_of_transfer` does that splitting.

Every parameter comes from the compliance :class:`~transforms.compliance.policy.Policy`
(``transforms/compliance/config/policy.yaml``); nothing below is a hard-coded threshold. The only
fixed durations are the policy's own definition of a day (tier limits are per rolling 24 h) and
the 24 h cooldown of the profile rules.

**Windows.** A window of ``h`` hours ending at the triggering leg's time ``t`` holds the legs with
``t - h <= event_time <= t`` (``window_start = t - h``, both ends inclusive). Sums are exact
``Decimal`` sums over *priced* legs; a leg with ``amount_usd`` None (unpriced) counts in counts
but never in sums, and can trigger only conditions that do not need its amount (velocity by
count, the mixer rule when its minimum is 0, the profile rules, the embargo).

**Rules** (``rule_id``; ``screening_type`` ``aml`` unless marked policy):

- ``aml.velocity``: more than ``max_count`` legs (in + out, priced or not) in ``window_h``, or a
  priced in + out sum above ``max_sum_usd``. Evidence: every leg of the window.
- ``aml.daily_aggregate``: the priced in + out sum in ``window_h`` is above ``threshold_usd``
  (the CTR analogue). Evidence: the priced legs of the window.
- ``aml.structuring``: the trigger is in the band ``threshold * (1 - band_pct/100) <= amount <
  threshold`` and its direction (inflows and outflows are counted apart) has at least
  ``min_count`` in-band legs in ``window_h``. Evidence: those legs.
- ``aml.accumulation``: an outflow that moves at least ``consolidation_pct`` % of the "small"
  priced inflows (``amount <= max_inflow_usd``) received in ``[t_last - window_h, t_last]``,
  ``t_last`` being the last small inflow, when there are at least ``min_inflows`` of them and the
  outflow comes at most ``consolidation_within_h`` after ``t_last``. Evidence: the inflows and
  the outflow; the hit's window runs from ``t_last - window_h`` to the outflow.
- ``aml.rapid_in_out``: an outflow of at least ``min_amount_usd`` that moves at least
  ``pass_through_pct`` % of the priced inflows of the preceding ``window_h``, when those inflows
  themselves add up to at least ``min_amount_usd`` (so that a dust inflow before an ordinary
  payment is no pass-through). Evidence: the inflows and the outflow.
- ``aml.jurisdiction`` (accounts): the profile's country, or the ISO2 part of a region code
  (``UA-43`` -> ``UA``), is on the policy's FATF snapshot lists; action
  ``jurisdictions.high_risk_action``, score ``rules.jurisdiction.score``.
- ``aml.mixer``: the counterparty is one of ``rules.mixer.addresses`` and the leg's amount is at
  least ``min_amount_usd`` (an unpriced leg counts only when that minimum is 0).
- ``policy.embargo`` (accounts): the profile country is embargoed: exactly (country or region),
  or through its ISO2 when the whole country is listed. ``embargo_action``, score 100.
- ``policy.tier_daily_volume`` (accounts): the priced in + out sum of 24 h is above the tier's
  ``daily_volume_usd``; an unknown tier is read as ``default_tier`` and the evidence says so.
- ``policy.tier_single_transfer`` (accounts): one leg above the tier's ``single_transfer_usd``.
- ``policy.pep`` (accounts, if ``pep.enabled``): a PEP's leg of at least ``pep.min_amount_usd``.
- ``policy.kyc`` (accounts): the profile's ``kyc_status`` is not in ``kyc.allowed``.

Actions and scores: ``aml.*`` rules use their rule's ``action`` and ``score`` (jurisdiction: the
action of the jurisdictions section). The policy rules carry an action but no score; their
``risk_score`` follows the action: 100 for ``blocked``, 50 for ``flagged`` (``ACTION_SCORES``).

Memory: one deque per window and subject, pruned on every leg of the subject, so a subject keeps
at most the legs of its longest window; :meth:`AmlEngine.purge` drops the subjects idle longer
than ``policy.max_window_h()`` (their windows are empty and their cooldowns over by then).
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Context, Decimal
from typing import Any, Literal

from schemas.base import deterministic_id
from schemas.events import AccountProfile, Transfer
from schemas.tables import ComplianceScreeningRow
from schemas.types import epoch_micros
from transforms.compliance.jurisdictions import JurisdictionData, load_jurisdictions
from transforms.compliance.lists import normalise_address as sanctions_key
from transforms.compliance.policy import Policy

# Rule ids, in the order in which one leg's hits are returned.
EMBARGO = "policy.embargo"
KYC = "policy.kyc"
PEP = "policy.pep"
JURISDICTION = "aml.jurisdiction"
MIXER = "aml.mixer"
TIER_SINGLE = "policy.tier_single_transfer"
TIER_DAILY = "policy.tier_daily_volume"
VELOCITY = "aml.velocity"
DAILY_AGGREGATE = "aml.daily_aggregate"
STRUCTURING = "aml.structuring"
ACCUMULATION = "aml.accumulation"
RAPID_IN_OUT = "aml.rapid_in_out"
RULE_IDS = (
    EMBARGO,
    KYC,
    PEP,
    JURISDICTION,
    MIXER,
    TIER_SINGLE,
    TIER_DAILY,
    VELOCITY,
    DAILY_AGGREGATE,
    STRUCTURING,
    ACCUMULATION,
    RAPID_IN_OUT,
)

ACTION_SCORES = {"blocked": 100.0, "flagged": 50.0}
"""risk_score of the policy.* rules, whose policy sections carry an action but no score."""

TIER_WINDOW_H = 24.0  # the policy's tier limits are per rolling 24 h (TierLimits)
PROFILE_COOLDOWN_H = 24.0  # jurisdiction, pep, kyc: once per subject per 24 h

# Sums are exact: 80 significant digits hold any sum of BigQuery NUMERIC amounts.
_EXACT = Context(prec=80)
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


class LateLegError(ValueError):
    """A leg older than its subject's last one: the windows have moved past it."""


def normalise_address(address: str) -> str:
    """The sanctions screen's comparison key (``sanctions_list.normalise_address``: EVM, bech32
    and CashAddr case-folded, others such as Tron base58 case-sensitive), so a wallet is the same
    subject here as there; an address that key refuses (mixed-case bech32, never valid) stays as
    written, still a subject of its own."""
    return sanctions_key(address) or address.strip()


def _dec(x: float | int | Decimal) -> Decimal:
    """A policy number as a Decimal, through its repr (80.0 -> 80.0, not a binary expansion)."""
    return x if isinstance(x, Decimal) else Decimal(repr(x))


def _hours(h: float) -> timedelta:
    return timedelta(hours=h)


def _pct(part: Decimal, whole: Decimal) -> str:
    if whole <= 0:
        return "0"
    return str(_EXACT.divide(_EXACT.multiply(part, _HUNDRED), whole).quantize(Decimal("0.01")))


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of one transfer, seen from a subject (an account or a bare wallet)."""

    subject: str  # account_id for wallets with a profile, else the normalised wallet address
    subject_kind: Literal["account", "wallet"]
    direction: Literal["in", "out"]
    wallet: str  # the subject's own address in this transfer (normalised)
    counterparty: str  # the other address (normalised: EVM lower-case)
    chain_id: str
    event_id: str
    tx_hash: str
    amount_usd: Decimal | None  # None = unpriced: count-based rules only, never sums
    event_time: datetime  # tz-aware UTC
    profile: AccountProfile | None  # the profile in force for account subjects, else None


def legs_of_transfer(
    transfer: Transfer, profile_of: Callable[[str], AccountProfile | None]
) -> list[Leg]:
    """The two legs of a transfer (out for the sender, in for the recipient).

    ``profile_of`` maps a normalised address to the profile in force at the transfer's time (or
    None). Intra-account transfers (both sides owned by one account, or a wallet paying itself)
    give no legs.
    """
    src = normalise_address(transfer.from_address)
    dst = normalise_address(transfer.to_address)
    if src == dst:
        return []
    p_src, p_dst = profile_of(src), profile_of(dst)
    if p_src is not None and p_dst is not None and p_src.account_id == p_dst.account_id:
        return []
    legs = []
    for direction, wallet, other, profile in (("out", src, dst, p_src), ("in", dst, src, p_dst)):
        legs.append(
            Leg(
                subject=profile.account_id if profile else wallet,
                subject_kind="account" if profile else "wallet",
                direction=direction,
                wallet=wallet,
                counterparty=other,
                chain_id=transfer.chain_id,
                event_id=transfer.event_id,
                tx_hash=transfer.tx_hash,
                amount_usd=transfer.amount_usd,
                event_time=transfer.event_time,
                profile=profile,
            )
        )
    return legs


@dataclass(frozen=True)
class AmlHit:
    hit_id: str  # deterministic_id("aml", rule_id, subject, trigger event_id, direction)
    rule_id: str
    screening_type: Literal["aml", "policy"]
    subject: str
    subject_kind: str
    address: str  # leg.wallet of the triggering leg
    chain_id: str
    tx_hash: str  # triggering transfer
    screening_result: Literal["flagged", "blocked"]
    risk_score: float
    params: dict  # the rule's parameters from the policy, JSON-able (Decimal -> str)
    window_start: datetime
    window_end: datetime
    evidence_tx_hashes: tuple[str, ...]  # ordered by event time; includes the trigger
    event_time: datetime  # the triggering leg's time
    policy_version: str
    figures: dict = field(default_factory=dict)  # rule-specific figures, JSON-able

    def evidence(self) -> dict:
        """The JSON-able evidence document of the hit."""
        return {
            "rule_id": self.rule_id,
            "subject": self.subject,
            "subject_kind": self.subject_kind,
            "params": copy.deepcopy(self.params),
            "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
            "evidence_tx_hashes": list(self.evidence_tx_hashes),
            "policy_version": self.policy_version,
            **copy.deepcopy(self.figures),
        }


class _Window:
    """The legs of the last ``span`` of event time, with their count and exact priced sum."""

    __slots__ = ("span", "legs", "sum_usd", "priced")

    def __init__(self, hours: float):
        self.span = _hours(hours)
        self.legs: deque[Leg] = deque()
        self.sum_usd = _ZERO
        self.priced = 0

    def prune(self, t: datetime) -> None:
        start = t - self.span
        legs = self.legs
        while legs and legs[0].event_time < start:
            old = legs.popleft()
            if old.amount_usd is not None:
                self.sum_usd = _EXACT.subtract(self.sum_usd, old.amount_usd)
                self.priced -= 1

    def add(self, leg: Leg) -> None:
        self.legs.append(leg)
        if leg.amount_usd is not None:
            self.sum_usd = _EXACT.add(self.sum_usd, leg.amount_usd)
            self.priced += 1


class _Subject:
    __slots__ = ("last_time", "last_event_id", "windows", "inflows", "band", "small", "cooldown")

    def __init__(self, all_hours: Iterable[float], engine: AmlEngine):
        self.last_time: datetime | None = None
        self.last_event_id = ""
        self.windows = {h: _Window(h) for h in all_hours}  # every leg, keyed by window hours
        r = engine.policy.rules
        self.inflows = _Window(r.rapid_in_out.window_h)  # priced inflows
        self.band = {d: _Window(r.structuring.window_h) for d in ("in", "out")}  # in-band legs
        self.small = _Window(r.accumulation.window_h + r.accumulation.consolidation_within_h)
        self.cooldown: dict[str, datetime] = {}  # rule_id -> suppressed before this time


class AmlEngine:
    """Stateful AML rules over the legs of many subjects (see the module docstring).

    Legs of one subject must arrive in event-time order (ties: event id); different subjects may
    interleave. ``process`` raises ValueError on a leg older than its subject's last one.

    **Re-firing.** A hit is an alert for a human, so a pattern that persists does not raise one
    alert per leg. Windowed rules (velocity, daily_aggregate, structuring, accumulation,
    rapid_in_out, tier_daily_volume) fire once and are then suppressed for that (subject, rule)
    until ``window_h`` after the hit (the rule's window; 24 h for tier_daily_volume); the rules
    on the state of the profile (jurisdiction, pep, kyc) fire once per subject per 24 h. Legs
    keep filling the windows while a rule is suppressed. A leg at exactly the end of a cooldown
    may fire again. Per-transfer decisions (mixer, embargo, tier_single_transfer) fire on every
    qualifying leg. Worked timeline, daily_aggregate with ``window_h`` 24 and ``threshold_usd``
    10,000, one account:

    ========  ==============  =================  ==========================================
    t         leg             24 h sum           result
    ========  ==============  =================  ==========================================
    0 h       in 12,000       12,000             hit (window -24 h..0 h); cooldown to 24 h
    3 h       out 5,000       17,000             suppressed (3 h < 24 h)
    25 h      in 1,000        6,000 (0 h left)   no hit: under the threshold
    26 h      in 8,000        14,000             hit again (26 h >= 24 h); cooldown to 50 h
    ========  ==============  =================  ==========================================

    A kyc hit at 0 h (profile ``pending``) is likewise suppressed at 3 h and fires again at 25 h
    if the profile is still not allowed; an embargoed account's legs are blocked at 0 h, 3 h
    and 25 h alike.
    """

    def __init__(self, policy: Policy, jurisdictions: JurisdictionData | None = None):
        self.policy = policy
        j = policy.jurisdictions
        data = jurisdictions if jurisdictions is not None else load_jurisdictions()
        self._high_risk = data.high_risk(j.fatf_snapshot, tuple(j.high_risk_lists))
        self._embargoed = frozenset(j.embargoed)
        r = policy.rules
        self._mixers = frozenset(a.lower() for a in r.mixer.addresses)
        self._max_idle = _hours(policy.max_window_h())
        # Windows of every leg, shared by the rules of equal length (24 h, usually, for all).
        self._all_hours = tuple(
            sorted({r.velocity.window_h, r.daily_aggregate.window_h, TIER_WINDOW_H})
        )
        s = r.structuring
        self._band_low = _EXACT.multiply(
            s.threshold_usd, _EXACT.divide(_EXACT.subtract(_HUNDRED, _dec(s.band_pct)), _HUNDRED)
        )
        self._params = self._rule_params()
        self._subjects: dict[str, _Subject] = {}

    # ---- state ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._subjects)

    def purge(self, now: datetime) -> int:
        """Drops the subjects idle for longer than ``policy.max_window_h()``; returns how many."""
        idle = [
            s
            for s, st in self._subjects.items()
            if st.last_time is not None and now - st.last_time > self._max_idle
        ]
        for s in idle:
            del self._subjects[s]
        return len(idle)

    def _rule_params(self) -> dict[str, dict[str, Any]]:
        p = self.policy
        r = p.rules
        j = p.jurisdictions

        def dump(model: Any, exclude: set[str] | None = None) -> dict[str, Any]:
            return model.model_dump(mode="json", exclude=exclude)

        return {
            VELOCITY: dump(r.velocity),
            DAILY_AGGREGATE: dump(r.daily_aggregate),
            STRUCTURING: {**dump(r.structuring), "band_low_usd": str(self._band_low)},
            ACCUMULATION: dump(r.accumulation),
            RAPID_IN_OUT: dump(r.rapid_in_out),
            JURISDICTION: {
                **dump(r.jurisdiction, {"action"}),
                "fatf_snapshot": j.fatf_snapshot,
                "high_risk_lists": list(j.high_risk_lists),
                "action": j.high_risk_action,
            },
            MIXER: {**dump(r.mixer, {"addresses"}), "mixer_count": len(self._mixers)},
            EMBARGO: {"embargoed": list(j.embargoed), "action": j.embargo_action},
            PEP: dump(p.pep),
            KYC: dump(p.kyc),
        }

    # ---- processing ----------------------------------------------------------------------

    def process(self, leg: Leg) -> list[AmlHit]:
        """Adds a leg to its subject's state; returns the hits it triggers (in RULE_IDS order)."""
        t = leg.event_time
        if t.tzinfo is None:
            raise ValueError(f"leg {leg.event_id}: event_time must be tz-aware UTC")
        st = self._subjects.get(leg.subject)
        if st is None:
            st = self._subjects[leg.subject] = _Subject(self._all_hours, self)
        elif st.last_time is not None and (t, leg.event_id) < (st.last_time, st.last_event_id):
            raise LateLegError(
                f"leg {leg.event_id} of {leg.subject} at {t.isoformat()} is older than the "
                f"subject's last leg {st.last_event_id} at {st.last_time.isoformat()}"
            )
        st.last_time, st.last_event_id = t, leg.event_id
        self._update(st, leg)

        hits: list[AmlHit] = []
        profile = leg.profile if leg.subject_kind == "account" else None
        if profile is not None:
            self._embargo(st, leg, profile, hits)
            self._kyc(st, leg, profile, hits)
            self._pep(st, leg, profile, hits)
            self._jurisdiction(st, leg, profile, hits)
        self._mixer(leg, hits)
        if profile is not None:
            self._tier_single(leg, profile, hits)
            self._tier_daily(st, leg, profile, hits)
        self._velocity(st, leg, hits)
        self._daily_aggregate(st, leg, hits)
        self._structuring(st, leg, hits)
        self._accumulation(st, leg, hits)
        self._rapid_in_out(st, leg, hits)
        return hits

    def _update(self, st: _Subject, leg: Leg) -> None:
        t, amount = leg.event_time, leg.amount_usd
        for w in st.windows.values():
            w.prune(t)
            w.add(leg)
        for w in (st.inflows, st.small, *st.band.values()):
            w.prune(t)
        if amount is None:
            return
        r = self.policy.rules
        if leg.direction == "in":
            st.inflows.add(leg)
            if amount <= r.accumulation.max_inflow_usd:
                st.small.add(leg)
        if self._band_low <= amount < r.structuring.threshold_usd:
            st.band[leg.direction].add(leg)

    # ---- helpers -------------------------------------------------------------------------

    def _cooling(self, st: _Subject, rule_id: str, t: datetime) -> bool:
        until = st.cooldown.get(rule_id)
        return until is not None and t < until

    def _cool(self, st: _Subject, rule_id: str, t: datetime, hours: float) -> None:
        st.cooldown[rule_id] = t + _hours(hours)

    def _hit(
        self,
        rule_id: str,
        leg: Leg,
        action: str,
        score: float,
        *,
        params: dict[str, Any] | None = None,
        window_start: datetime | None = None,
        evidence: Iterable[Leg] = (),
        figures: dict[str, Any] | None = None,
    ) -> AmlHit:
        keyed = {(x.event_time, x.event_id, x.direction): x.tx_hash for x in (*evidence, leg)}
        hashes = tuple(dict.fromkeys(keyed[k] for k in sorted(keyed)))
        return AmlHit(
            hit_id=deterministic_id("aml", rule_id, leg.subject, leg.event_id, leg.direction),
            rule_id=rule_id,
            screening_type="policy" if rule_id.startswith("policy.") else "aml",
            subject=leg.subject,
            subject_kind=leg.subject_kind,
            address=leg.wallet,
            chain_id=leg.chain_id,
            tx_hash=leg.tx_hash,
            screening_result=action,  # type: ignore[arg-type]
            risk_score=float(score),
            params=copy.deepcopy(params if params is not None else self._params[rule_id]),
            window_start=window_start if window_start is not None else leg.event_time,
            window_end=leg.event_time,
            evidence_tx_hashes=hashes,
            event_time=leg.event_time,
            policy_version=self.policy.policy_version,
            figures={"direction": leg.direction, **(figures or {})},
        )

    def _tier(self, profile: AccountProfile) -> tuple[str, dict[str, Any]]:
        p = self.policy
        if profile.tier in p.tiers:
            return profile.tier, {"tier": profile.tier}
        return p.default_tier, {
            "tier": profile.tier,
            "tier_unknown": True,
            "tier_applied": p.default_tier,
        }

    # ---- profile and per-transfer rules --------------------------------------------------

    def _embargo(self, st: _Subject, leg: Leg, profile: AccountProfile, hits: list) -> None:
        country = profile.country
        iso2 = country.split("-")[0]
        if country in self._embargoed:
            matched = country
        elif iso2 in self._embargoed:
            matched = iso2
        else:
            return
        action = self.policy.jurisdictions.embargo_action
        figures = {"country": country, "matched": matched}
        hits.append(self._hit(EMBARGO, leg, action, 100.0, figures=figures))

    def _kyc(self, st: _Subject, leg: Leg, profile: AccountProfile, hits: list) -> None:
        kyc = self.policy.kyc
        t = leg.event_time
        if profile.kyc_status in kyc.allowed or self._cooling(st, KYC, t):
            return
        self._cool(st, KYC, t, PROFILE_COOLDOWN_H)
        figures = {"kyc_status": profile.kyc_status}
        hits.append(self._hit(KYC, leg, kyc.action, ACTION_SCORES[kyc.action], figures=figures))

    def _pep(self, st: _Subject, leg: Leg, profile: AccountProfile, hits: list) -> None:
        pep = self.policy.pep
        t, amount = leg.event_time, leg.amount_usd
        if not (pep.enabled and profile.pep) or self._cooling(st, PEP, t):
            return
        if amount is None and pep.min_amount_usd > 0:
            return
        if amount is not None and amount < pep.min_amount_usd:
            return
        self._cool(st, PEP, t, PROFILE_COOLDOWN_H)
        figures = {"amount_usd": None if amount is None else str(amount)}
        hits.append(self._hit(PEP, leg, pep.action, ACTION_SCORES[pep.action], figures=figures))

    def _jurisdiction(self, st: _Subject, leg: Leg, profile: AccountProfile, hits: list) -> None:
        rule = self.policy.rules.jurisdiction
        t = leg.event_time
        if not rule.enabled or self._cooling(st, JURISDICTION, t):
            return
        country = profile.country
        iso2 = country.split("-")[0]
        if country in self._high_risk:
            matched = country
        elif iso2 in self._high_risk:
            matched = iso2
        else:
            return
        self._cool(st, JURISDICTION, t, PROFILE_COOLDOWN_H)
        action = self.policy.jurisdictions.high_risk_action
        figures = {"country": country, "matched": matched}
        hits.append(self._hit(JURISDICTION, leg, action, rule.score, figures=figures))

    def _mixer(self, leg: Leg, hits: list) -> None:
        rule = self.policy.rules.mixer
        amount = leg.amount_usd
        if not rule.enabled or leg.counterparty.lower() not in self._mixers:
            return
        if amount is None and rule.min_amount_usd > 0:
            return
        if amount is not None and amount < rule.min_amount_usd:
            return
        figures = {
            "mixer_address": leg.counterparty.lower(),
            "amount_usd": None if amount is None else str(amount),
        }
        hits.append(self._hit(MIXER, leg, rule.action, rule.score, figures=figures))

    def _tier_single(self, leg: Leg, profile: AccountProfile, hits: list) -> None:
        amount = leg.amount_usd
        name, tier_figures = self._tier(profile)
        limits = self.policy.tiers[name]
        if amount is None or amount <= limits.single_transfer_usd:
            return
        params = {
            "tier": name,
            "single_transfer_usd": str(limits.single_transfer_usd),
            "action": limits.action,
        }
        figures = {**tier_figures, "amount_usd": str(amount)}
        score = ACTION_SCORES[limits.action]
        hits.append(
            self._hit(TIER_SINGLE, leg, limits.action, score, params=params, figures=figures)
        )

    # ---- windowed rules ------------------------------------------------------------------

    def _tier_daily(self, st: _Subject, leg: Leg, profile: AccountProfile, hits: list) -> None:
        t = leg.event_time
        if leg.amount_usd is None or self._cooling(st, TIER_DAILY, t):
            return
        name, tier_figures = self._tier(profile)
        limits = self.policy.tiers[name]
        w = st.windows[TIER_WINDOW_H]
        if w.sum_usd <= limits.daily_volume_usd:
            return
        self._cool(st, TIER_DAILY, t, TIER_WINDOW_H)
        priced = [x for x in w.legs if x.amount_usd is not None]
        params = {
            "tier": name,
            "daily_volume_usd": str(limits.daily_volume_usd),
            "window_h": TIER_WINDOW_H,
            "action": limits.action,
        }
        figures = {**tier_figures, "count": len(priced), "sum_usd": str(w.sum_usd)}
        hits.append(
            self._hit(
                TIER_DAILY,
                leg,
                limits.action,
                ACTION_SCORES[limits.action],
                params=params,
                window_start=t - w.span,
                evidence=priced,
                figures=figures,
            )
        )

    def _velocity(self, st: _Subject, leg: Leg, hits: list) -> None:
        rule = self.policy.rules.velocity
        t = leg.event_time
        if not rule.enabled or self._cooling(st, VELOCITY, t):
            return
        w = st.windows[rule.window_h]
        reasons = []
        if len(w.legs) > rule.max_count:
            reasons.append("count")
        # An unpriced leg leaves the sum as it was: it cannot be the trigger of a sum excess.
        if leg.amount_usd is not None and w.sum_usd > rule.max_sum_usd:
            reasons.append("sum")
        if not reasons:
            return
        self._cool(st, VELOCITY, t, rule.window_h)
        figures = {
            "reasons": reasons,
            "count": len(w.legs),
            "priced_count": w.priced,
            "sum_usd": str(w.sum_usd),
        }
        hits.append(
            self._hit(
                VELOCITY,
                leg,
                rule.action,
                rule.score,
                window_start=t - w.span,
                evidence=w.legs,
                figures=figures,
            )
        )

    def _daily_aggregate(self, st: _Subject, leg: Leg, hits: list) -> None:
        rule = self.policy.rules.daily_aggregate
        t = leg.event_time
        if not rule.enabled or leg.amount_usd is None or self._cooling(st, DAILY_AGGREGATE, t):
            return
        w = st.windows[rule.window_h]
        if w.sum_usd <= rule.threshold_usd:
            return
        self._cool(st, DAILY_AGGREGATE, t, rule.window_h)
        priced = [x for x in w.legs if x.amount_usd is not None]
        by_direction = {"in": _ZERO, "out": _ZERO}
        for x in priced:
            by_direction[x.direction] = _EXACT.add(by_direction[x.direction], x.amount_usd)
        figures = {
            "count": len(priced),
            "sum_usd": str(w.sum_usd),
            "in_usd": str(by_direction["in"]),
            "out_usd": str(by_direction["out"]),
        }
        hits.append(
            self._hit(
                DAILY_AGGREGATE,
                leg,
                rule.action,
                rule.score,
                window_start=t - w.span,
                evidence=priced,
                figures=figures,
            )
        )

    def _structuring(self, st: _Subject, leg: Leg, hits: list) -> None:
        rule = self.policy.rules.structuring
        t, amount = leg.event_time, leg.amount_usd
        if not rule.enabled or amount is None or self._cooling(st, STRUCTURING, t):
            return
        if not self._band_low <= amount < rule.threshold_usd:
            return
        w = st.band[leg.direction]
        if len(w.legs) < rule.min_count:
            return
        self._cool(st, STRUCTURING, t, rule.window_h)
        figures = {"count": len(w.legs), "sum_usd": str(w.sum_usd)}
        hits.append(
            self._hit(
                STRUCTURING,
                leg,
                rule.action,
                rule.score,
                window_start=t - w.span,
                evidence=w.legs,
                figures=figures,
            )
        )

    def _accumulation(self, st: _Subject, leg: Leg, hits: list) -> None:
        rule = self.policy.rules.accumulation
        t, amount = leg.event_time, leg.amount_usd
        if not rule.enabled or leg.direction != "out" or amount is None:
            return
        if self._cooling(st, ACCUMULATION, t) or not st.small.legs:
            return
        t_last = st.small.legs[-1].event_time
        if t - t_last > _hours(rule.consolidation_within_h):
            return
        start = t_last - _hours(rule.window_h)
        inflows = [x for x in st.small.legs if x.event_time >= start]
        if len(inflows) < rule.min_inflows:
            return
        total = _ZERO
        for x in inflows:
            total = _EXACT.add(total, x.amount_usd)
        if total <= 0 or _EXACT.multiply(amount, _HUNDRED) < _EXACT.multiply(
            _dec(rule.consolidation_pct), total
        ):
            return
        self._cool(st, ACCUMULATION, t, rule.window_h)
        figures = {
            "inflow_count": len(inflows),
            "inflow_sum_usd": str(total),
            "outflow_usd": str(amount),
            "moved_pct": _pct(amount, total),
            "last_inflow_time": t_last.isoformat(),
            "hours_after_last_inflow": (t - t_last).total_seconds() / 3600,
        }
        hits.append(
            self._hit(
                ACCUMULATION,
                leg,
                rule.action,
                rule.score,
                window_start=start,
                evidence=inflows,
                figures=figures,
            )
        )

    def _rapid_in_out(self, st: _Subject, leg: Leg, hits: list) -> None:
        rule = self.policy.rules.rapid_in_out
        t, amount = leg.event_time, leg.amount_usd
        if not rule.enabled or leg.direction != "out" or amount is None:
            return
        if amount < rule.min_amount_usd or self._cooling(st, RAPID_IN_OUT, t):
            return
        w = st.inflows
        total = w.sum_usd
        if not w.legs or total <= 0 or total < rule.min_amount_usd:
            return
        if _EXACT.multiply(amount, _HUNDRED) < _EXACT.multiply(_dec(rule.pass_through_pct), total):
            return
        self._cool(st, RAPID_IN_OUT, t, rule.window_h)
        figures = {
            "inflow_count": len(w.legs),
            "inflow_sum_usd": str(total),
            "outflow_usd": str(amount),
            "moved_pct": _pct(min(amount, total), total),
        }
        hits.append(
            self._hit(
                RAPID_IN_OUT,
                leg,
                rule.action,
                rule.score,
                window_start=t - w.span,
                evidence=w.legs,
                figures=figures,
            )
        )


def profile_in_force(versions: list[AccountProfile], t_us: int) -> AccountProfile | None:
    due = [p for p in versions if epoch_micros(p.updated_at) <= t_us]
    return max(due, key=lambda p: (p.updated_at, p.account_id)) if due else None


def resolve_legs(t: Transfer, by_wallet: dict[str, list[AccountProfile]]) -> list[Leg]:
    """The legs of a transfer, each wallet resolved to the profile in force at its time."""
    t_us = epoch_micros(t.event_time)

    def profile_of(wallet: str) -> AccountProfile | None:
        p = profile_in_force(by_wallet.get(wallet, []), t_us)
        # A later profile version may have dropped the wallet: then it is no longer the account's.
        return p if p and wallet in {normalise_address(w) for w in p.wallets} else None

    return legs_of_transfer(t, profile_of)


def aml_row(hit: AmlHit) -> ComplianceScreeningRow:
    return ComplianceScreeningRow(
        screening_id=hit.hit_id,
        address=hit.address,
        chain_id=hit.chain_id,
        screening_type=hit.screening_type,
        screening_result=hit.screening_result,
        rule_id=hit.rule_id,
        list_version=None,
        matched_entity=hit.subject if hit.subject_kind == "account" else None,
        risk_score=hit.risk_score,
        hop_distance=None,
        tx_hash=hit.tx_hash,
        evidence=json.dumps(hit.evidence(), sort_keys=True),
        screened_at=hit.event_time,
    )


def leg_order(g: Leg) -> tuple:
    return (g.event_time, g.event_id, g.direction)  # the order AmlEngine requires per subject


def leg_us(g: Leg) -> int:
    return epoch_micros(g.event_time)
