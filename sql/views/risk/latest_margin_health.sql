-- risk.latest_margin_health: the latest margin_health row of every account.
-- Answers "how healthy is each account now?" for the margin desk and risk officers.
-- health_score = (collateral_usd - borrow_usd) / borrow_usd * 100, NULL with no debt; zone is
-- no_debt, healthy, warning, margin_call (< 30) or liquidation (< 15).
CREATE OR REPLACE VIEW risk.latest_margin_health AS
SELECT
  account_id,
  event_ts,
  zone,
  health_score,
  collateral_usd,
  borrow_usd,
  liquidation_prices,
  price_status,
  row_id
FROM risk.margin_health
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY event_ts DESC, row_id DESC) = 1
