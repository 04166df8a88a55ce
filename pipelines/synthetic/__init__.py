"""Deterministic synthetic DeFi market: prices, settlements, DEX, transfers and ground truth.

from pipelines.synthetic import generate
generate("data/demo", days=7, accounts=200, seed=7)
"""

from pipelines.synthetic.assets import PRICE_ASSETS
from pipelines.synthetic.generator import generate
from pipelines.synthetic.market import simulate_daily_returns, simulate_market
from pipelines.synthetic.oracles import decode_chainlink, decode_pyth, decode_scaled

__all__ = [
    "PRICE_ASSETS",
    "decode_chainlink",
    "decode_pyth",
    "decode_scaled",
    "generate",
    "simulate_daily_returns",
    "simulate_market",
]
