"""Wash-trading detector: the pure core over one window of DEX trades (issue 6). No Beam here.

The Beam composite ``DetectWashTrades`` hands each event-time window (1 h, 1 d, 1 w) of
``dex.trades.v1`` to :func:`detect`, with the first funding of each wallet from ``transfers.v1``
(:func:`first_fundings`), writes the returned ``SuspiciousActivityRow``s to
``risk.suspicious_activities`` and sends the rows for which :func:`is_alert` holds to
``alerts.surveillance.v1``.

    .venv/bin/pytest -q tests/transforms/surveillance/test_wash_trade.py
    .venv/bin/python -m tests.benchmarks.bench_wash_trade           # trades/s on 1M trades
    .venv/bin/python -m tests.benchmarks.bench_detector_quality     # precision / recall

**Vocabulary.** A pool trades a *base* token against a *quote* token (the one ranked first in
``QUOTE_PRIORITY``: stablecoins, then ETH, BTC, chain coins); a *buy* takes base out of the pool,
a *sell* puts base in. The *parties* of a swap are its trader (the tx sender, who pays) and its
recipient (who gets the output); usually the same wallet. Every rule works per pool, so a graph
node is a (pool, wallet) pair. Addresses are compared lower-cased on EVM chains (``eip155:*``).

**Signals.** Each is a frozen dataclass with its parameters (defaults from the issue).

- ``self_trade``. In an AMM the counterparty of every swap is the pool, so trader == recipient
  is the normal case and proves nothing. We take as a swap's counterparty the swap on the other
  side of the pool's order flow at that instant: the next swap in the same pool and block. A
  self-trade is two swaps *adjacent* in a pool's log order, in the same block, in opposite
  directions, for base amounts within 1 %, that share a party (A buys and A sells; or A buys
  for B and B sells back to A). The pool ends where it started, nobody traded in between and no
  price risk was taken: the only product is volume. Adjacency keeps sandwich bots (buy, victim,
  sell) and arbitrage out. It fires from 2 pairs: a single pair happens by chance (two
  same-block trades of an active trader) to about 1 ordinary trader in 8,000 in the synthetic
  days of tests/support/wash_scenarios.py.
- ``round_trip`` (after Chainalysis 2025). The same address buys and sells in one pool within 25
  blocks, with USD amounts within 1 % (|a - b| <= 1 % of the larger, inclusive), at least 3
  times. A round trip is a trade and the address's *next* priced trade in the pool (a position
  opened and closed, either order); each trade is used once. "The address" is any party of the
  swap, so a relay (A buys for B, B sells back to A) is a round trip of A and of B. Trades
  without a USD amount are skipped by this rule and counted.
- ``closed_loop`` (after Victor & Weintraud 2021). A directed trade graph per pool, with an edge
  wherever value went from one wallet to another: a *recipient edge* trader -> recipient of
  every swap whose recipient differs, and a *counterparty edge* seller -> buyer for a sell and a
  buy in the pool within 25 blocks (either order) for base amounts within 1 % (what the seller
  put into the pool, the buyer took out). A loop is a strongly connected component (2 to 50
  wallets, at least 4 trades on its edges) in which every member's net base position over the
  window (received as recipient of buys minus sold as trader of sells) is within 1 % of the
  mean base size of the members' trades. Members that fail are pruned and the components
  recomputed.
- ``common_funder``. Counterparties that were first funded by the same wallet, or one by the
  other. Counterparties are wallets with edges both ways between them, or members of one loop
  (in a busy pool chance counterparty edges make one giant SCC, so SCC membership alone is too
  loose). Funders that first-funded more than 50 addresses of the map (exchange hot wallets,
  bridges, pools) or are listed in ``ignore_funders`` are no evidence. The evidence adds the
  funding transfers and the swaps between those counterparties.
- ``benford``, ``round_sizes``, ``tail_exponent`` (after Cong et al. 2021), per pool over the
  window (meant for the 1-day window), on at least 1,000 trades: the mean absolute deviation of
  the first significant digit of base sizes from Benford above Nigrini's nonconformity bound
  0.015; the share of trades whose input amount is round (two significant digits or fewer) below
  2 % (authentic traders cluster at round sizes, Cong et al.; scripted volume does not); the
  Hill tail exponent of base sizes (top 10 %) outside [1, 2]. These are weak signals: they only
  raise confidence.

**Findings and confidence.** Wallets flagged by a primary signal (self_trade, round_trip,
closed_loop, common_funder) are linked when they share evidence (the same round-trip trades,
one self-trade, one loop, one funder) or traded with each other directly (an edge). Each linked
group in a pool is one finding, and its signals are evaluated on its members. Confidence is a
noisy-OR of the signals that fired, ``100 * (1 - prod(1 - w))``, with weights self_trade 0.60
(+0.05 per pair beyond 2, at most 0.75), round_trip 0.50 at 3 matches (+0.05 per extra match,
at most 0.65), closed_loop 0.60, common_funder 0.40 and 0.10 for each weak test. There is no
finding without a primary signal, so the weak tests alone never fire. At the alert threshold of
70, any two primary signals alert (the weakest pair, round_trip + common_funder, makes 70.0).
One primary signal alone does not, unless it is a self-trade repeated 4 times or more, or a
loop, a self-trade or 5+ round trips backed by all three weak tests. ``estimated_impact_usd`` is
the USD volume of the finding's distinct evidence trades (the wash volume). The activity id is
``deterministic_id("wash_trading", chain, pool, sorted wallets, window start, window end)``; the
frame is sorted and deduplicated first, so shuffled or redelivered input gives identical rows.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from schemas.base import deterministic_id
from schemas.events import DexTrade, Transfer
from schemas.tables import SuspiciousActivityRow
from schemas.types import epoch_micros

ACTIVITY_TYPE = "wash_trading"
ALERT_THRESHOLD = 70.0

# Which token of a pair is the quote: the first of these that the pair holds. Pairs of two
# unlisted tokens quote in the symbol that sorts last, so the choice is stable per pool.
QUOTE_PRIORITY = (
    "USDC",
    "USDT",
    "DAI",
    "BUSD",
    "FDUSD",
    "USDC.E",
    "FRAX",
    "TUSD",
    "LUSD",
    "USD",
    "WETH",
    "ETH",
    "WBTC",
    "BTC",
    "WBNB",
    "BNB",
    "WMATIC",
    "MATIC",
    "WPOL",
    "POL",
    "WAVAX",
    "AVAX",
    "WSOL",
    "SOL",
)
_QUOTE_RANK = {s: i for i, s in enumerate(QUOTE_PRIORITY)}
_REL_SLACK = 1e-9  # "within 1 %" is inclusive; binary floats must not turn 1 % into 1.0000001 %
BENFORD = np.log10(1 + 1 / np.arange(1, 10))


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SelfTradeRule:
    name: ClassVar[str] = "self_trade"
    amount_tolerance: float = 0.01  # base amounts of the two swaps within 1 %
    min_pairs: int = 2  # a single pair happens by chance (two same-block trades of a bot)
    weight: float = 0.60
    weight_step: float = 0.05  # per pair beyond min_pairs
    weight_cap: float = 0.75


@dataclass(frozen=True)
class RoundTripRule:
    name: ClassVar[str] = "round_trip"
    max_blocks: int = 25
    usd_tolerance: float = 0.01
    min_count: int = 3
    weight: float = 0.50
    weight_step: float = 0.05  # per match beyond min_count
    weight_cap: float = 0.65


@dataclass(frozen=True)
class ClosedLoopRule:
    name: ClassVar[str] = "closed_loop"
    max_blocks: int = 25  # counterparty edges: a sell and a buy this close
    amount_tolerance: float = 0.01  # ... for base amounts within 1 %
    net_tolerance: float = 0.01  # |net position| <= 1 % of the mean trade size
    min_members: int = 2
    max_members: int = 50
    min_trades: int = 4  # two round trips at least: one relay and back is not a pattern yet
    weight: float = 0.60


@dataclass(frozen=True)
class CommonFunderRule:
    name: ClassVar[str] = "common_funder"
    min_wallets: int = 2
    max_funder_fanout: int = 50  # funders of more addresses are exchanges or bridges
    ignore_funders: frozenset[str] = frozenset()
    weight: float = 0.40


@dataclass(frozen=True)
class BenfordTest:
    name: ClassVar[str] = "benford"
    mad_threshold: float = 0.015  # Nigrini, first digits: > 0.015 is nonconformity
    min_trades: int = 1000  # below this the sampling noise alone exceeds 0.012
    weight: float = 0.10


@dataclass(frozen=True)
class RoundSizeTest:
    name: ClassVar[str] = "round_sizes"
    min_share: float = 0.02  # fewer round input amounts than this: no human clustering
    significant_digits: int = 2
    min_trades: int = 1000
    weight: float = 0.10


@dataclass(frozen=True)
class TailExponentTest:
    name: ClassVar[str] = "tail_exponent"
    low: float = 1.0
    high: float = 2.0
    tail_fraction: float = 0.10
    min_tail: int = 50
    min_trades: int = 1000
    weight: float = 0.10


@dataclass(frozen=True)
class WashTradeConfig:
    self_trade: SelfTradeRule = field(default_factory=SelfTradeRule)
    round_trip: RoundTripRule = field(default_factory=RoundTripRule)
    closed_loop: ClosedLoopRule = field(default_factory=ClosedLoopRule)
    common_funder: CommonFunderRule = field(default_factory=CommonFunderRule)
    benford: BenfordTest = field(default_factory=BenfordTest)
    round_sizes: RoundSizeTest = field(default_factory=RoundSizeTest)
    tail_exponent: TailExponentTest = field(default_factory=TailExponentTest)
    alert_threshold: float = ALERT_THRESHOLD
    max_evidence_txs: int = 1000  # per finding; the total is in evidence_metrics
    # Pair scans stop after this many neighbours of one trade (a bot hammering one pool);
    # truncations are counted.
    scan_limit: int = 4096


DEFAULT_CONFIG = WashTradeConfig()


# ----------------------------------------------------------------------------- columnar trades


def normalise_address(chain_id: str, address: str) -> str:
    """EVM addresses compare lower-cased; other chains keep their own case rules."""
    return address.lower() if chain_id.startswith("eip155:") else address


@dataclass(frozen=True)
class TradeFrame:
    """One window of swaps as numpy columns, sorted by (pool, block, log index), deduplicated.

    ``pools[i]`` is ``(chain_id, pool_address)`` of pool code i with its base and quote symbols
    in ``base_tokens`` / ``quote_tokens``; ``wallets[j]`` is the normalised address of wallet
    code j. ``side`` is +1 for a buy of base, -1 for a sell. Amounts are in token units;
    ``usd`` is NaN when unpriced. ``counters`` says what was dropped on the way in.
    """

    pool: np.ndarray
    block: np.ndarray
    log_index: np.ndarray
    time_us: np.ndarray
    trader: np.ndarray
    recipient: np.ndarray
    side: np.ndarray
    base_amount: np.ndarray
    quote_amount: np.ndarray
    amount_in: np.ndarray
    usd: np.ndarray
    tx_hash: np.ndarray
    pools: tuple[tuple[str, str], ...]
    base_tokens: tuple[str, ...]
    quote_tokens: tuple[str, ...]
    wallets: tuple[str, ...]
    counters: dict[str, int]

    def __len__(self) -> int:
        return len(self.block)

    @classmethod
    def from_trades(cls, trades: Iterable[DexTrade]) -> TradeFrame:
        """Columns from ``dex.trades.v1`` records (raw amounts scaled by their decimals)."""
        ts = list(trades)
        dec_in = np.array([t.decimals_in for t in ts], dtype=np.float64)
        dec_out = np.array([t.decimals_out for t in ts], dtype=np.float64)
        raw_in = np.array([float(t.amount_in_raw) for t in ts], dtype=np.float64)
        raw_out = np.array([float(t.amount_out_raw) for t in ts], dtype=np.float64)
        return cls.from_columns(
            chain_id=[t.chain_id for t in ts],
            pool=[t.pool_address for t in ts],
            block=[t.block_number for t in ts],
            log_index=[t.log_index for t in ts],
            time_us=[epoch_micros(t.event_time) for t in ts],
            trader=[t.trader for t in ts],
            recipient=[t.recipient for t in ts],
            token_in=[t.token_in for t in ts],
            token_out=[t.token_out for t in ts],
            amount_in=raw_in / 10.0**dec_in,
            amount_out=raw_out / 10.0**dec_out,
            usd=[math.nan if t.amount_usd is None else float(t.amount_usd) for t in ts],
            tx_hash=[t.tx_hash for t in ts],
        )

    @classmethod
    def from_columns(
        cls,
        *,
        chain_id: str | Sequence[str],
        pool: Sequence[str],
        block: Sequence[int] | np.ndarray,
        log_index: Sequence[int] | np.ndarray,
        time_us: Sequence[int] | np.ndarray,
        trader: Sequence[str],
        recipient: Sequence[str],
        token_in: Sequence[str],
        token_out: Sequence[str],
        amount_in: Sequence[float] | np.ndarray,
        amount_out: Sequence[float] | np.ndarray,
        usd: Sequence[float | None] | np.ndarray,
        tx_hash: Sequence[str],
    ) -> TradeFrame:
        """Columns from plain arrays (Arrow batches, CSV replays, generators).

        ``time_us`` is epoch microseconds; amounts are token units; ``usd`` may hold NaN/None.
        """
        n = len(pool)
        counters = {"trades_in": n, "duplicates": 0, "inconsistent_tokens": 0, "bad_amount": 0}
        # Normalise each distinct (chain, address) once, not every row: far fewer strings.
        if isinstance(chain_id, str):
            chain_code, chain_names = np.zeros(n, dtype=np.int64), np.array([chain_id], object)
        else:
            chain_code, chain_names = pd.factorize(np.asarray(chain_id, dtype=object))

        def codes_of(values: np.ndarray, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
            raw_code, raw = pd.factorize(values)
            both = np.tile(chain_code, len(values) // max(n, 1)) * len(raw) + raw_code
            combo_code, combos = pd.factorize(both)
            names = np.array(
                [
                    f"{chain_names[c // len(raw)]}\x1f"
                    f"{normalise_address(chain_names[c // len(raw)], raw[c % len(raw)])}"
                    for c in combos.tolist()
                ],
                dtype=object,
            )
            name_code, uniq = pd.factorize(names, sort=sort)
            return name_code[combo_code], np.asarray(uniq, dtype=object)

        pool_code, pool_keys = codes_of(np.asarray(pool, dtype=object), sort=True)
        block = np.asarray(block, dtype=np.int64)
        log_index = np.asarray(log_index, dtype=np.int64)
        order = np.lexsort((log_index, block, pool_code))
        # The same (pool, block, log index) twice is one event delivered twice.
        p, b, li = pool_code[order], block[order], log_index[order]
        dup = np.zeros(n, dtype=bool)
        if n > 1:
            dup[1:] = (p[1:] == p[:-1]) & (b[1:] == b[:-1]) & (li[1:] == li[:-1])
        counters["duplicates"] = int(dup.sum())
        order = order[~dup]

        tok_in = np.asarray(token_in, dtype=object)[order]
        tok_out = np.asarray(token_out, dtype=object)[order]
        pcode = pool_code[order]
        # The pool's pair is that of its first trade; later trades of another pair are refused.
        first = np.ones(len(order), dtype=bool)
        first[1:] = pcode[1:] != pcode[:-1]
        base_tokens: list[str] = [""] * len(pool_keys)
        quote_tokens: list[str] = [""] * len(pool_keys)
        for i in np.flatnonzero(first):
            base_tokens[pcode[i]], quote_tokens[pcode[i]] = _base_quote(tok_in[i], tok_out[i])
        base_of = np.asarray(base_tokens, dtype=object)[pcode]
        quote_of = np.asarray(quote_tokens, dtype=object)[pcode]
        buy = (tok_out == base_of) & (tok_in == quote_of)
        sell = (tok_in == base_of) & (tok_out == quote_of)
        side = np.where(buy, 1, np.where(sell, -1, 0)).astype(np.int8)
        a_in = np.asarray(amount_in, dtype=np.float64)[order]
        a_out = np.asarray(amount_out, dtype=np.float64)[order]
        base_amount = np.where(buy, a_out, a_in)
        quote_amount = np.where(buy, a_in, a_out)
        good_amount = np.isfinite(base_amount) & (base_amount > 0)
        counters["inconsistent_tokens"] = int((side == 0).sum())
        counters["bad_amount"] = int(((side != 0) & ~good_amount).sum())
        keep = (side != 0) & good_amount

        sel = order[keep]
        usd = np.array(
            [math.nan if u is None else u for u in usd] if not isinstance(usd, np.ndarray) else usd,
            dtype=np.float64,
        )[sel]
        usd = np.where(np.isfinite(usd) & (usd > 0), usd, np.nan)
        parties = np.concatenate(
            [np.asarray(trader, dtype=object), np.asarray(recipient, dtype=object)]
        )
        party_code, party_keys = codes_of(parties)
        # Wallet codes in order of first appearance in the sorted window: stable for a replay.
        codes, first_seen = pd.factorize(np.concatenate([party_code[sel], party_code[n + sel]]))
        wallets = [party_keys[c].split("\x1f", 1)[1] for c in first_seen.tolist()]
        m = len(sel)
        return cls(
            pool=pool_code[sel].astype(np.int64),
            block=block[sel],
            log_index=log_index[sel],
            time_us=np.asarray(time_us, dtype=np.int64)[sel],
            trader=codes[:m].astype(np.int64),
            recipient=codes[m:].astype(np.int64),
            side=side[keep],
            base_amount=base_amount[keep],
            quote_amount=quote_amount[keep],
            amount_in=a_in[keep],
            usd=usd,
            tx_hash=np.asarray(tx_hash, dtype=object)[sel],
            pools=tuple(tuple(k.split("\x1f", 1)) for k in pool_keys),
            base_tokens=tuple(base_tokens),
            quote_tokens=tuple(quote_tokens),
            wallets=tuple(wallets),
            counters=counters,
        )

    def subset(self, mask: np.ndarray) -> TradeFrame:
        """The trades where ``mask`` holds (codes and order unchanged)."""
        cols = {
            k: getattr(self, k)[mask]
            for k in (
                "pool",
                "block",
                "log_index",
                "time_us",
                "trader",
                "recipient",
                "side",
                "base_amount",
                "quote_amount",
                "amount_in",
                "usd",
                "tx_hash",
            )
        }
        return TradeFrame(
            **cols,
            pools=self.pools,
            base_tokens=self.base_tokens,
            quote_tokens=self.quote_tokens,
            wallets=self.wallets,
            counters=dict(self.counters),
        )


def _base_quote(token_in: str, token_out: str) -> tuple[str, str]:
    ranks = [_QUOTE_RANK.get(str(t).upper(), len(_QUOTE_RANK)) for t in (token_in, token_out)]
    if ranks[0] != ranks[1]:
        return (token_out, token_in) if ranks[0] < ranks[1] else (token_in, token_out)
    quote = max(token_in, token_out)
    return (token_in if quote == token_out else token_out), quote


# ----------------------------------------------------------------------------- first funders


@dataclass(frozen=True)
class Funding:
    """The first incoming transfer of an address."""

    funder: str
    tx_hash: str
    block_number: int
    event_time: datetime


class FundingMap(dict):
    """(chain_id, address) -> Funding, with each funder's fan-out counted once and kept, so
    calling :func:`detect` per pool with the same map does not recount it."""

    @cached_property
    def fanout(self) -> dict[tuple[str, str], int]:
        return _fanout(self)


def _fanout(fundings: Mapping[tuple[str, str], Funding]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = defaultdict(int)
    for (chain, _addr), f in fundings.items():
        out[(chain, f.funder)] += 1
    return out


def first_fundings(transfers: Iterable[Transfer], until: datetime | None = None) -> FundingMap:
    """(chain_id, address) -> its first incoming transfer, optionally only those before ``until``.

    Earliest by (event time, block, log index, tx hash), so the answer does not depend on the
    order the transfers arrive in. Pass the history you have, not just the window: the fan-out
    of each funder (how many addresses it funded first) is counted over this map.
    """
    best: dict[tuple[str, str], tuple[tuple, Funding]] = {}
    for t in transfers:
        if until is not None and t.event_time >= until:
            continue
        key = (t.chain_id, normalise_address(t.chain_id, t.to_address))
        rank = (t.event_time, t.block_number, t.log_index, t.tx_hash)
        if key not in best or rank < best[key][0]:
            funding = Funding(
                normalise_address(t.chain_id, t.from_address),
                t.tx_hash,
                t.block_number,
                t.event_time,
            )
            best[key] = (rank, funding)
    return FundingMap((k, v[1]) for k, v in best.items())


# ----------------------------------------------------------------------------- pair scans


def _within(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    """|a - b| <= tol * max(a, b), inclusive (False where either is NaN)."""
    hi = np.maximum(a, b)
    return np.abs(a - b) <= (tol + _REL_SLACK) * hi


def _pairs_within(
    group: np.ndarray,
    block: np.ndarray,
    horizon: int,
    accept: Callable[[np.ndarray, np.ndarray], np.ndarray],
    limit: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Index pairs i < j of rows sorted by (group, block) with the same group, block gap <=
    horizon and ``accept(i, j)``. Work is the sum of the window sizes, vectorised per offset.
    Returns (i, j, number of rows whose scan stopped at ``limit``)."""
    n = len(group)
    if n < 2:
        e = np.empty(0, dtype=np.int64)
        return e, e, 0
    rel = block - block.min()
    key = group.astype(np.int64) * (int(rel.max()) + horizon + 1) + rel
    end = np.searchsorted(key, key + horizon, side="right")
    idx = np.arange(n, dtype=np.int64)
    active = idx[end > idx + 1]
    out_i, out_j = [], []
    d = 1
    while active.size and d <= limit:
        j = active + d
        ok = accept(active, j)
        out_i.append(active[ok])
        out_j.append(j[ok])
        d += 1
        active = active[end[active] > active + d]
    truncated = int(active.size)
    if not out_i:
        e = np.empty(0, dtype=np.int64)
        return e, e, truncated
    return np.concatenate(out_i), np.concatenate(out_j), truncated


