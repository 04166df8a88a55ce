"""Value at risk: VaR and ES by method, backtests and the per-shard engine."""
