-- Generated from schemas/ (SmartContractVulnerabilityRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.smart_contract_vulnerabilities (
  vulnerability_id STRING NOT NULL OPTIONS(description="Deterministic id."),
  contract_address STRING NOT NULL OPTIONS(description="Affected contract."),
  chain_id STRING NOT NULL OPTIONS(description="CAIP-2 chain id."),
  protocol_name STRING OPTIONS(description="Protocol the contract belongs to."),
  vulnerability_type STRING NOT NULL OPTIONS(description="e.g. reentrancy, oracle_manipulation, access_control."),
  severity STRING NOT NULL OPTIONS(description="Severity."),
  description STRING OPTIONS(description="What is wrong."),
  source STRING NOT NULL OPTIONS(description="Where it is known from, e.g. DeFiHackLabs, static analysis."),
  loss_usd NUMERIC OPTIONS(description="Loss in USD, for exploited vulnerabilities."),
  status STRING NOT NULL OPTIONS(description="Status."),
  detected_at TIMESTAMP NOT NULL OPTIONS(description="When it was detected or exploited.")
)
PARTITION BY DATE(detected_at)
CLUSTER BY contract_address, chain_id
OPTIONS(
  description="A known or detected smart-contract vulnerability (product spec DDL)."
);