def _sorted_by(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """Indices that sort by the non-negative int keys, first key first (stable).

    Packs the keys into one int64 and argsorts it when that cannot overflow (several times
    faster than lexsort on a million rows); falls back to lexsort otherwise.
    """
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    room = 1
    for k in reversed(keys):
        lo, hi = (int(k.min()), int(k.max())) if len(k) else (0, 0)
        span = hi - lo + 1
        if room * span >= 2**62:
            return np.lexsort(keys[::-1])
        packed += (k.astype(np.int64) - lo) * room
        room *= span
    return np.argsort(packed, kind="stable")


# ----------------------------------------------------------------------------- primary rules


@dataclass(frozen=True)
class Parties:
    """One row per (trade, distinct party): the trader, and the recipient when it differs."""

    trade: np.ndarray
    wallet: np.ndarray
    node: np.ndarray  # dense id of (pool, wallet)
    node_pool: np.ndarray  # per node
    node_wallet: np.ndarray  # per node
    trader_node: np.ndarray  # per trade
    recipient_node: np.ndarray  # per trade

    @property
    def n_nodes(self) -> int:
        return len(self.node_pool)


def parties(frame: TradeFrame) -> Parties:
    n = len(frame)
    idx = np.arange(n, dtype=np.int64)
    other = frame.recipient != frame.trader
    trade = np.concatenate([idx, idx[other]])
    wallet = np.concatenate([frame.trader, frame.recipient[other]])
    key = frame.pool[trade] * max(len(frame.wallets), 1) + wallet
    node, uniq = pd.factorize(key)
    node = node.astype(np.int64)
    trader_node = node[:n]
    recipient_node = trader_node.copy()
    recipient_node[idx[other]] = node[n:]
    W = max(len(frame.wallets), 1)
    uniq = np.asarray(uniq, dtype=np.int64)
    return Parties(trade, wallet, node, uniq // W, uniq % W, trader_node, recipient_node)


@dataclass(frozen=True)
class RoundTrips:
    node: np.ndarray  # flagged nodes
    count: np.ndarray  # matched round trips of each
    pair_node: np.ndarray  # per matched pair: its node
    pair_a: np.ndarray  # per matched pair: the two trades
    pair_b: np.ndarray

    @property
    def count_of(self) -> dict[int, int]:
        return dict(zip(self.node.tolist(), self.count.tolist(), strict=True))


def round_trips(frame: TradeFrame, pt: Parties, rule: RoundTripRule) -> RoundTrips:
    """Chainalysis round trips per (pool, party), fully vectorised.

    A round trip is a trade and the address's next priced trade in the pool: opposite sides,
    at most ``max_blocks`` apart, USD within ``usd_tolerance``. Consecutive candidates share a
    trade, so each run of them is matched one to one from its start (a run of L candidate
    pairs holds ceil(L / 2) round trips).
    """
    e = np.empty(0, dtype=np.int64)
    rows = np.flatnonzero(np.isfinite(frame.usd[pt.trade]))
    t = pt.trade[rows]
    order = _sorted_by((pt.node[rows], frame.block[t], frame.log_index[t]))
    t = t[order]
    g = pt.node[rows[order]]
    if len(t) < 2:
        return RoundTrips(e, e, e, e, e)
    a, b = t[:-1], t[1:]
    cand = (
        (g[:-1] == g[1:])
        & (frame.side[a] != frame.side[b])
        & (frame.block[b] - frame.block[a] <= rule.max_blocks)
        & _within(frame.usd[a], frame.usd[b], rule.usd_tolerance)
    )
    k = np.flatnonzero(cand)
    if k.size == 0:
        return RoundTrips(e, e, e, e, e)
    run_start = np.r_[True, k[1:] != k[:-1] + 1]
    first = np.maximum.accumulate(np.where(run_start, np.arange(len(k)), 0))
    take = (np.arange(len(k)) - first) % 2 == 0
    k = k[take]
    count = np.bincount(g[k], minlength=pt.n_nodes)
    flagged = np.flatnonzero(count >= rule.min_count)
    keep = count[g[k]] >= rule.min_count
    k = k[keep]
    return RoundTrips(flagged, count[flagged], g[k], a[k], b[k])


@dataclass(frozen=True)
class SelfTrades:
    a: np.ndarray  # first trade of each pair
    b: np.ndarray  # the next trade in the pool
    shared: list[list[int]]  # nodes present in both


def self_trades(frame: TradeFrame, pt: Parties, rule: SelfTradeRule) -> SelfTrades:
    """Adjacent opposite swaps in one pool and block, same base amount, sharing a party."""
    n = len(frame)
    if n < 2:
        e = np.empty(0, dtype=np.int64)
        return SelfTrades(e, e, [])
    a, b = np.arange(n - 1), np.arange(1, n)
    tn, rn = pt.trader_node, pt.recipient_node
    ok = (
        (frame.pool[a] == frame.pool[b])
        & (frame.block[a] == frame.block[b])
        & (frame.side[a] != frame.side[b])
        & _within(frame.base_amount[a], frame.base_amount[b], rule.amount_tolerance)
        & ((tn[a] == tn[b]) | (tn[a] == rn[b]) | (rn[a] == tn[b]) | (rn[a] == rn[b]))
    )
    a, b = a[ok], b[ok]
    shared = [
        sorted({tn[x], rn[x]} & {tn[y], rn[y]}) for x, y in zip(a.tolist(), b.tolist(), strict=True)
    ]
    return SelfTrades(a, b, shared)


@dataclass(frozen=True)
class TradeGraph:
    src: np.ndarray  # node -> node, value flowed from src to dst
    dst: np.ndarray
    trade_a: np.ndarray  # the trade(s) behind each edge; trade_b = -1 for recipient edges
    trade_b: np.ndarray
    truncated: int


def trade_graph(frame: TradeFrame, pt: Parties, rule: ClosedLoopRule, limit: int) -> TradeGraph:
    """Recipient edges and counterparty (seller -> buyer) edges of each pool."""
    tn, rn = pt.trader_node, pt.recipient_node
    rec = np.flatnonzero(tn != rn)
    # Counterparty pairs lie in the same or in adjacent log-size cells of width ln(1/(1-tol));
    # scanning by (pool, cell pair) instead of by pool keeps hot pools' windows tiny. Two
    # offset cell pairings cover every adjacent pair once; same-cell pairs are taken once.
    width = -math.log(1 - rule.amount_tolerance) * (1 + 1e-6)
    cell = np.floor(np.log(frame.base_amount) / width).astype(np.int64)
    cell -= cell.min() if len(cell) else 0
    base, side, block = frame.base_amount, frame.side, frame.block
    ii, jj, truncated = [], [], 0
    for shift in (0, 1):
        grp_cell = (cell + shift) // 2
        order = _sorted_by((frame.pool, grp_cell, block, frame.log_index))
        g = frame.pool[order] * (int(grp_cell.max(initial=0)) + 1) + grp_cell[order]
        o_base, o_side, o_cell = base[order], side[order], cell[order]

        def accept(i, j, o_base=o_base, o_side=o_side, o_cell=o_cell, shift=shift):
            ok = (o_side[i] != o_side[j]) & _within(o_base[i], o_base[j], rule.amount_tolerance)
            return ok & (o_cell[i] != o_cell[j]) if shift else ok

        i, j, tr = _pairs_within(g, block[order], rule.max_blocks, accept, limit)
        ii.append(order[i])
        jj.append(order[j])
        truncated += tr
    i, j = np.concatenate(ii), np.concatenate(jj)
    sell = np.where(side[i] < 0, i, j)
    buy = np.where(side[i] < 0, j, i)
    src, dst = tn[sell], rn[buy]
    keep = src != dst
    return TradeGraph(
        src=np.concatenate([tn[rec], src[keep]]),
        dst=np.concatenate([rn[rec], dst[keep]]),
        trade_a=np.concatenate([rec, sell[keep]]),
        trade_b=np.concatenate([np.full(len(rec), -1, dtype=np.int64), buy[keep]]),
        truncated=truncated,
    )


def _scc(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes))
    return connected_components(graph.tocsr(), directed=True, connection="strong")[1].astype(
        np.int64
    )


@dataclass(frozen=True)
class Loops:
    label: np.ndarray  # per node: its loop id, -1 outside loops
    net: np.ndarray  # per node: net base position
    mean_size: np.ndarray  # per loop id: mean base trade size of its members
    edge_loop: np.ndarray  # per graph edge: loop id when both ends are in the same loop, else -1


def net_positions(frame: TradeFrame, pt: Parties) -> np.ndarray:
    """Base received as recipient of buys minus base sold as trader of sells, per node."""
    buy = frame.side > 0
    got = np.bincount(pt.recipient_node[buy], frame.base_amount[buy], minlength=pt.n_nodes)
    sold = np.bincount(pt.trader_node[~buy], frame.base_amount[~buy], minlength=pt.n_nodes)
    return got - sold


def closed_loops(frame: TradeFrame, pt: Parties, graph: TradeGraph, rule: ClosedLoopRule) -> Loops:
    """Strongly connected components whose members all keep a flat net position."""
    n_nodes = pt.n_nodes
    net = net_positions(frame, pt)
    size_sum = np.bincount(pt.node, frame.base_amount[pt.trade], minlength=n_nodes)
    size_cnt = np.bincount(pt.node, minlength=n_nodes)
    own_mean = size_sum / np.maximum(size_cnt, 1)
    cand = np.zeros(n_nodes, dtype=bool)
    cand[graph.src] = True
    cand[graph.dst] = True
    cand &= np.abs(net) <= rule.net_tolerance * own_mean * (1 + _REL_SLACK)
    label = np.full(n_nodes, -1, dtype=np.int64)
    for _ in range(16):  # pruning converges in a few rounds; each round only removes nodes
        m = cand[graph.src] & cand[graph.dst]
        lab = _scc(n_nodes, graph.src[m], graph.dst[m])
        size = np.bincount(lab, minlength=n_nodes)
        in_loop = cand & (size[lab] >= rule.min_members) & (size[lab] <= rule.max_members)
        rows = in_loop[pt.node]
        comp_sum = np.bincount(lab[pt.node[rows]], frame.base_amount[pt.trade[rows]], n_nodes)
        comp_cnt = np.bincount(lab[pt.node[rows]], minlength=n_nodes)
        comp_mean = comp_sum / np.maximum(comp_cnt, 1)
        flat = np.abs(net) <= rule.net_tolerance * comp_mean[lab] * (1 + _REL_SLACK)
        bad = in_loop & ~flat
        # Too-small loops are dropped, not pruned: their members may belong to no loop at all.
        e_in = m & (lab[graph.src] == lab[graph.dst]) & in_loop[graph.src]
        edge_comp = lab[graph.src[e_in]]
        trades = np.concatenate([graph.trade_a[e_in], graph.trade_b[e_in]])
        comps = np.concatenate([edge_comp, edge_comp])
        keep_t = trades >= 0
        pairs = np.unique(comps[keep_t] * max(len(frame), 1) + trades[keep_t])
        trades_per_comp = np.bincount(pairs // max(len(frame), 1), minlength=n_nodes)
        small = in_loop & (trades_per_comp[lab] < rule.min_trades)
        if not bad.any():
            label = np.where(in_loop & ~small, lab, -1)
            break
        cand &= ~bad
    # Dense loop ids in order of first node, so ids do not depend on scipy's numbering.
    ids, dense = np.unique(label[label >= 0], return_inverse=True)
    out = np.full(n_nodes, -1, dtype=np.int64)
    out[label >= 0] = dense
    mean_size = np.zeros(len(ids))
    for k, comp in enumerate(ids):
        mean_size[k] = comp_mean[comp]
    same = (out[graph.src] >= 0) & (out[graph.src] == out[graph.dst])
    edge_loop = np.where(same, out[graph.src], -1)
    return Loops(out, net, mean_size, edge_loop)


def node_fundings(
    frame: TradeFrame,
    pt: Parties,
    nodes: np.ndarray,
    fundings: Mapping[tuple[str, str], Funding] | None,
    rule: CommonFunderRule,
) -> dict[int, tuple[Funding, bool]]:
    """node -> (its first funding, whether that funder counts as evidence) for ``nodes``.

    A funder counts unless it is ignored or first-funded more than ``max_funder_fanout``
    addresses of the map (exchanges, bridges and pools fund everyone).
    """
    if not fundings:
        return {}
    fanout = fundings.fanout if isinstance(fundings, FundingMap) else _fanout(fundings)
    out = {}
    for k in nodes.tolist():
        chain, _pool = frame.pools[pt.node_pool[k]]
        f = fundings.get((chain, frame.wallets[pt.node_wallet[k]]))
        if f is not None and f.funder not in rule.ignore_funders:
            out[k] = (f, fanout[(chain, f.funder)] <= rule.max_funder_fanout)
    return out


# ----------------------------------------------------------------------------- weak tests


@dataclass(frozen=True)
class PoolStats:
    """Per pool (arrays indexed by pool code): the weak statistical tests."""

    n: np.ndarray
    benford_mad: np.ndarray
    round_share: np.ndarray
    tail_exponent: np.ndarray
    benford_fired: np.ndarray
    round_fired: np.ndarray
    tail_fired: np.ndarray


def first_digits(x: np.ndarray) -> np.ndarray:
    """First significant digit (1-9) of positive finite values."""
    frac = np.log10(x) % 1.0
    return np.clip(np.floor(10.0**frac + 1e-9), 1, 9).astype(np.int64)


def benford_mad(x: np.ndarray) -> float:
    """Mean absolute deviation of first-digit shares from Benford (Nigrini)."""
    x = x[np.isfinite(x) & (x > 0)]
    if x.size == 0:
        return math.nan
    p = np.bincount(first_digits(x) - 1, minlength=9) / x.size
    return float(np.mean(np.abs(p - BENFORD)))


def is_round(x: np.ndarray, digits: int = 2) -> np.ndarray:
    """Whether each value has at most ``digits`` significant digits (250, 0.5, 1.5e6)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        m = x / 10.0 ** (np.floor(np.log10(x)) - (digits - 1))
        return np.abs(m - np.rint(m)) <= 1e-6 * m


def hill_exponent(x: np.ndarray, tail_fraction: float = 0.1, min_tail: int = 50) -> float:
    """Hill estimator of the power-law tail exponent from the top ``tail_fraction`` of values."""
    x = np.sort(x[np.isfinite(x) & (x > 0)])[::-1]
    k = max(min_tail, int(tail_fraction * x.size))
    if k >= x.size:
        return math.nan
    logs = np.log(x[:k]) - math.log(x[k])
    s = float(logs.sum())
    return min(k / s, 1e6) if s > 0 else 1e6


def pool_statistics(frame: TradeFrame, cfg: WashTradeConfig) -> PoolStats:
    """Benford MAD, round-size share and Hill exponent of every pool at once (vectorised)."""
    P = len(frame.pools)
    pool, x = frame.pool, frame.base_amount
    n = np.bincount(pool, minlength=P)
    digits = first_digits(x)
    counts = np.bincount(pool * 9 + digits - 1, minlength=P * 9).reshape(P, 9)
    with np.errstate(invalid="ignore", divide="ignore"):
        mad = np.abs(counts / n[:, None] - BENFORD).mean(axis=1)
    ain = frame.amount_in
    good_in = np.isfinite(ain) & (ain > 0)
    rnd = np.zeros(len(x), dtype=bool)
    rnd[good_in] = is_round(ain[good_in], cfg.round_sizes.significant_digits)
    n_in = np.bincount(pool[good_in], minlength=P)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.bincount(pool[rnd], minlength=P) / n_in
    # Hill per pool: rank every trade within its pool by size, descending.
    tt = cfg.tail_exponent
    logx = np.log(x)
    order = np.lexsort((-logx, pool))
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    rank = np.empty(len(x), dtype=np.int64)
    rank[order] = np.arange(len(x)) - start[pool[order]]
    k = np.maximum(tt.min_tail, (tt.tail_fraction * n).astype(np.int64))
    top = rank < k[pool]
    top_sum = np.bincount(pool[top], logx[top], minlength=P)
    at_k = rank == k[pool]
    log_xk = np.full(P, np.nan)
    log_xk[pool[at_k]] = logx[at_k]
    with np.errstate(invalid="ignore", divide="ignore"):
        s = top_sum - k * log_xk
        alpha = np.where(s > 0, np.minimum(k / s, 1e6), 1e6)
    alpha = np.where(k < n, alpha, np.nan)
    b, r = cfg.benford, cfg.round_sizes
    return PoolStats(
        n=n,
        benford_mad=mad,
        round_share=share,
        tail_exponent=alpha,
        benford_fired=(n >= b.min_trades) & (mad > b.mad_threshold),
        round_fired=(n_in >= r.min_trades) & (share < r.min_share),
        tail_fired=(n >= tt.min_trades) & ~np.isnan(alpha) & ((alpha < tt.low) | (alpha > tt.high)),
    )


# ----------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Signal:
    name: str
    value: float | int | None
    threshold: float | int | list[float]
    fired: bool
    weight: float  # contribution when fired
    detail: dict = field(default_factory=dict)


def confidence(signals: Sequence[Signal]) -> float:
    """Noisy-OR of the fired signals' weights, 0-100; 0 when no primary signal fired."""
    if not any(s.fired for s in signals if s.name in PRIMARY):
        return 0.0
    miss = 1.0
    for s in signals:
        if s.fired:
            miss *= 1.0 - s.weight
    return round(100.0 * (1.0 - miss), 2)


PRIMARY = ("self_trade", "round_trip", "closed_loop", "common_funder")


def is_alert(row: SuspiciousActivityRow, threshold: float = ALERT_THRESHOLD) -> bool:
    """Whether a finding goes to ``alerts.surveillance.v1``."""
    return row.confidence_score >= threshold


@dataclass
class Detection:
    """The findings of one window, the books of its trades and every pool's weak tests."""

    findings: list[SuspiciousActivityRow]
    counters: dict[str, int]
    pool_stats: dict[tuple[str, str], dict]

    @property
    def alerts(self) -> list[SuspiciousActivityRow]:
        return [f for f in self.findings if is_alert(f)]


@dataclass
class _Evidence:
    """Everything the rules found in one window, indexed for per-finding look-ups."""

    frame: TradeFrame
    pt: Parties
    rt_count: dict[int, int]
    rt_pairs: dict[int, list[tuple[int, int]]]
    st_pairs: dict[int, list[tuple[int, int]]]
    loops: Loops
    loop_trades: dict[int, set[int]]
    funding: dict[int, tuple[Funding, bool]]
    stats: PoolStats
    pair_trades: dict[tuple[int, int], set[int]] = field(default_factory=lambda: defaultdict(set))


def detect(
    trades: TradeFrame | Iterable[DexTrade],
    window_start: datetime,
    window_end: datetime,
    *,
    fundings: Mapping[tuple[str, str], Funding] | None = None,
    config: WashTradeConfig = DEFAULT_CONFIG,
    token_addresses: Mapping[tuple[str, str], str] | None = None,
) -> Detection:
    """Every wash-trading finding of one window [window_start, window_end).

    ``fundings`` maps (chain_id, normalised address) to its first funding (see
    :func:`first_fundings`); ``token_addresses`` maps (chain_id, base symbol) to the token
    contract for ``token_address``. ``counters`` count the trades in and used, those dropped
    (duplicates, outside the window, inconsistent tokens, bad amounts), those without USD (kept
    for the amount rules, skipped by round_trip) and truncated pair scans.
    """
    frame = trades if isinstance(trades, TradeFrame) else TradeFrame.from_trades(trades)
    lo = epoch_micros(window_start)
    hi = epoch_micros(window_end)
    inside = (frame.time_us >= lo) & (frame.time_us < hi)
    counters = dict(frame.counters)
    counters["outside_window"] = int((~inside).sum())
    if not inside.all():
        frame = frame.subset(inside)
    counters["trades_used"] = len(frame)
    counters["without_usd"] = int(np.isnan(frame.usd).sum())
    counters.update(findings=0, alerts=0, scan_truncated=0)
    if len(frame) == 0:
        return Detection([], counters, {})

    pt = parties(frame)
    rt = round_trips(frame, pt, config.round_trip)
    st = self_trades(frame, pt, config.self_trade)
    graph = trade_graph(frame, pt, config.closed_loop, config.scan_limit)
    loops = closed_loops(frame, pt, graph, config.closed_loop)
    stats = pool_statistics(frame, config)
    counters["scan_truncated"] = graph.truncated

    # Counterparties for common_funder: wallets with edges both ways between them, or in one
    # closed loop. (A busy pool's counterparty edges make one giant SCC: too loose.)
    pairs = counterparties(pt, graph, loops)
    flagged = np.zeros(pt.n_nodes, dtype=bool)
    flagged[rt.node] = True
    flagged[loops.label >= 0] = True
    # Self-trading wallets count once they have enough pairs (one pair is chance).
    st_count: dict[int, int] = defaultdict(int)
    for shared in st.shared:
        st_count[shared[0]] += 1
    st_live = [sh for sh in st.shared if st_count[sh[0]] >= config.self_trade.min_pairs]
    for shared in st_live:
        flagged[shared] = True
    paired = np.zeros(pt.n_nodes, dtype=bool)
    paired[pairs.ravel()] = True
    funding = node_fundings(
        frame, pt, np.flatnonzero(paired | flagged), fundings, config.common_funder
    )

    # Link flagged nodes that share evidence; each linked group in a pool is one finding.
    links: list[tuple[int, int]] = [(n, n) for n in np.flatnonzero(flagged).tolist()]
    rt_count = rt.count_of
    for a, b in zip(rt.pair_a.tolist(), rt.pair_b.tolist(), strict=True):
        both = {pt.trader_node[a], pt.recipient_node[a], pt.trader_node[b], pt.recipient_node[b]}
        members = sorted(x for x in both if x in rt_count)
        links += [(members[0], x) for x in members[1:]]
    for shared in st_live:
        links += [(shared[0], x) for x in shared[1:]]
    first_in_loop: dict[int, int] = {}
    for node in np.flatnonzero(loops.label >= 0).tolist():
        links.append((first_in_loop.setdefault(int(loops.label[node]), node), node))
    funder_links = _funder_links(frame, pt, pairs, funding)
    links += funder_links
    # Flagged wallets that traded with each other directly are one finding (a ring whose
    # members each fired on their own, e.g. when camouflage trades broke the loop).
    both = flagged[graph.src] & flagged[graph.dst]
    links += list(zip(graph.src[both].tolist(), graph.dst[both].tolist(), strict=True))
    if not links:
        return Detection([], counters, _pool_stats_dict(frame, stats))
    la = np.asarray([a for a, _ in links], dtype=np.int64)
    lb = np.asarray([b for _, b in links], dtype=np.int64)
    g = coo_matrix((np.ones(len(la), dtype=np.int8), (la, lb)), shape=(pt.n_nodes,) * 2)
    cluster = connected_components(g.tocsr(), directed=False)[1]
    members: dict[int, list[int]] = defaultdict(list)
    for node in np.unique(np.concatenate([la, lb])).tolist():
        members[int(cluster[node])].append(node)

    ev = _Evidence(
        frame=frame,
        pt=pt,
        rt_count=rt_count,
        rt_pairs=defaultdict(list),
        st_pairs=defaultdict(list),
        loops=loops,
        loop_trades=defaultdict(set),
        funding=funding,
        stats=stats,
    )
    for n, a, b in zip(rt.pair_node.tolist(), rt.pair_a.tolist(), rt.pair_b.tolist(), strict=True):
        ev.rt_pairs[n].append((a, b))
    for a, b, shared in zip(st.a.tolist(), st.b.tolist(), st.shared, strict=True):
        ev.st_pairs[shared[0]].append((a, b))
    # The trades that make funded wallets counterparties are evidence of common_funder.
    if funder_links:
        n = np.int64(pt.n_nodes)
        linked = [min(u, v) * n + max(u, v) for u, v in funder_links]
        key = np.minimum(graph.src, graph.dst) * n + np.maximum(graph.src, graph.dst)
        for k in np.flatnonzero(np.isin(key, linked)).tolist():
            u, v = int(graph.src[k]), int(graph.dst[k])
            ev.pair_trades[(min(u, v), max(u, v))].update(
                t for t in (int(graph.trade_a[k]), int(graph.trade_b[k])) if t >= 0
            )
    e = np.flatnonzero(loops.edge_loop >= 0)
    for lab, ta, tb in zip(
        loops.edge_loop[e].tolist(),
        graph.trade_a[e].tolist(),
        graph.trade_b[e].tolist(),
        strict=True,
    ):
        ev.loop_trades[lab].add(ta)
        if tb >= 0:
            ev.loop_trades[lab].add(tb)

    rows = []
    for nodes in members.values():
        row = _finding(nodes, ev, config, window_start, window_end, token_addresses)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: r.activity_id)
    counters["findings"] = len(rows)
    counters["alerts"] = sum(is_alert(r, config.alert_threshold) for r in rows)
    return Detection(rows, counters, _pool_stats_dict(frame, stats))


def detect_wash_trades(
    trades: TradeFrame | Iterable[DexTrade],
    window_start: datetime,
    window_end: datetime,
    transfers: Iterable[Transfer] = (),
    config: WashTradeConfig = DEFAULT_CONFIG,
    token_addresses: Mapping[tuple[str, str], str] | None = None,
) -> list[SuspiciousActivityRow]:
    """The findings of one window; first fundings come from ``transfers`` before its end."""
    fundings = first_fundings(transfers, until=window_end)
    return detect(
        trades,
        window_start,
        window_end,
        fundings=fundings,
        config=config,
        token_addresses=token_addresses,
    ).findings


def counterparties(pt: Parties, graph: TradeGraph, loops: Loops) -> np.ndarray:
    """(k, 2) node pairs, smaller first, that traded with each other: an edge each way
    between them, or both in the same closed loop."""
    n = np.int64(max(pt.n_nodes, 1))
    keys = pd.unique(graph.src * n + graph.dst)  # hashing: no sort needed
    src, dst = keys // n, keys % n
    mutual = pd.Index(keys).isin(dst * n + src) & (src < dst)
    pairs = [np.stack([src[mutual], dst[mutual]], axis=1)]
    in_loop = np.flatnonzero(loops.label >= 0)
    by_loop = in_loop[np.argsort(loops.label[in_loop], kind="stable")]
    labs = loops.label[by_loop]
    for lab in np.unique(labs).tolist():
        members = by_loop[labs == lab]
        a, b = np.triu_indices(len(members), 1)
        pairs.append(np.stack([members[a], members[b]], axis=1))
    out = np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)
    return np.unique(np.sort(out, axis=1), axis=0) if len(out) else out.reshape(0, 2)


