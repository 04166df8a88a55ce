-- Generated from schemas/ (MarginEventRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.margin_events (
  alert_id STRING NOT NULL OPTIONS(description="Deterministic id: hash of account, event type and event_ts."),
  account_id STRING NOT NULL OPTIONS(description="The account."),
  event_type STRING NOT NULL OPTIONS(description="Transition type."),
  zone STRING NOT NULL OPTIONS(description="Zone entered."),
  previous_zone STRING OPTIONS(description="Zone left."),
  health_score NUMERIC OPTIONS(description="Health at the transition."),
  event_ts TIMESTAMP NOT NULL OPTIONS(description="Event time of the transition."),
  alerted BOOL NOT NULL OPTIONS(description="False when the alert was suppressed by the cooldown.")
)
PARTITION BY DATE(event_ts)
CLUSTER BY account_id, event_type
OPTIONS(
  description="Every margin zone transition detected (alerts are throttled; this table is not)."
);
