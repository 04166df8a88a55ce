-- risk.latest_prices: the latest composite price of every asset.
-- Answers "what is each asset worth now, and can a risk number use it?" for risk officers,
-- dashboards and the on-call engineer. status: ok, degraded (a source was set aside) or
-- price_unavailable (price is NULL). age_seconds is wall-clock staleness (now minus the end of the
-- window), for monitoring only; lag_seconds is how far the asset's latest window trails the
-- freshest window of any asset, in event time, so a replay gives the same answer.
CREATE OR REPLACE VIEW risk.latest_prices AS
SELECT
  asset,
  quote,
  price,
  status,
  n_sources,
  sources,
  spread_bps,
  window_start,
  event_time,
  TIMESTAMP_DIFF(CURRENT_TIMESTAMP(), event_time, SECOND) AS age_seconds,
  TIMESTAMP_DIFF(MAX(event_time) OVER (), event_time, SECOND) AS lag_seconds,
  price_id
FROM risk.prices
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY asset ORDER BY event_time DESC, price_id DESC) = 1
