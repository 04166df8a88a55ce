"""Assets, tokens, oracle feeds and chains of the synthetic market (real mainnet identifiers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PRICE_ASSETS: tuple[str, ...] = ("BTC", "ETH", "USDC", "USDT", "DAI")
"""Assets with oracle prices (market.prices.v1); any other symbol there is an unknown asset."""

STABLECOINS: tuple[str, ...] = ("USDC", "USDT", "DAI")
VOLATILE: tuple[str, ...] = ("BTC", "ETH")

# Spot levels at the default start (2025-01-06); the walk starts here whatever `start` is.
START_PRICES = {"BTC": 102_000.0, "ETH": 3_650.0}

DECIMALS = {"ETH": 18, "WETH": 18, "BTC": 8, "WBTC": 8, "USDC": 6, "USDT": 6, "DAI": 18}
MEME_DECIMALS = 18

# Which oracle price values a token: wrapped tokens are priced by their underlying.
PRICE_OF = {
    "ETH": "ETH",
    "WETH": "ETH",
    "BTC": "BTC",
    "WBTC": "BTC",
    "USDC": "USDC",
    "USDT": "USDT",
    "DAI": "DAI",
}

# ERC-20 contracts on Ethereum mainnet (EIP-55 spelling as Etherscan shows it).
TOKEN_ADDRESSES = {
    "eip155:1": {
        "USDC": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        "USDT": "0xdAC17F958D2ee523a2206206994597C13D831ec7",
        "DAI": "0x6B175474E89094C44Da98b954EedeAC495271d0F",
        "WETH": "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
        "WBTC": "0x2260Fac5E5542a773aa44fBcc0Df28dBCab6F9e5",
    },
    "eip155:42161": {
        "USDC": "0xaf88d065e77c8cC2239327C5EDb3A432268e5831",
        "USDT": "0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9",
    },
    "eip155:56": {"USDT": "0x55d398326f99059fF775485246999027B3197955"},
    "tron:mainnet": {"USDT": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"},
}
# Token decimals that differ from the canonical ones: Binance-Peg USDT on BSC has 18.
CHAIN_DECIMALS = {("eip155:56", "USDT"): 18}
NATIVE = {"eip155:1": "ETH", "eip155:42161": "ETH", "eip155:56": "BNB", "tron:mainnet": "TRX"}

CHAINLINK_FEEDS = {  # asset -> EACAggregatorProxy on Ethereum mainnet
    "ETH": "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419",
    "BTC": "0xF4030086522a5bEEa4988F8cA5B36dbC97BeE88c",
    "USDC": "0x8fFfFfd4AfB6115b954Bd326cbe7B4BA576818f6",
    "USDT": "0x3E7d1eAB13ad0104d2750B8863b489D65364e32D",
    "DAI": "0xAed0c38402a5d19df6E4c03F4E2DceD6e29c1ee9",
}
CHAINLINK_DECIMALS = 8
CHAINLINK_PHASE_ID = 6

PYTH_FEEDS = {  # asset -> Pyth price feed id (hex, no 0x, as Hermes returns it)
    "BTC": "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43",
    "ETH": "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace",
    "USDC": "eaa020c61cc479712813461ce153894a96a6c00b21ed0cfc2798d1f9a9e9c94a",
    "USDT": "2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b",
    "DAI": "b0948a5e5313200c632b51bb5ca32f6de0d36e9950a942d19751e833f70dabfd",
}
PYTH_EXPO = -8


@dataclass(frozen=True)
class Chain:
    """A chain's block clock: block `base_block` is mined exactly at the run's start."""

    chain_id: str
    block_ms: int
    base_block: int


CHAINS = {
    "eip155:1": Chain("eip155:1", 12_000, 21_564_000),
    "eip155:42161": Chain("eip155:42161", 250, 293_500_000),
    "eip155:56": Chain("eip155:56", 3_000, 45_600_000),
    "tron:mainnet": Chain("tron:mainnet", 3_000, 68_400_000),
}
ETHEREUM = "eip155:1"
BLOCKS_PER_MINUTE = 5  # Ethereum: 12 s slots


class Clock:
    """Converts between run offsets (seconds), blocks and UTC datetimes for every chain."""

    def __init__(self, start: datetime):
        self.start = start.astimezone(UTC)

    def block_at(self, chain_id: str, seconds: float) -> int:
        c = CHAINS[chain_id]
        return c.base_block + int(seconds * 1000) // c.block_ms

    def block_seconds(self, chain_id: str, block: int) -> float:
        c = CHAINS[chain_id]
        return (block - c.base_block) * c.block_ms / 1000

    def block_time(self, chain_id: str, block: int) -> datetime:
        c = CHAINS[chain_id]
        return self.start + timedelta(milliseconds=(block - c.base_block) * c.block_ms)

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)


def iso(dt: datetime) -> str:
    """ISO-8601 UTC with a Z, at second or microsecond precision."""
    dt = dt.astimezone(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if dt.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return dt.strftime(fmt)
