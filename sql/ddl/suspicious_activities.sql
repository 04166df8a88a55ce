-- Generated from schemas/ (SuspiciousActivityRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.suspicious_activities (
  activity_id STRING NOT NULL OPTIONS(description="Deterministic id of the finding."),
  activity_type STRING NOT NULL OPTIONS(description="Kind of abuse."),
  chain_id STRING NOT NULL OPTIONS(description="CAIP-2 chain id."),
  wallet_addresses ARRAY<STRING> OPTIONS(description="Wallets involved."),
  token_address STRING OPTIONS(description="Token involved, if any."),
  pool_address STRING OPTIONS(description="Pool involved, if any."),
  confidence_score FLOAT64 NOT NULL OPTIONS(description="Confidence from 0 to 100 built from the signals."),
  estimated_impact_usd NUMERIC OPTIONS(description="Estimated wash volume or investor loss in USD."),
  evidence_tx_hashes ARRAY<STRING> OPTIONS(description="Transactions that evidence the finding."),
  evidence_metrics JSON NOT NULL OPTIONS(description="JSON: each signal's value and threshold."),
  window_start TIMESTAMP OPTIONS(description="Start of the detection window."),
  window_end TIMESTAMP OPTIONS(description="End of the detection window."),
  detected_at TIMESTAMP NOT NULL OPTIONS(description="Event time at which the detector fired."),
  status STRING NOT NULL OPTIONS(description="Review status.")
)
PARTITION BY DATE(detected_at)
CLUSTER BY activity_type, chain_id
OPTIONS(
  description="A market-abuse finding with its evidence (product spec DDL)."
);
