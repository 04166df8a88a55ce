"""BigQuery table rows (dataset ``risk``): one model per table.

Every table is partitioned by DATE of ``event_time_field`` and clustered by ``key_fields``.
The four seed tables (protocol_risk_assessments, suspicious_activities, compliance_screenings,
smart_contract_vulnerabilities) keep the product spec's column names.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.base import Contract
from schemas.types import EventTime, Json, Numeric, Timestamp


class PriceRow(Contract):
    event_time_field = "event_time"
    key_fields = ("asset",)
    doc = "Composite price per asset and window: the median of the valid sources."

    price_id: str = Field(description="Deterministic id: hash of asset and window end.")
    asset: str = Field(description="Asset symbol.")
    quote: str = Field("USD", description="Quote currency.")
    price: Numeric | None = Field(
        description="Composite price; null when status is price_unavailable."
    )
    status: Literal["ok", "degraded", "price_unavailable"] = Field(
        description="ok, degraded (a source was set aside) or price_unavailable."
    )
    n_sources: int = Field(ge=0, description="Number of valid source observations used.")
    sources: list[str] = Field(
        default_factory=list, description="Sources used, e.g. chainlink, pyth."
    )
    sources_set_aside: list[str] = Field(
        default_factory=list, description="Sources set aside for deviating from the others."
    )
    spread_bps: float | None = Field(
        None, description="(max - min) / median of the source prices, in basis points."
    )
    window_start: Timestamp = Field(description="Start of the composite window (inclusive).")
    event_time: EventTime = Field(
        description="End of the composite window: the time the price is valid for."
    )


class PortfolioVarRow(Contract):
    event_time_field = "as_of"
    key_fields = ("account_id", "method")
    doc = "Value at risk and expected shortfall of one account's portfolio."

    var_id: str = Field(
        description="Deterministic id: hash of account, as_of, method, level and horizon."
    )
    account_id: str = Field(description="The account.")
    as_of: EventTime = Field(description="Valuation time (end of the return window).")
    method: str = Field(description="historical, parametric, filtered_historical or monte_carlo.")
    level: float = Field(gt=0, lt=1, description="Confidence level, e.g. 0.99.")
    horizon_days: int = Field(ge=1, description="Horizon in days.")
    portfolio_value_usd: Numeric = Field(description="Net portfolio value at as_of.")
    var_usd: Numeric = Field(description="VaR as a positive loss in USD.")
    es_usd: Numeric = Field(description="Expected shortfall as a positive loss in USD.")
    n_scenarios: int = Field(ge=0, description="Number of return scenarios.")
    n_positions: int = Field(ge=0, description="Number of positions.")
    window_start: Timestamp = Field(description="First return date of the window.")
    window_end: Timestamp = Field(description="Last return date of the window.")


class VarBacktestRow(Contract):
    event_time_field = "as_of"
    key_fields = ("subject", "method")
    doc = "Backtest of a VaR model against realised returns."

    backtest_id: str = Field(description="Deterministic id.")
    subject: str = Field(description="Account id or asset backtested.")
    as_of: EventTime = Field(description="End of the backtest window.")
    method: str = Field(description="VaR method.")
    level: float = Field(gt=0, lt=1, description="VaR confidence level.")
    n_obs: int = Field(ge=0, description="Number of days tested.")
    exceptions: int = Field(ge=0, description="Days with loss > VaR.")
    kupiec_lr: float | None = Field(None, description="Kupiec proportion-of-failures LR statistic.")
    kupiec_pvalue: float | None = Field(None, description="p-value of the Kupiec test.")
    christoffersen_lr_ind: float | None = Field(None, description="Christoffersen independence LR.")
    christoffersen_lr_cc: float | None = Field(
        None, description="Christoffersen conditional coverage LR."
    )
    traffic_light: Literal["green", "yellow", "red"] | None = Field(
        None, description="Basel traffic-light zone."
    )


class LiquidationPrice(BaseModel):
    model_config = ConfigDict(frozen=True)

    asset: str = Field(description="Collateral asset.")
    liquidation_price: Numeric | None = Field(
        None, description="Price of the asset at which health reaches the liquidation threshold."
    )
    margin_call_price: Numeric | None = Field(
        None, description="Price at which health reaches the margin-call threshold."
    )


class MarginHealthRow(Contract):
    event_time_field = "event_ts"
    key_fields = ("account_id",)
    doc = (
        "Margin health of one account after its settlements of one instant, a zone change or a "
        "periodic snapshot."
    )

    row_id: str = Field(
        description="Deterministic id: hash of account, event_ts, trigger and the triggering "
        "settlement id (the last, in chain order, of the instant) or priced asset."
    )
    account_id: str = Field(description="The account.")
    event_ts: EventTime = Field(description="Event time of the update.")
    trigger: Literal["settlement", "price", "snapshot"] = Field(
        description="Why the row was written: a settlement of the account, a price that moved it "
        "to another zone, or the periodic snapshot of every account with debt."
    )
    collateral_usd: Numeric = Field(description="Collateral value in USD.")
    borrow_usd: Numeric = Field(description="Debt value in USD.")
    health_score: Numeric | None = Field(
        None, description="(collateral - borrow) / borrow * 100; null with no borrow."
    )
    zone: Literal["no_debt", "healthy", "warning", "margin_call", "liquidation"] = Field(
        description="Health zone."
    )
    liquidation_prices: list[LiquidationPrice] = Field(
        default_factory=list,
        description="Per collateral asset: liquidation and margin-call prices.",
    )
    price_status: str = Field(
        description="Worst status of the prices used: ok, degraded or price_unavailable."
    )


class MarginEventRow(Contract):
    event_time_field = "event_ts"
    key_fields = ("account_id", "event_type")
    doc = "Every margin zone transition detected (alerts are throttled; this table is not)."

    alert_id: str = Field(description="Deterministic id: hash of account, event type and event_ts.")
    account_id: str = Field(description="The account.")
    event_type: Literal["margin_call", "liquidation", "recovered"] = Field(
        description="Transition type."
    )
    zone: str = Field(description="Zone entered.")
    previous_zone: str | None = Field(None, description="Zone left.")
    health_score: Numeric | None = Field(None, description="Health at the transition.")
    event_ts: EventTime = Field(description="Event time of the transition.")
    alerted: bool = Field(description="False when the alert was suppressed by the cooldown.")


class SuspiciousActivityRow(Contract):
    event_time_field = "detected_at"
    key_fields = ("activity_type", "chain_id")
    doc = "A market-abuse finding with its evidence (product spec DDL)."

    activity_id: str = Field(description="Deterministic id of the finding.")
    activity_type: Literal["wash_trading", "rug_pull", "pump_and_dump", "sybil_cluster"] = Field(
        description="Kind of abuse."
    )
    chain_id: str = Field(description="CAIP-2 chain id.")
    wallet_addresses: list[str] = Field(default_factory=list, description="Wallets involved.")
    token_address: str | None = Field(None, description="Token involved, if any.")
    pool_address: str | None = Field(None, description="Pool involved, if any.")
    confidence_score: float = Field(
        ge=0, le=100, description="Confidence from 0 to 100 built from the signals."
    )
    estimated_impact_usd: Numeric | None = Field(
        None, description="Estimated wash volume or investor loss in USD."
    )
    evidence_tx_hashes: list[str] = Field(
        default_factory=list, description="Transactions that evidence the finding."
    )
    evidence_metrics: Json = Field(description="JSON: each signal's value and threshold.")
    window_start: Timestamp | None = Field(None, description="Start of the detection window.")
    window_end: Timestamp | None = Field(None, description="End of the detection window.")
    detected_at: EventTime = Field(description="Event time at which the detector fired.")
    status: Literal["open", "confirmed", "dismissed"] = Field("open", description="Review status.")


class ComplianceScreeningRow(Contract):
    event_time_field = "screened_at"
    key_fields = ("address", "chain_id")
    doc = "One screened address of one transfer against sanctions lists, AML rules and policy (product spec DDL)."

    screening_id: str = Field(description="Deterministic id: hash of transfer, address and rule.")
    address: str = Field(description="Screened address, normalised for its chain.")
    chain_id: str = Field(description="CAIP-2 chain id.")
    screening_type: Literal["sanctions", "exposure", "aml", "policy"] = Field(
        description="What screened it."
    )
    screening_result: Literal["clear", "flagged", "blocked"] = Field(
        description="clear, flagged (review) or blocked."
    )
    rule_id: str | None = Field(None, description="Sanctions list or AML rule id.")
    list_version: str | None = Field(None, description="Sanctions list version used.")
    matched_entity: str | None = Field(None, description="Name of the listed party matched.")
    risk_score: float = Field(ge=0, le=100, description="Risk score from 0 to 100.")
    hop_distance: int | None = Field(
        None, ge=0, description="0 for a direct hit, 1 or 2 for exposure."
    )
    tx_hash: str | None = Field(None, description="Transfer screened.")
    evidence: Json | None = Field(None, description="JSON evidence: path, parameters, window.")
    screened_at: EventTime = Field(description="Event time of the screened transfer.")


class RiskFactor(BaseModel):
    model_config = ConfigDict(frozen=True)

    factor: str = Field(
        description="Risk factor name, e.g. audit, tvl_concentration, exploit_history."
    )
    score: float = Field(ge=0, le=100, description="Factor score from 0 (safe) to 100 (risky).")
    weight: float = Field(ge=0, le=1, description="Weight in the overall score.")
    details: str | None = Field(None, description="Explanation.")


class ProtocolRiskAssessmentRow(Contract):
    event_time_field = "assessed_at"
    key_fields = ("protocol_name", "chain_id")
    doc = "Daily risk assessment of a DeFi protocol (product spec DDL)."

    assessment_id: str = Field(
        description="Deterministic id: hash of protocol, chain and assessed_at."
    )
    protocol_name: str = Field(description="Protocol name, e.g. Aave V3.")
    protocol_address: str | None = Field(None, description="Main contract address.")
    chain_id: str = Field(description="CAIP-2 chain id.")
    overall_risk_score: float = Field(
        ge=0, le=100, description="Weighted risk score from 0 to 100."
    )
    risk_level: Literal["low", "medium", "high", "critical"] = Field(
        description="Bucket of the overall score."
    )
    risk_factors: list[RiskFactor] = Field(default_factory=list, description="The scored factors.")
    tvl_usd: Numeric | None = Field(None, description="Total value locked in USD.")
    methodology_version: str = Field(description="Version of the scoring methodology.")
    assessed_at: EventTime = Field(description="Snapshot time of the assessment.")


class SmartContractVulnerabilityRow(Contract):
    event_time_field = "detected_at"
    key_fields = ("contract_address", "chain_id")
    doc = "A known or detected smart-contract vulnerability (product spec DDL)."

    vulnerability_id: str = Field(description="Deterministic id.")
    contract_address: str = Field(description="Affected contract.")
    chain_id: str = Field(description="CAIP-2 chain id.")
    protocol_name: str | None = Field(None, description="Protocol the contract belongs to.")
    vulnerability_type: str = Field(
        description="e.g. reentrancy, oracle_manipulation, access_control."
    )
    severity: Literal["low", "medium", "high", "critical"] = Field(description="Severity.")
    description: str | None = Field(None, description="What is wrong.")
    source: str = Field(description="Where it is known from, e.g. DeFiHackLabs, static analysis.")
    loss_usd: Numeric | None = Field(
        None, description="Loss in USD, for exploited vulnerabilities."
    )
    status: Literal["open", "mitigated", "exploited"] = Field(description="Status.")
    detected_at: EventTime = Field(description="When it was detected or exploited.")


class DeadLetterRow(Contract):
    event_time_field = "processing_time"
    key_fields = ("source", "stage", "error_reason")
    doc = "Every record that failed to parse or validate, with the reason."

    dead_letter_id: str = Field(description="Deterministic id: hash of source, stage and payload.")
    source: str = Field(description="Topic or file the record came from.")
    stage: str = Field(description="Pipeline step that rejected it, e.g. ParsePrices.")
    error_reason: str = Field(description="Short reason code, counted by a Beam counter.")
    error: str = Field(description="The error message.")
    # Kept byte for byte (no whitespace stripping), so a dead letter can be replayed as received.
    raw_payload: Annotated[str, StringConstraints(strip_whitespace=False)] = Field(
        description="The payload as received (UTF-8 text, or base64 when binary)."
    )
    payload_encoding: Literal["utf-8", "base64", "json"] = Field(
        description="How raw_payload is encoded."
    )
    event_time: Timestamp | None = Field(None, description="Event time, when it could be read.")
    processing_time: Timestamp = Field(
        description="Wall-clock time of the rejection (not event time)."
    )
