"""The real Polygon pools of Mazorra et al. (tests/data/rugpull-polygon-mazorra, see its SOURCE.md)
as ``liquidity.v1`` and ``dex.trades.v1`` records, per pool, in chain order.

Used by tests/transforms/surveillance/test_rug_pull.py and tests/benchmarks/bench_detector_quality.py.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from functools import cache

import pandas as pd

from schemas.events import DexTrade, LiquidityEvent
from tests.support.paths import DATA

MAZORRA = DATA / "rugpull-polygon-mazorra"
WMATIC = "0x0d500b1d8e8ef31e21c99d1db9a6444d3adf1270"
ZERO = "0x" + "0" * 40
POLYGON = "eip155:137"
# Study end of the source's labelling notebook (timestamp_study = 1650710999).
STUDY_END = datetime.fromtimestamp(1650710999, tz=UTC)


def _csv(name: str) -> pd.DataFrame:
    df = pd.read_csv(MAZORRA / f"{name}.csv.gz", dtype=str)
    if "pair" in df:  # the contract lower-cases EVM addresses at parse: key pools the same way
        df["pair"] = df["pair"].str.lower()
    return df


@cache
def pools() -> pd.DataFrame:
    df = _csv("pools_labels")
    df["label"] = df["label"].astype(int)
    df["wmatic_is_0"] = df["token0"].str.lower() == WMATIC
    return df.set_index("pair")


@cache
def pool_events() -> dict[str, list[LiquidityEvent | DexTrade]]:
    """pool -> its events, sorted by (time, block, log index)."""
    meta = pools()
    lp = _csv("events_lp_transfer")
    lp_mint = defaultdict(list)  # (pair, block) -> [(to, value)] minted LP (from 0x0)
    lp_in = defaultdict(list)  # (pair, block) -> [from] LP sent to the pair (to be burned)
    for r in lp.itertuples(index=False):
        if r[2] == ZERO and r[3] != ZERO:
            lp_mint[(r.pair, r.block_number)].append((r[3], int(r.value)))
        elif r[3].lower() == r.pair.lower():
            lp_in[(r.pair, r.block_number)].append((r[2], int(r.value)))
    out: dict[str, list] = defaultdict(list)

    def when(ts: str) -> datetime:
        return datetime.fromtimestamp(int(ts), tz=UTC)

    def quote_base(pair: str, a0: str, a1: str) -> tuple[str, str]:
        """(base amount, WMATIC amount) of a pair whose WMATIC may be token0."""
        return (a1, a0) if meta.at[pair, "wmatic_is_0"] else (a0, a1)

    def liq(pair, kind, block, log, sender, a0, a1, lp_raw, ts) -> LiquidityEvent:
        base, quote = quote_base(pair, a0, a1)
        token = meta.at[pair, "token"]
        return LiquidityEvent(
            event_id=f"{pair}:{block}:{log}", chain_id=POLYGON, pool_address=pair, kind=kind,
            tx_hash=f"{pair}:{block}", block_number=int(block), log_index=log, sender=sender,
            token0=token, token1="WMATIC", amount0_raw=base, amount1_raw=quote, decimals0=18,
            decimals1=18, liquidity_raw=None if lp_raw is None else str(lp_raw), event_time=when(ts),
        )  # fmt: skip

    for r in _csv("events_swap").itertuples(index=False):
        if r.pair not in meta.index:
            continue
        base_in, quote_in = quote_base(r.pair, r.amount0In, r.amount1In)
        base_out, quote_out = quote_base(r.pair, r.amount0Out, r.amount1Out)
        buy = int(quote_in) > 0
        token = meta.at[r.pair, "token"]
        out[r.pair].append(
            DexTrade(
                event_id=f"{r.pair}:{r.block_number}:swap:{len(out[r.pair])}",
                chain_id=POLYGON,
                venue="uniswap_v2",
                pool_address=r.pair,
                tx_hash=f"{r.pair}:{r.block_number}",
                block_number=int(r.block_number),
                log_index=0,
                trader=r.to,
                recipient=r.to,
                token_in="WMATIC" if buy else token,
                token_out=token if buy else "WMATIC",
                amount_in_raw=quote_in if buy else base_in,
                amount_out_raw=base_out if buy else quote_out,
                decimals_in=18,
                decimals_out=18,
                event_time=when(r.timestamps),
            )  # fmt: skip
        )
    for r in _csv("events_mint").itertuples(index=False):
        minted = lp_mint.get((r.pair, r.block_number), [])
        sender = minted[0][0] if minted else r.sender
        value = sum(v for _, v in minted) if minted else 0
        out[r.pair].append(liq(r.pair, "mint", r.block_number, 1, sender, r.amount0, r.amount1,
                               value, r.timestamps))  # fmt: skip
    for r in _csv("events_burn").itertuples(index=False):
        sent = lp_in.get((r.pair, r.block_number), [])
        sender = sent[0][0] if sent else r.to
        value = sum(v for _, v in sent)
        out[r.pair].append(liq(r.pair, "burn", r.block_number, 1, sender, r.amount0, r.amount1,
                               value, r.timestamps))  # fmt: skip
    for i, r in enumerate(_csv("events_sync").itertuples(index=False)):
        out[r.pair].append(liq(r.pair, "sync", r.block_number, 2 + i, r.pair, r.reseve0,
                               r.reserve1, None, r.timestamps))  # fmt: skip
    return {
        p: sorted(evs, key=lambda e: (e.event_time, e.block_number, e.log_index))
        for p, evs in out.items()
    }


def complete_pools() -> set[str]:
    """Pools whose creation was collected (they have Mint rows): 181 of the 299 rugs. (115 rug
    pools have no events at all in the fixture: nothing can label or flag them.)"""
    return set(_csv("events_mint")["pair"])
