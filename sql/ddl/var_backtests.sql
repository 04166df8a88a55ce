-- Generated from schemas/ (VarBacktestRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.var_backtests (
  backtest_id STRING NOT NULL OPTIONS(description="Deterministic id."),
  subject STRING NOT NULL OPTIONS(description="Account id or asset backtested."),
  as_of TIMESTAMP NOT NULL OPTIONS(description="End of the backtest window."),
  method STRING NOT NULL OPTIONS(description="VaR method."),
  level FLOAT64 NOT NULL OPTIONS(description="VaR confidence level."),
  n_obs INT64 NOT NULL OPTIONS(description="Number of days tested."),
  exceptions INT64 NOT NULL OPTIONS(description="Days with loss > VaR."),
  kupiec_lr FLOAT64 OPTIONS(description="Kupiec proportion-of-failures LR statistic."),
  kupiec_pvalue FLOAT64 OPTIONS(description="p-value of the Kupiec test."),
  christoffersen_lr_ind FLOAT64 OPTIONS(description="Christoffersen independence LR."),
  christoffersen_lr_cc FLOAT64 OPTIONS(description="Christoffersen conditional coverage LR."),
  traffic_light STRING OPTIONS(description="Basel traffic-light zone.")
)
PARTITION BY DATE(as_of)
CLUSTER BY subject, method
OPTIONS(
  description="Backtest of a VaR model against realised returns."
);
