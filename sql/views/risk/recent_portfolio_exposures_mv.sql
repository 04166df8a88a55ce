-- risk.recent_portfolio_exposures_mv: per account and UTC hour, how many margin_health updates
-- there were and the collateral and borrow (debt) they reported, in USD: sums (for averages that
-- add up across hours: SUM(sum_x) / SUM(n_updates)), extremes, the worst health score and how
-- many updates were in the margin_call or liquidation zone.
-- Answers "what did each account hold and owe, hour by hour?" for the margin desk and risk
-- dashboards; read risk.recent_portfolio_exposures for the last 24 hours.
--
-- A BigQuery materialized view refreshed every minute, written to stay INCREMENTAL (BigQuery
-- then refreshes and serves it from the changed data only) - the rules it follows:
-- - one base table (risk.margin_health), no join, subquery, UNION, window function or QUALIFY;
-- - an aggregate query with GROUP BY, using only aggregate functions incremental views support
--   (COUNT, COUNTIF, SUM, MIN, MAX here; AVG, APPROX_COUNT_DISTINCT, HLL_COUNT.INIT, LOGICAL_AND /
--   LOGICAL_OR, BIT_* and, with restrictions, ANY_VALUE / ARRAY_AGG are the others). No AVG: the
--   sums and n_updates give averages over any set of hours, which an AVG cannot;
-- - deterministic only: no CURRENT_TIMESTAMP(), CURRENT_DATE(), RAND(), ... So the "last 24 h"
--   filter cannot live here (it would have to be re-evaluated on every read, which a
--   precomputed result cannot do); it is in the plain view risk.recent_portfolio_exposures;
-- - partitioned like the base table: margin_health is partitioned by DATE(event_ts) and this
--   view by DATE(hour), hour = TIMESTAMP_TRUNC(event_ts, HOUR) - a grouping column derived from
--   the base partitioning column, same (daily) granularity. A change to one base partition then
--   invalidates only the matching view partition, and filters on hour prune partitions.
-- refresh_interval_minutes = 1 is BigQuery's minimum (default 30). Locally (DuckDB, `defi-risk
-- warehouse`) this is created as a plain view with the same SELECT.
CREATE MATERIALIZED VIEW risk.recent_portfolio_exposures_mv
PARTITION BY DATE(hour)
CLUSTER BY account_id
OPTIONS (enable_refresh = true, refresh_interval_minutes = 1)
AS
SELECT
  account_id,
  TIMESTAMP_TRUNC(event_ts, HOUR) AS hour,
  COUNT(*) AS n_updates,
  SUM(collateral_usd) AS sum_collateral_usd,
  SUM(borrow_usd) AS sum_borrow_usd,
  MIN(collateral_usd) AS min_collateral_usd,
  MAX(collateral_usd) AS max_collateral_usd,
  MAX(borrow_usd) AS max_borrow_usd,
  MIN(health_score) AS min_health_score,
  COUNTIF(zone = 'margin_call') AS n_margin_call,
  COUNTIF(zone = 'liquidation') AS n_liquidation,
  MIN(event_ts) AS first_event_ts,
  MAX(event_ts) AS last_event_ts
FROM risk.margin_health
GROUP BY account_id, hour
