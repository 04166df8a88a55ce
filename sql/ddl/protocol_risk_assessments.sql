-- Generated from schemas/ (ProtocolRiskAssessmentRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.protocol_risk_assessments (
  assessment_id STRING NOT NULL OPTIONS(description="Deterministic id: hash of protocol, chain and assessed_at."),
  protocol_name STRING NOT NULL OPTIONS(description="Protocol name, e.g. Aave V3."),
  protocol_address STRING OPTIONS(description="Main contract address."),
  chain_id STRING NOT NULL OPTIONS(description="CAIP-2 chain id."),
  overall_risk_score FLOAT64 NOT NULL OPTIONS(description="Weighted risk score from 0 to 100."),
  risk_level STRING NOT NULL OPTIONS(description="Bucket of the overall score."),
  risk_factors ARRAY<STRUCT<factor STRING NOT NULL, score FLOAT64 NOT NULL, weight FLOAT64 NOT NULL, details STRING>> OPTIONS(description="The scored factors."),
  tvl_usd NUMERIC OPTIONS(description="Total value locked in USD."),
  methodology_version STRING NOT NULL OPTIONS(description="Version of the scoring methodology."),
  assessed_at TIMESTAMP NOT NULL OPTIONS(description="Snapshot time of the assessment.")
)
PARTITION BY DATE(assessed_at)
CLUSTER BY protocol_name, chain_id
OPTIONS(
  description="Daily risk assessment of a DeFi protocol (product spec DDL)."
);
