"""Synthetic DEX days with wash rings hidden in ordinary trading, for transforms.surveillance.wash_trade.

Used by tests/transforms/surveillance/test_wash_trade.py and the benchmarks (bench_wash_trade, bench_detector_quality):

    from tests.support.wash_scenarios import generate, evaluate
    sc = generate(seed=1, traders=20_000, pools=24, rings=80)
    det = wash_trade.detect(sc.frame(), *sc.window, fundings=sc.fundings)
    evaluate(sc, det.findings)

**Ordinary trading** (one day, 7,200 blocks of 12 s, USDC-quoted pools with Zipf popularity and
their own price random walk, 0.3 % fee). Traders come in three kinds: casual (85 %, 1-4
trades), regular (13 %, 4-30 trades) and active (2 %, 20-150 trades in 2-6 sessions of about
an hour, one pool). Each trader has a typical size (log-normal around $400, bots $1,500) and
trades log-normal sizes around it, buys with its own probability (Beta(4, 4)), and sometimes
sends the output to a second wallet of its own or to an aggregator contract. Humans type round
amounts a third of the time (Cong et al.: real traders cluster at round sizes); 0.5 % of trades
have no USD price. Funding: most traders were first funded by one of 8 exchange hot wallets,
others by a wallet of their own, some families of 2-4 traders by the same personal wallet.

**Wash rings** of 2-6 wallets in one pool, each a number of *cycles* in which the tokens go
once around the ring:

- ``relay``: member i buys for member i+1 (recipient), who sells the same tokens back to i
  within 1-20 blocks (the demo generator's case);
- ``pass``: every member trades for itself: member i sells what it holds and member i+1 buys
  the same amount (+-0.3 %) 0-6 blocks later; the first member buys in and sells out at the end.

Sizes $300-$30,000 with +-0.3 % noise, and the pool's price keeps moving between the legs (up to
0.15 % per block), so not every leg is within 1 % in USD. Half the rings were first funded by
one wallet, the others by exchanges or wallets of their own. Every ring member ends flat on
its ring trades; 30 % of them also trade the pool 1-3 times on their own (camouflage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from schemas.events import DexTrade
from transforms.surveillance.wash_trade import Funding, TradeFrame

CHAIN = "eip155:1"
BLOCK_S = 12
BLOCKS = 7200  # one day
FIRST_BLOCK = 21_900_000
DAY0 = datetime(2025, 3, 1, tzinfo=UTC)
FEE = 0.003
HUBS = 8
AGGREGATORS = 3


@dataclass
class Ring:
    wallets: list[str]
    pool: str
    style: str
    cycles: int
    funder: str | None  # the common first funder, if any
    trades: int = 0


@dataclass
class Scenario:
    columns: dict
    fundings: dict[tuple[str, str], Funding]
    rings: list[Ring]
    ordinary: set[str]  # ordinary traders' wallets (their second wallets included)
    traders: int  # ordinary traders
    window: tuple[datetime, datetime] = (DAY0, DAY0 + timedelta(days=1))
    extra: dict = field(default_factory=dict)

    def frame(self) -> TradeFrame:
        return TradeFrame.from_columns(**self.columns)

    def __len__(self) -> int:
        return len(self.columns["pool"])

    def dex_trades(self, idx: np.ndarray | None = None) -> list[DexTrade]:
        """The trades (or those at ``idx``) as validated ``dex.trades.v1`` records."""
        c = self.columns
        idx = np.arange(len(self)) if idx is None else idx
        out = []
        for k in idx.tolist():
            usd = c["usd"][k]
            dec_in = 6 if c["token_in"][k] == "USDC" else 18
            dec_out = 6 if c["token_out"][k] == "USDC" else 18
            out.append(
                DexTrade(
                    event_id=f"{c['tx_hash'][k]}:{c['log_index'][k]}",
                    chain_id=CHAIN,
                    venue="uniswap_v2",
                    pool_address=c["pool"][k],
                    tx_hash=c["tx_hash"][k],
                    block_number=int(c["block"][k]),
                    log_index=int(c["log_index"][k]),
                    trader=c["trader"][k],
                    recipient=c["recipient"][k],
                    token_in=c["token_in"][k],
                    token_out=c["token_out"][k],
                    amount_in_raw=str(int(round(c["amount_in"][k] * 10**dec_in))),
                    amount_out_raw=str(int(round(c["amount_out"][k] * 10**dec_out))),
                    decimals_in=dec_in,
                    decimals_out=dec_out,
                    amount_usd=None if math.isnan(usd) else f"{usd:.2f}",
                    event_time=DAY0 + timedelta(microseconds=int(c["time_us"][k]) - _day0_us()),
                )
            )
        return out


def _day0_us() -> int:
    return int(DAY0.timestamp()) * 1_000_000


def _hex(rng: np.random.Generator, n: int, n_bytes: int) -> list[str]:
    s = rng.bytes(n * n_bytes).hex()
    w = 2 * n_bytes
    return ["0x" + s[i : i + w] for i in range(0, n * w, w)]


def _round_sig(x: np.ndarray, digits: int) -> np.ndarray:
    scale = 10.0 ** (np.floor(np.log10(x)) - (digits - 1))
    return np.rint(x / scale) * scale


def generate(
    seed: int = 1,
    traders: int = 20_000,
    pools: int = 24,
    rings: int = 80,
    short_ring_share: float = 0.25,
    camouflage: float = 0.3,
) -> Scenario:
    """One day of trading with ``rings`` wash rings; ``short_ring_share`` of them run only 1-2
    cycles (too few to be a pattern; reported apart from recall); each ring member makes 1-3
    ordinary trades in the pool as well with probability ``camouflage``."""
    rng = np.random.default_rng(seed)
    pool_addr = _hex(rng, pools, 20)
    pop = 1.0 / np.arange(1, pools + 1) ** 1.1
    pop /= pop.sum()
    vol = rng.uniform(0.0002, 0.0015, pools)  # per-block log-price volatility
    p0 = np.exp(rng.normal(0.0, 2.0, pools))
    steps = rng.normal(0.0, 1.0, (pools, BLOCKS + 40)) * vol[:, None]
    price = p0[:, None] * np.exp(np.cumsum(steps, axis=1))

    # ---- ordinary traders
    kind = rng.choice(3, size=traders, p=[0.85, 0.13, 0.02])  # casual, regular, active
    count = np.select(
        [kind == 0, kind == 1],
        [1 + np.minimum(rng.poisson(1.2, traders), 3), rng.integers(4, 31, traders)],
        rng.integers(20, 151, traders),
    )
    median = np.where(
        kind == 2,
        rng.lognormal(math.log(1500), 0.8, traders),
        rng.lognormal(math.log(400), 1.0, traders),
    )
    sigma = np.choose(kind, [0.9, 0.7, 0.6])
    p_buy = rng.beta(4, 4, traders)
    human = (kind < 2) & (rng.random(traders) < 0.6)
    homes = rng.choice(pools, size=(traders, 3), p=pop)
    n_home = np.where(kind == 2, 1, rng.integers(1, 4, traders))
    wallets = _hex(rng, traders, 20)
    second = _hex(rng, traders, 20)
    aggregators = _hex(rng, AGGREGATORS, 20)

    who = np.repeat(np.arange(traders), count)
    n = len(who)
    pool = homes[who, rng.integers(0, 3, n) % n_home[who]]
    block = rng.integers(0, BLOCKS, n)
    active = kind[who] == 2
    # Active traders trade in sessions: 2-6 of them, trades spread ~1 h around each.
    sessions = rng.integers(0, BLOCKS, (traders, 6))
    n_sess = rng.integers(2, 7, traders)
    centre = sessions[who, rng.integers(0, 6, n) % n_sess[who]]
    burst = (centre + rng.normal(0, 300, n).astype(np.int64)) % BLOCKS  # wrap, no pile-up
    block = np.where(active, burst, block)
    usd = median[who] * np.exp(rng.normal(0.0, 1.0, n) * sigma[who])
    usd = np.clip(usd, 2.0, 2_000_000.0)
    buy = rng.random(n) < p_buy[who]
    px = price[pool, block]
    typed_round = human[who] & (rng.random(n) < 0.35)
    quote_in = np.where(typed_round & buy, _round_sig(usd, 2), usd)
    base_in = np.where(typed_round & ~buy, _round_sig(usd / px, 2), usd / px)
    base_out = quote_in * (1 - FEE) / px
    quote_out = base_in * px * (1 - FEE)
    amount_in = np.where(buy, quote_in, base_in)
    amount_out = np.where(buy, base_out, quote_out)
    value = np.where(buy, quote_in, quote_out)
    value[rng.random(n) < 0.005] = np.nan
    trader_col = np.asarray(wallets, dtype=object)[who]
    recipient_col = trader_col.copy()
    r = rng.random(n)
    to_second = r < 0.03
    recipient_col[to_second] = np.asarray(second, dtype=object)[who[to_second]]
    to_agg = (r >= 0.03) & (r < 0.05)
    recipient_col[to_agg] = np.asarray(aggregators, dtype=object)[rng.integers(0, AGGREGATORS, n)][
        to_agg
    ]

    cols = {
        "pool": list(np.asarray(pool_addr, dtype=object)[pool]),
        "block": list(block),
        "trader": list(trader_col),
        "recipient": list(recipient_col),
        "buy": list(buy),
        "amount_in": list(amount_in),
        "amount_out": list(amount_out),
        "usd": list(value),
    }

    # ---- funders
    hubs = _hex(rng, HUBS, 20)
    fundings: dict[tuple[str, str], Funding] = {}
    funding_time = DAY0 - timedelta(days=3)
    fkind = rng.random(traders)
    own_funders = _hex(rng, traders, 20)
    family_funder = own_funders[0]
    family_left = 0
    for k, w in enumerate(wallets):
        if fkind[k] < 0.65:
            funder = hubs[int(rng.integers(0, HUBS))]
        elif fkind[k] < 0.90:
            funder = own_funders[k]
        else:  # families of 2-4 wallets funded by the same personal wallet
            if family_left == 0:
                family_funder, family_left = own_funders[k], int(rng.integers(2, 5))
            funder, family_left = family_funder, family_left - 1
        fundings[(CHAIN, w)] = Funding(
            funder, f"0xfund{k:060x}", FIRST_BLOCK - 20_000, funding_time
        )
    for k, w in enumerate(second):  # second wallets were funded by their owner
        fundings[(CHAIN, w)] = Funding(
            wallets[k], f"0xsecf{k:060x}", FIRST_BLOCK - 10_000, funding_time
        )

    # ---- wash rings
    ring_list: list[Ring] = []
    for q in range(rings):
        s = int(rng.integers(2, 7))
        members = _hex(rng, s, 20)
        style = "relay" if q % 2 == 0 else "pass"
        short = rng.random() < short_ring_share
        cycles = int(rng.integers(1, 3)) if short else int(rng.integers(3, 11))
        p = int(rng.choice(pools, p=pop))
        common = rng.random() < 0.5
        funder = _hex(rng, 1, 20)[0] if common else None
        for k, w in enumerate(members):
            if common:
                f = funder
            elif rng.random() < 0.5:
                f = hubs[int(rng.integers(0, HUBS))]
            else:
                f = _hex(rng, 1, 20)[0]
            fundings[(CHAIN, w)] = Funding(
                f, f"0xring{q:030x}{k:030x}", FIRST_BLOCK - 5_000, funding_time
            )
        size = math.exp(rng.uniform(math.log(300), math.log(30_000)))
        legs = _ring_legs(rng, style, members, cycles, size, price[p])
        # Camouflage: some members also trade the pool like anyone else, so their net
        # position is no longer flat and some of their round trips are interrupted.
        for w in members:
            if rng.random() < camouflage:
                for _ in range(int(rng.integers(1, 4))):
                    b = int(rng.integers(0, BLOCKS))
                    usd = size * math.exp(rng.normal(0.0, 0.5))
                    if rng.random() < 0.5:
                        legs.append((b, w, w, True, usd, usd * (1 - FEE) / price[p][b], usd))
                    else:
                        base = usd / price[p][b]
                        q = base * price[p][b] * (1 - FEE)
                        legs.append((b, w, w, False, base, q, q))
        for b, trader, recipient, is_buy, a_in, a_out, v in legs:
            cols["pool"].append(pool_addr[p])
            cols["block"].append(b)
            cols["trader"].append(trader)
            cols["recipient"].append(recipient)
            cols["buy"].append(is_buy)
            cols["amount_in"].append(a_in)
            cols["amount_out"].append(a_out)
            cols["usd"].append(v)
        ring_list.append(Ring(members, pool_addr[p], style, cycles, funder, len(legs)))

    # ---- assemble: log index = rank within the block, tx hashes, times
    m = len(cols["pool"])
    block = np.asarray(cols["block"], dtype=np.int64)
    # Legs of one ring in the same block keep their order (seller before buyer).
    order = np.lexsort((np.arange(m), block))
    log_index = np.empty(m, dtype=np.int64)
    bs = block[order]
    first = np.r_[True, bs[1:] != bs[:-1]]
    starts = np.maximum.accumulate(np.where(first, np.arange(m), 0))
    log_index[order] = np.arange(m) - starts
    is_buy = np.asarray(cols["buy"], dtype=bool)
    base_sym = {a: f"TK{i:03d}" for i, a in enumerate(pool_addr)}
    base_col = [base_sym[a] for a in cols["pool"]]
    columns = {
        "chain_id": CHAIN,
        "pool": cols["pool"],
        "block": FIRST_BLOCK + block,
        "log_index": log_index,
        "time_us": _day0_us() + block * BLOCK_S * 1_000_000 + log_index,
        "trader": cols["trader"],
        "recipient": cols["recipient"],
        "token_in": [("USDC" if b else t) for b, t in zip(is_buy, base_col, strict=True)],
        "token_out": [(t if b else "USDC") for b, t in zip(is_buy, base_col, strict=True)],
        "amount_in": np.asarray(cols["amount_in"], dtype=np.float64),
        "amount_out": np.asarray(cols["amount_out"], dtype=np.float64),
        "usd": np.round(np.asarray(cols["usd"], dtype=np.float64), 2),  # cents, as on the wire
        "tx_hash": _hex(rng, m, 32),
    }
    return Scenario(
        columns=columns,
        fundings=fundings,
        rings=ring_list,
        ordinary=set(wallets) | set(second),
        traders=traders,
        extra={"hubs": hubs, "aggregators": aggregators},
    )


def _ring_legs(rng, style, members, cycles, size, price):
    """The trades of one ring: (block, trader, recipient, buy, amount_in, amount_out, usd)."""
    s = len(members)
    span = cycles * s * 30 + 200
    t = int(rng.integers(0, BLOCKS - span))
    legs = []

    def buy(b, trader, recipient, base):
        q = base * price[b] / (1 - FEE)
        legs.append((b, trader, recipient, True, q, base, q))

    def sell(b, trader, recipient, base):
        q = base * price[b] * (1 - FEE)
        legs.append((b, trader, recipient, False, base, q, q))

    if style == "relay":
        for _ in range(cycles):
            for i in range(s):
                a, b = members[i], members[(i + 1) % s]
                usd = size * (1 + rng.uniform(-0.003, 0.003))
                base = usd * (1 - FEE) / price[t]
                buy(t, a, b, base)
                t2 = t + int(rng.integers(1, 21))
                sell(t2, b, a, base)
                t = t2 + int(rng.integers(1, 11))
    else:
        held = size * (1 - FEE) / price[t]
        buy(t, members[0], members[0], held)
        for _ in range(cycles):
            for i in range(s):
                t += int(rng.integers(1, 11))
                sell(t, members[i], members[i], held)
                held = held * (1 + rng.uniform(-0.003, 0.003))
                t += int(rng.integers(0, 7))
                buy(t, members[(i + 1) % s], members[(i + 1) % s], held)
        t += int(rng.integers(1, 11))
        sell(t, members[0], members[0], held)
    return legs


def evaluate(sc: Scenario, findings, min_cycles: int = 3, coverage: float = 0.8) -> dict:
    """Ring recall, false findings and precision of findings against the injected rings.

    A ring is found when one finding in its pool holds at least ``coverage`` of its wallets.
    A finding is false when it holds no ring wallet, partial when it holds some but matches no
    ring; precision is the share of findings that match a ring. Ordinary wallets inside
    findings are counted.
    """
    found = [False] * len(sc.rings)
    matched_findings = partial_findings = false_findings = ordinary_in = 0
    ring_wallets = {w for r in sc.rings for w in r.wallets}
    for f in findings:
        ws = set(f.wallet_addresses)
        ordinary_in += len(ws & sc.ordinary)
        hit = False
        for k, ring in enumerate(sc.rings):
            if ring.pool.lower() != f.pool_address:
                continue
            if len(ws & set(ring.wallets)) >= math.ceil(coverage * len(ring.wallets)):
                found[k] = True
                hit = True
        matched_findings += hit
        partial_findings += not hit and bool(ws & ring_wallets)
        false_findings += not ws & ring_wallets
    long_rings = [k for k, r in enumerate(sc.rings) if r.cycles >= min_cycles]
    short_rings = [k for k, r in enumerate(sc.rings) if r.cycles < min_cycles]

    def rate(ks):
        return round(sum(found[k] for k in ks) / len(ks), 4) if ks else None

    return {
        "rings": len(long_rings),
        "rings_found": sum(found[k] for k in long_rings),
        "recall": rate(long_rings),
        "recall_common_funder": rate([k for k in long_rings if sc.rings[k].funder]),
        "recall_no_common_funder": rate([k for k in long_rings if not sc.rings[k].funder]),
        "recall_relay": rate([k for k in long_rings if sc.rings[k].style == "relay"]),
        "recall_pass": rate([k for k in long_rings if sc.rings[k].style == "pass"]),
        "short_rings": len(short_rings),
        "short_rings_found": sum(found[k] for k in short_rings),
        "findings": len(findings),
        "precision": round(matched_findings / len(findings), 4) if findings else None,
        "partial_findings": partial_findings,
        "false_findings": false_findings,
        "false_findings_per_10k_traders": round(false_findings * 10_000 / sc.traders, 3),
        "ordinary_wallets_in_findings": ordinary_in,
        "ordinary_traders": sc.traders,
        "trades": len(sc),
    }
