"""Deterministic synthetic DeFi market: prices, settlements, DEX, transfers and ground truth.

from runners.synthetic import generate
generate("data/demo", days=7, accounts=200, seed=7)
"""

from runners.synthetic.assets import PRICE_ASSETS
from runners.synthetic.generator import generate
from runners.synthetic.market import simulate_daily_returns, simulate_market

__all__ = [
    "PRICE_ASSETS",
    "generate",
    "simulate_daily_returns",
    "simulate_market",
]
