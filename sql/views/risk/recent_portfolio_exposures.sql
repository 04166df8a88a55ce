-- risk.recent_portfolio_exposures: the hourly per-account collateral and borrow of
-- risk.recent_portfolio_exposures_mv for the last 24 hours: the current (still filling) UTC hour
-- and the 23 before it, relative to now.
-- Answers "what did each account hold and owe over the last day, hour by hour?" for the margin
-- desk and risk dashboards. The window is here, in a plain view, because a materialized view may
-- not use CURRENT_TIMESTAMP() (see the materialized view's header); the filter on hour prunes its
-- partitions, so a read scans at most two days of it.
CREATE OR REPLACE VIEW risk.recent_portfolio_exposures AS
SELECT
  account_id,
  hour,
  n_updates,
  sum_collateral_usd,
  sum_borrow_usd,
  min_collateral_usd,
  max_collateral_usd,
  max_borrow_usd,
  min_health_score,
  n_margin_call,
  n_liquidation,
  first_event_ts,
  last_event_ts
FROM risk.recent_portfolio_exposures_mv
WHERE hour >= TIMESTAMP_SUB(TIMESTAMP_TRUNC(CURRENT_TIMESTAMP(), HOUR), INTERVAL 23 HOUR)
