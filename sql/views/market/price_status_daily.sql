-- risk.price_status_daily: per UTC day and asset, how many composite windows there were, how many
-- were ok / degraded / price_unavailable, and the range and mean of the composite price.
-- Answers "how reliable were our prices, day by day?" for market-data owners and risk officers
-- reviewing oracle quality. Prices of price_unavailable windows are NULL and not in min/max/avg.
CREATE OR REPLACE VIEW risk.price_status_daily AS
SELECT
  DATE(event_time) AS price_date,
  asset,
  COUNT(*) AS n_windows,
  COUNTIF(status = 'ok') AS n_ok,
  COUNTIF(status = 'degraded') AS n_degraded,
  COUNTIF(status = 'price_unavailable') AS n_price_unavailable,
  MIN(price) AS min_price,
  MAX(price) AS max_price,
  AVG(price) AS avg_price
FROM risk.prices
GROUP BY price_date, asset