def _funder_links(
    frame: TradeFrame,
    pt: Parties,
    pairs: np.ndarray,
    funding: dict[int, tuple[Funding, bool]],
) -> list[tuple[int, int]]:
    """Counterparty pairs first funded by the same (counting) wallet, or one by the other."""
    links = []
    for u, v in pairs.tolist():
        fu, fv = funding.get(u), funding.get(v)
        wu, wv = frame.wallets[pt.node_wallet[u]], frame.wallets[pt.node_wallet[v]]
        same = fu and fv and fu[1] and fv[1] and fu[0].funder == fv[0].funder
        one_by_other = (fu and fu[0].funder == wv) or (fv and fv[0].funder == wu)
        if same or one_by_other:
            links.append((u, v))
    return links


def _pool_stats_dict(frame: TradeFrame, stats: PoolStats) -> dict[tuple[str, str], dict]:
    return {
        key: {
            "trades": int(stats.n[p]),
            "benford_mad": _num(stats.benford_mad[p]),
            "benford_fired": bool(stats.benford_fired[p]),
            "round_share": _num(stats.round_share[p]),
            "round_fired": bool(stats.round_fired[p]),
            "tail_exponent": _num(stats.tail_exponent[p]),
            "tail_fired": bool(stats.tail_fired[p]),
        }
        for p, key in enumerate(frame.pools)
    }


