"""Real trades for the wash-trading tests and benchmarks, read from the copies in tests/data/.

- ``polygon_swaps()``: the 15,079 swaps of ``tests/data/rugpull-polygon-mazorra/`` (637
  WMATIC pools on Polygon, 2021-12 to 2022-04) as a ``TradeFrame``. The source has neither
  tx.from nor tx hashes nor log indices, so the swap's ``to`` is both trader and recipient, the
  evidence id is ``pool:block:row`` and rows keep their file order inside a block. WMATIC
  (18 decimals) is the quote; its amount stands in for USD (the rules only compare USD
  amounts with each other, so a common unit is all they need). The other token's decimals are
  not in the source; 18 is assumed (only ratios of its amounts are used).
- ``pumpdump_pre_pump()``: per pair, the pre-pump Binance trades of
  ``tests/data/pumpdump-binance-trades-pugoev/`` (see its SOURCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tests.support.paths import DATA
from transforms.surveillance.wash_trade import TradeFrame

POLYGON = DATA / "rugpull-polygon-mazorra"
PUMPDUMP = DATA / "pumpdump-binance-trades-pugoev"
POLYGON_CHAIN = "eip155:137"
WMATIC = "0x0d500b1d8e8ef31e21c99d1db9a6444d3adf1270"


def polygon_swaps() -> TradeFrame:
    """The Polygon swaps as a TradeFrame (see the module docstring for the mapping)."""
    swaps = pd.read_csv(POLYGON / "events_swap.csv.gz", dtype=str)
    pools = pd.read_csv(POLYGON / "pools_labels.csv.gz", dtype=str)
    wmatic_is_0 = dict(
        zip(pools["pair"].str.lower(), pools["token0"].str.lower() == WMATIC, strict=True)
    )
    token_of = dict(zip(pools["pair"].str.lower(), pools["token"], strict=True))
    pair = swaps["pair"].str.lower()
    q0 = pair.map(wmatic_is_0).to_numpy(dtype=bool)
    a = {c: swaps[c].astype(float).to_numpy() / 1e18 for c in swaps.columns if "amount" in c}
    base_in = np.where(q0, a["amount1In"], a["amount0In"])
    base_out = np.where(q0, a["amount1Out"], a["amount0Out"])
    quote_in = np.where(q0, a["amount0In"], a["amount1In"])
    quote_out = np.where(q0, a["amount0Out"], a["amount1Out"])
    # Net flows: a few swaps move both tokens in (and one out); their direction is the net one.
    buy = base_out - base_in > 0
    base = np.abs(base_out - base_in)
    quote = np.abs(quote_in - quote_out)
    token = pair.map(token_of).to_numpy(dtype=object)
    row = swaps.groupby(["pair", "block_number"]).cumcount().to_numpy()
    block = swaps["block_number"].astype(np.int64).to_numpy()
    return TradeFrame.from_columns(
        chain_id=POLYGON_CHAIN,
        pool=list(swaps["pair"]),
        block=block,
        log_index=row,
        time_us=swaps["timestamps"].astype(np.int64).to_numpy() * 1_000_000,
        trader=list(swaps["to"]),
        recipient=list(swaps["to"]),
        token_in=list(np.where(buy, "WMATIC", token)),
        token_out=list(np.where(buy, token, "WMATIC")),
        amount_in=np.where(buy, quote, base),
        amount_out=np.where(buy, base, quote),
        usd=quote,
        tx_hash=[
            f"{p}:{b}:{r}" for p, b, r in zip(pair, block.tolist(), row.tolist(), strict=True)
        ],
    )


@dataclass(frozen=True)
class PairTrades:
    pair: str  # e.g. NAS_20210114T2100Z
    pump_time_ms: int
    timestamp_ms: np.ndarray
    buy: np.ndarray
    price: np.ndarray  # BTC per coin
    amount: np.ndarray  # coins


def pumpdump_pre_pump() -> list[PairTrades]:
    """The trades in [T - 24 h, T - 1 h) before each of the 12 announced pumps (T)."""
    events = pd.read_csv(PUMPDUMP / "pump_events.csv")
    trades = pd.read_csv(PUMPDUMP / "pre_pump_trades.csv.gz")
    out = []
    for e in events.itertuples():
        pair = Path(e.trades_file).stem
        t = trades[trades["pair"] == pair]
        out.append(
            PairTrades(
                pair=pair,
                pump_time_ms=int(pd.Timestamp(e.pump_time_utc).value // 1_000_000),
                timestamp_ms=t["timestamp"].to_numpy(np.int64),
                buy=(t["side"] == "buy").to_numpy(),
                price=t["price"].to_numpy(np.float64),
                amount=t["amount"].to_numpy(np.float64),
            )
        )
    return out
