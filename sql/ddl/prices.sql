-- Generated from schemas/ (PriceRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.prices (
  price_id STRING NOT NULL OPTIONS(description="Deterministic id: hash of asset and window end."),
  asset STRING NOT NULL OPTIONS(description="Asset symbol."),
  quote STRING NOT NULL OPTIONS(description="Quote currency."),
  price NUMERIC OPTIONS(description="Composite price; null when status is price_unavailable."),
  status STRING NOT NULL OPTIONS(description="ok, degraded (a source was set aside) or price_unavailable."),
  n_sources INT64 NOT NULL OPTIONS(description="Number of valid source observations used."),
  sources ARRAY<STRING> OPTIONS(description="Sources used, e.g. chainlink, pyth."),
  sources_set_aside ARRAY<STRING> OPTIONS(description="Sources set aside for deviating from the others."),
  spread_bps FLOAT64 OPTIONS(description="(max - min) / median of the source prices, in basis points."),
  window_start TIMESTAMP NOT NULL OPTIONS(description="Start of the composite window (inclusive)."),
  event_time TIMESTAMP NOT NULL OPTIONS(description="End of the composite window: the time the price is valid for.")
)
PARTITION BY DATE(event_time)
CLUSTER BY asset
OPTIONS(
  description="Composite price per asset and window: the median of the valid sources."
);
