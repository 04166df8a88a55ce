-- risk.protocol_risk_response: the product spec's ProtocolRiskResponse, one row per protocol and
-- chain from its latest assessment: protocol_name, chain_id, overall_risk_score (0-100),
-- risk_level (low / medium / high / critical), risk_factors as
-- ARRAY<STRUCT<factor, score, weight, details>> in the stored order, tvl_usd, assessed_at and
-- methodology_version.
-- Answers "how risky is this protocol on this chain now, and why?" for the risk API, protocol
-- analysts and integrators. risk_factors is rebuilt field by field so the response keeps this
-- shape if the table's factor record gains fields.
CREATE OR REPLACE VIEW risk.protocol_risk_response AS
SELECT
  protocol_name,
  chain_id,
  overall_risk_score,
  risk_level,
  ARRAY(
    SELECT AS STRUCT f.factor, f.score, f.weight, f.details
    FROM UNNEST(risk_factors) AS f WITH OFFSET AS position
    ORDER BY position
  ) AS risk_factors,
  tvl_usd,
  assessed_at,
  methodology_version
FROM risk.protocol_risk_assessments
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY protocol_name, chain_id ORDER BY assessed_at DESC, assessment_id DESC
) = 1
