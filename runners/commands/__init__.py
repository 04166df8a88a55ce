"""One-shot commands beside the run modes: backtest, rug-pull labels, policy check, sanctions
load and the schema files.
"""
