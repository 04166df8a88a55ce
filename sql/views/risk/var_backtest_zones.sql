-- risk.var_backtest_zones: per backtested subject (account or asset), VaR method and confidence
-- level, the latest backtest: its Basel traffic-light zone (green / yellow / red, as stored by
-- the backtest: over the last (up to) 250 tested days; NULL when the backtest set none), the zone
-- of the backtest before it, the exceptions of all n_obs tested days against the expected
-- n_obs * (1 - level), and the Kupiec and Christoffersen tests (also over all n_obs days).
-- Answers "which VaR models fail their backtest now, and did the zone change?" for model-risk
-- validators and risk officers. The table does not store the backtest window length, so
-- backtests of one subject/method/level with different windows count as one series here.
-- christoffersen_cc_pvalue is exact: LR_cc is chi-square with 2 degrees of freedom, whose survival
-- function is EXP(-x / 2). LR_ind has 1 degree of freedom (its p-value needs the normal CDF,
-- which BigQuery SQL lacks): reported as rejected or not at 5 % (critical value 3.8414588). NULL
-- statistics give NULL.
CREATE OR REPLACE VIEW risk.var_backtest_zones AS
SELECT
  subject,
  method,
  level,
  as_of,
  traffic_light,
  LAG(traffic_light) OVER series AS previous_traffic_light,
  LAG(as_of) OVER series AS previous_as_of,
  COUNT(*) OVER (PARTITION BY subject, method, level) AS n_backtests,
  n_obs,
  exceptions,
  n_obs * (1 - level) AS expected_exceptions,
  SAFE_DIVIDE(exceptions, n_obs) AS exception_rate,
  kupiec_lr,
  kupiec_pvalue,
  kupiec_pvalue < 0.05 AS kupiec_rejected_5pct,
  christoffersen_lr_ind,
  christoffersen_lr_ind > 3.841458820694124 AS christoffersen_ind_rejected_5pct,
  christoffersen_lr_cc,
  EXP(-christoffersen_lr_cc / 2) AS christoffersen_cc_pvalue,
  backtest_id
FROM risk.var_backtests
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY subject, method, level ORDER BY as_of DESC, backtest_id DESC
) = 1
WINDOW series AS (PARTITION BY subject, method, level ORDER BY as_of, backtest_id)
