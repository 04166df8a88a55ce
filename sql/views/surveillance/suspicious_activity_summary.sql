-- risk.suspicious_activity_summary: market-abuse findings per UTC day and activity type (wash
-- trading, rug pull, pump and dump, sybil cluster): how many, in which review status, on how many
-- chains, the highest confidence and the total estimated impact in USD.
-- Answers "how much abuse did we detect, and how big was it?" for surveillance analysts and
-- compliance reporting. total_estimated_impact_usd sums the findings that have an estimate;
-- n_without_impact counts those that do not (NULL total when none has one).
CREATE OR REPLACE VIEW risk.suspicious_activity_summary AS
SELECT
  DATE(detected_at) AS activity_date,
  activity_type,
  COUNT(*) AS n_findings,
  COUNTIF(status = 'open') AS n_open,
  COUNTIF(status = 'confirmed') AS n_confirmed,
  COUNTIF(status = 'dismissed') AS n_dismissed,
  COUNT(DISTINCT chain_id) AS n_chains,
  MAX(confidence_score) AS max_confidence_score,
  SUM(estimated_impact_usd) AS total_estimated_impact_usd,
  COUNTIF(estimated_impact_usd IS NULL) AS n_without_impact
FROM risk.suspicious_activities
GROUP BY activity_date, activity_type
