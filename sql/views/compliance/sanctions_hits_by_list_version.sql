-- risk.sanctions_hits_by_list_version: flagged and blocked sanctions screenings (direct list
-- matches and 1-2 hop exposure) per sanctions list version and rule.
-- Answers "what did each list version catch, and what changed when the list was refreshed?" for
-- compliance officers and auditors. AML-rule and policy hits have no list version and are not
-- counted here; clear screenings are not hits.
CREATE OR REPLACE VIEW risk.sanctions_hits_by_list_version AS
SELECT
  list_version,
  rule_id,
  COUNT(*) AS n_hits,
  COUNTIF(screening_result = 'flagged') AS n_flagged,
  COUNTIF(screening_result = 'blocked') AS n_blocked,
  COUNTIF(screening_type = 'sanctions') AS n_direct,
  COUNTIF(screening_type = 'exposure') AS n_exposure,
  COUNT(DISTINCT CONCAT(chain_id, ':', address)) AS n_addresses,
  MAX(risk_score) AS max_risk_score,
  MIN(screened_at) AS first_screened_at,
  MAX(screened_at) AS last_screened_at
FROM risk.compliance_screenings
WHERE screening_type IN ('sanctions', 'exposure')
  AND screening_result IN ('flagged', 'blocked')
GROUP BY list_version, rule_id
