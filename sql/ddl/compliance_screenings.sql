-- Generated from schemas/ (ComplianceScreeningRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.compliance_screenings (
  screening_id STRING NOT NULL OPTIONS(description="Deterministic id: hash of transfer, address and rule."),
  address STRING NOT NULL OPTIONS(description="Screened address, normalised for its chain."),
  chain_id STRING NOT NULL OPTIONS(description="CAIP-2 chain id."),
  screening_type STRING NOT NULL OPTIONS(description="What screened it."),
  screening_result STRING NOT NULL OPTIONS(description="clear, flagged (review) or blocked."),
  rule_id STRING OPTIONS(description="Sanctions list or AML rule id."),
  list_version STRING OPTIONS(description="Sanctions list version used."),
  matched_entity STRING OPTIONS(description="Name of the listed party matched."),
  risk_score FLOAT64 NOT NULL OPTIONS(description="Risk score from 0 to 100."),
  hop_distance INT64 OPTIONS(description="0 for a direct hit, 1 or 2 for exposure."),
  tx_hash STRING OPTIONS(description="Transfer screened."),
  evidence JSON OPTIONS(description="JSON evidence: path, parameters, window."),
  screened_at TIMESTAMP NOT NULL OPTIONS(description="Event time of the screened transfer.")
)
PARTITION BY DATE(screened_at)
CLUSTER BY address, chain_id
OPTIONS(
  description="One screened address of one transfer against sanctions lists, AML rules and policy (product spec DDL)."
);
