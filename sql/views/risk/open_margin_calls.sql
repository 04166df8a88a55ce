-- risk.open_margin_calls: accounts whose latest margin health is in the margin_call or liquidation
-- zone, with their health score and their latest margin_events row (last_event_* columns, NULL
-- when the account has no margin event yet).
-- Answers "who must add collateral or be liquidated now, and were they alerted?" for the margin
-- desk and the liquidation operators.
CREATE OR REPLACE VIEW risk.open_margin_calls AS
WITH latest_event AS (
  SELECT
    account_id,
    alert_id,
    event_type,
    zone,
    previous_zone,
    health_score,
    event_ts,
    alerted
  FROM risk.margin_events
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY event_ts DESC, alert_id DESC) = 1
)
SELECT
  h.account_id,
  h.zone,
  h.health_score,
  h.collateral_usd,
  h.borrow_usd,
  h.price_status,
  h.event_ts AS health_ts,
  e.event_type AS last_event_type,
  e.zone AS last_event_zone,
  e.previous_zone AS last_event_previous_zone,
  e.health_score AS last_event_health_score,
  e.event_ts AS last_event_ts,
  e.alerted AS last_event_alerted,
  e.alert_id AS last_alert_id
FROM risk.latest_margin_health AS h
LEFT JOIN latest_event AS e
  ON e.account_id = h.account_id
WHERE h.zone IN ('margin_call', 'liquidation')
