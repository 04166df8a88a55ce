-- Generated from schemas/ (MarginHealthRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.margin_health (
  row_id STRING NOT NULL OPTIONS(description="Deterministic id: hash of account, event_ts, trigger and the triggering settlement id (the last, in chain order, of the instant) or priced asset."),
  account_id STRING NOT NULL OPTIONS(description="The account."),
  event_ts TIMESTAMP NOT NULL OPTIONS(description="Event time of the update."),
  trigger STRING NOT NULL OPTIONS(description="Why the row was written: a settlement of the account, a price that moved it to another zone, or the periodic snapshot of every account with debt."),
  collateral_usd NUMERIC NOT NULL OPTIONS(description="Collateral value in USD."),
  borrow_usd NUMERIC NOT NULL OPTIONS(description="Debt value in USD."),
  health_score NUMERIC OPTIONS(description="(collateral - borrow) / borrow * 100; null with no borrow."),
  zone STRING NOT NULL OPTIONS(description="Health zone."),
  liquidation_prices ARRAY<STRUCT<asset STRING NOT NULL, liquidation_price NUMERIC, margin_call_price NUMERIC>> OPTIONS(description="Per collateral asset: liquidation and margin-call prices."),
  price_status STRING NOT NULL OPTIONS(description="Worst status of the prices used: ok, degraded or price_unavailable.")
)
PARTITION BY DATE(event_ts)
CLUSTER BY account_id
OPTIONS(
  description="Margin health of one account after its settlements of one instant, a zone change or a periodic snapshot."
);