def _num(v) -> float | None:
    """A float for the evidence JSON: 6 significant digits, None for NaN."""
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else None


def _step_weight(base: float, step: float, cap: float, extra: int) -> float:
    return round(min(cap, base + step * max(extra, 0)), 6)


def _finding(
    nodes: list[int],
    ev: _Evidence,
    cfg: WashTradeConfig,
    window_start: datetime,
    window_end: datetime,
    token_addresses: Mapping[tuple[str, str], str] | None,
) -> SuspiciousActivityRow | None:
    frame, pt = ev.frame, ev.pt
    pool = int(pt.node_pool[nodes[0]])
    chain_id, pool_address = frame.pools[pool]
    wallet_of = {n: frame.wallets[pt.node_wallet[n]] for n in nodes}
    evidence: set[int] = set()

    st_pairs = [p for n in nodes for p in ev.st_pairs.get(n, ())]
    for pair in st_pairs:
        evidence.update(pair)
    r = cfg.self_trade
    s_self = Signal(
        r.name,
        len(st_pairs),
        r.min_pairs,
        len(st_pairs) >= r.min_pairs,
        _step_weight(r.weight, r.weight_step, r.weight_cap, len(st_pairs) - r.min_pairs),
        {"amount_tolerance": r.amount_tolerance},
    )

    rr = cfg.round_trip
    best = max((ev.rt_count.get(n, 0) for n in nodes), default=0)
    rt_pairs = {p for n in nodes for p in ev.rt_pairs.get(n, ())}
    for pair in rt_pairs:
        evidence.update(pair)
    s_rt = Signal(
        rr.name,
        best,
        rr.min_count,
        best >= rr.min_count,
        _step_weight(rr.weight, rr.weight_step, rr.weight_cap, best - rr.min_count),
        {
            "matched_pairs": len(rt_pairs),
            "addresses": sum(n in ev.rt_count for n in nodes),
            "max_blocks": rr.max_blocks,
            "usd_tolerance": rr.usd_tolerance,
        },
    )

    cl = cfg.closed_loop
    in_loop = [n for n in nodes if ev.loops.label[n] >= 0]
    labs = sorted({int(ev.loops.label[n]) for n in in_loop})
    worst = max(
        (abs(float(ev.loops.net[n])) / ev.loops.mean_size[ev.loops.label[n]] for n in in_loop),
        default=math.nan,
    )
    for lab in labs:
        evidence.update(ev.loop_trades[lab])
    s_loop = Signal(
        cl.name,
        _num(worst),
        cl.net_tolerance,
        bool(labs),
        cl.weight,
        {
            "members": len(in_loop),
            "max_blocks": cl.max_blocks,
            "amount_tolerance": cl.amount_tolerance,
            "measure": "max |net base position| / mean base trade size",
        },
    )

    # The largest set of members sharing a counting first funder (a member that funded
    # another member counts with it).
    cf = cfg.common_funder
    node_by_wallet = {w: n for n, w in wallet_of.items()}
    by_funder: dict[str, set[int]] = defaultdict(set)
    for n in nodes:
        if n not in ev.funding:
            continue
        f, counts = ev.funding[n]
        if counts:
            by_funder[f.funder].add(n)
        if f.funder in node_by_wallet and node_by_wallet[f.funder] != n:
            by_funder[f.funder].update((n, node_by_wallet[f.funder]))
    top_funder, top = None, set()
    for funder in sorted(by_funder):
        if len(by_funder[funder]) > len(top):
            top_funder, top = funder, by_funder[funder]
    cf_fired = len(top) >= cf.min_wallets
    funding_txs = set()
    if cf_fired:
        funding_txs = {ev.funding[n][0].tx_hash for n in top if n in ev.funding}
        for u in top:
            for v in top:
                evidence.update(ev.pair_trades.get((u, v), ()))
    s_cf = Signal(
        cf.name,
        len(top),
        cf.min_wallets,
        cf_fired,
        cf.weight,
        {"funder": top_funder if cf_fired else None, "max_funder_fanout": cf.max_funder_fanout},
    )

    st_ = ev.stats
    b, rs, te = cfg.benford, cfg.round_sizes, cfg.tail_exponent
    weak = [
        Signal(
            b.name,
            _num(st_.benford_mad[pool]),
            b.mad_threshold,
            bool(st_.benford_fired[pool]),
            b.weight,
            {"trades": int(st_.n[pool]), "min_trades": b.min_trades},
        ),
        Signal(
            rs.name,
            _num(st_.round_share[pool]),
            rs.min_share,
            bool(st_.round_fired[pool]),
            rs.weight,
            {"fires": "below threshold", "min_trades": rs.min_trades},
        ),
        Signal(
            te.name,
            _num(st_.tail_exponent[pool]),
            [te.low, te.high],
            bool(st_.tail_fired[pool]),
            te.weight,
            {"fires": "outside range", "tail_fraction": te.tail_fraction},
        ),
    ]
    signals = [s_self, s_rt, s_loop, s_cf, *weak]
    score = confidence(signals)
    if score <= 0:
        return None

    ev_trades = sorted(evidence)
    usd = frame.usd[ev_trades] if ev_trades else np.empty(0)
    priced = usd[np.isfinite(usd)]
    hashes = sorted({str(h) for h in frame.tx_hash[ev_trades]} | funding_txs)
    wallets = sorted(wallet_of.values())
    base = frame.base_tokens[pool]
    metrics = {
        "signals": {
            s.name: {
                "value": s.value,
                "threshold": s.threshold,
                "fired": s.fired,
                "weight": s.weight,
                **s.detail,
            }
            for s in signals
        },
        "confidence_formula": "100*(1-prod(1-weight)) over fired signals; needs a primary",
        "base_token": base,
        "quote_token": frame.quote_tokens[pool],
        "evidence_trades": len(ev_trades),
        "evidence_trades_without_usd": int(len(ev_trades) - priced.size),
        "evidence_tx_total": len(hashes),
    }
    return SuspiciousActivityRow(
        activity_id=deterministic_id(
            ACTIVITY_TYPE, chain_id, pool_address, ",".join(wallets), window_start, window_end
        ),
        activity_type=ACTIVITY_TYPE,
        chain_id=chain_id,
        wallet_addresses=wallets,
        token_address=(token_addresses or {}).get((chain_id, base)),
        pool_address=pool_address,
        confidence_score=score,
        estimated_impact_usd=Decimal(f"{priced.sum():.2f}") if priced.size else None,
        evidence_tx_hashes=hashes[: cfg.max_evidence_txs],
        evidence_metrics=json.dumps(metrics, sort_keys=True, allow_nan=False),
        window_start=window_start,
        window_end=window_end,
        detected_at=window_end,
    )


def config_dict(config: WashTradeConfig = DEFAULT_CONFIG) -> dict:
    """The parameters of every signal, e.g. for a run report."""
    out = asdict(config)
    out["common_funder"]["ignore_funders"] = sorted(config.common_funder.ignore_funders)
    return out
