-- Generated from schemas/ (PortfolioVarRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.portfolio_var (
  var_id STRING NOT NULL OPTIONS(description="Deterministic id: hash of account, as_of, method, level and horizon."),
  account_id STRING NOT NULL OPTIONS(description="The account."),
  as_of TIMESTAMP NOT NULL OPTIONS(description="Valuation time (end of the return window)."),
  method STRING NOT NULL OPTIONS(description="historical, parametric, filtered_historical or monte_carlo."),
  level FLOAT64 NOT NULL OPTIONS(description="Confidence level, e.g. 0.99."),
  horizon_days INT64 NOT NULL OPTIONS(description="Horizon in days."),
  portfolio_value_usd NUMERIC NOT NULL OPTIONS(description="Net portfolio value at as_of."),
  var_usd NUMERIC NOT NULL OPTIONS(description="VaR as a positive loss in USD."),
  es_usd NUMERIC NOT NULL OPTIONS(description="Expected shortfall as a positive loss in USD."),
  n_scenarios INT64 NOT NULL OPTIONS(description="Number of return scenarios."),
  n_positions INT64 NOT NULL OPTIONS(description="Number of positions."),
  window_start TIMESTAMP NOT NULL OPTIONS(description="First return date of the window."),
  window_end TIMESTAMP NOT NULL OPTIONS(description="Last return date of the window.")
)
PARTITION BY DATE(as_of)
CLUSTER BY account_id, method
OPTIONS(
  description="Value at risk and expected shortfall of one account's portfolio."
);
