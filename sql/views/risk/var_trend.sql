-- risk.var_trend: per account, VaR series (method, confidence level, horizon) and UTC day, the
-- latest VaR and expected shortfall of that day and their change from the previous day of the
-- same series that has a VaR (previous_var_date; usually the day before - a later date shows a
-- gap). The first day of a series has NULL changes; var_change_pct is NULL when the previous VaR
-- is 0.
-- Answers "is each account's risk growing or shrinking, day by day?" for risk officers and the
-- daily risk report. Levels and horizons are separate series: a 95 % and a 99 % VaR are never
-- compared.
CREATE OR REPLACE VIEW risk.var_trend AS
WITH latest_of_day AS (
  SELECT
    account_id,
    method,
    level,
    horizon_days,
    DATE(as_of) AS var_date,
    as_of,
    portfolio_value_usd,
    var_usd,
    es_usd,
    var_id
  FROM risk.portfolio_var
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY account_id, method, level, horizon_days, DATE(as_of)
    ORDER BY as_of DESC, var_id DESC
  ) = 1
),
with_previous AS (
  SELECT
    *,
    LAG(var_date) OVER series AS previous_var_date,
    LAG(var_usd) OVER series AS previous_var_usd,
    LAG(es_usd) OVER series AS previous_es_usd
  FROM latest_of_day
  WINDOW series AS (PARTITION BY account_id, method, level, horizon_days ORDER BY var_date)
)
SELECT
  account_id,
  method,
  level,
  horizon_days,
  var_date,
  as_of,
  portfolio_value_usd,
  var_usd,
  es_usd,
  previous_var_date,
  previous_var_usd,
  previous_es_usd,
  var_usd - previous_var_usd AS var_change_usd,
  es_usd - previous_es_usd AS es_change_usd,
  100 * SAFE_DIVIDE(
    CAST(var_usd - previous_var_usd AS FLOAT64), CAST(previous_var_usd AS FLOAT64)
  ) AS var_change_pct,
  var_id
FROM with_previous
