"""Which model backs which topic and which table."""

from __future__ import annotations

from schemas import events, tables
from schemas.base import Contract

TOPICS: dict[str, type[Contract]] = {
    "market.prices.v1": events.PriceEvent,
    "settlements.v1": events.Settlement,
    "dex.trades.v1": events.DexTrade,
    "liquidity.v1": events.LiquidityEvent,
    "transfers.v1": events.Transfer,
    "accounts.profiles.v1": events.AccountProfile,
    "alerts.margin.v1": events.MarginAlert,
    "alerts.surveillance.v1": events.SurveillanceAlert,
    "alerts.compliance.v1": events.ComplianceAlert,
}

INPUT_TOPICS = (
    "market.prices.v1",
    "settlements.v1",
    "dex.trades.v1",
    "liquidity.v1",
    "transfers.v1",
    "accounts.profiles.v1",
)
# What a duplicate is, per input topic: the same message delivered twice (a Pub/Sub redelivery, a
# replayed file). Every stateful stage keeps the first copy and drops later ones; a stage that
# refuses a copy writes a ``duplicate`` dead letter, so records in = out + dead letters holds.
DUPLICATE_RULES: dict[str, str] = {
    "market.prices.v1": "same event_id (deterministic per source and round)",
    "settlements.v1": "same event_id",
    "dex.trades.v1": "same event_id (chain, tx hash, log index)",
    "liquidity.v1": "same event_id (chain, tx hash, log index)",
    "transfers.v1": "same event_id (chain, tx hash, log index)",
    "accounts.profiles.v1": "same account_id and updated_at (Contract.message_id)",
}

ALERT_TOPICS = ("alerts.margin.v1", "alerts.surveillance.v1", "alerts.compliance.v1")

TABLES: dict[str, type[Contract]] = {
    "prices": tables.PriceRow,
    "portfolio_var": tables.PortfolioVarRow,
    "var_backtests": tables.VarBacktestRow,
    "margin_health": tables.MarginHealthRow,
    "margin_events": tables.MarginEventRow,
    "suspicious_activities": tables.SuspiciousActivityRow,
    "compliance_screenings": tables.ComplianceScreeningRow,
    "protocol_risk_assessments": tables.ProtocolRiskAssessmentRow,
    "smart_contract_vulnerabilities": tables.SmartContractVulnerabilityRow,
    "dead_letter": tables.DeadLetterRow,
}

DATASET = "risk"


def avro_name(topic: str) -> str:
    """File stem of a topic's Avro schema: market.prices.v1 -> market_prices_v1."""
    return topic.replace(".", "_")
