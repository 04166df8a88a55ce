"""Uniswap-v2 style pools on Ethereum: ordinary trading plus the injected abuse cases.

Every swap runs through the exact v2 constant-product formula on integer reserves, so the sync
events (reserves) are consistent with the swaps. The WETH/USDC and WBTC/USDC pools are
re-centred on the oracle price before each swap (arbitrage is not emitted); memecoin pools
move only with their own order flow. Log order inside a tx: create, mint/burn/swap, then sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from runners.synthetic.assets import DECIMALS, ETHEREUM, MEME_DECIMALS, TOKEN_ADDRESSES, Clock, iso
from runners.synthetic.market import Market
from runners.synthetic.rng import Ledger, address, addresses, substream
from schemas.base import deterministic_id

VENUE = "uniswap_v2"
FEE_NUM, FEE_DEN = 997, 1000
MINIMUM_LIQUIDITY = 1000  # LP locked forever by the first mint (Uniswap v2)
BLOCK_S = 12


@dataclass
class PoolSpec:
    name: str
    token0: str
    token1: str  # the quote token (USDC or WETH)
    tvl_usd: float  # at creation
    base_price_usd: float | None  # memecoins: initial price; None = oracle-priced (WETH, WBTC)
    trades_per_day: float
    median_usd: float
    address: str | None = None  # real pair address where one exists


POOLS = (
    PoolSpec(
        "WETH/USDC",
        "WETH",
        "USDC",
        40e6,
        None,
        1500,
        2500,
        "0xB4e16d0168e52d35CaCD2c6185b44281Ec28C9Dc",
    ),
    PoolSpec(
        "WBTC/USDC",
        "WBTC",
        "USDC",
        8e6,
        None,
        500,
        4000,
        "0x004375Dff511095CC5A197A54140a24eFEF3A416",
    ),
    PoolSpec("FROG/WETH", "FROG", "WETH", 1.2e6, 0.0000124, 300, 350),
    PoolSpec("KEKW/USDC", "KEKW", "USDC", 4e5, 0.0031, 120, 200),
    PoolSpec("ZOOM/WETH", "ZOOM", "WETH", 1.2e5, 0.00042, 30, 150),
)
RUG = PoolSpec("SAFU/WETH", "SAFU", "WETH", 0.0, 0.0000007, 0, 0)


@dataclass
class Pool:
    spec: PoolSpec
    address: str
    token_addresses: dict[str, str]
    r0: int = 0
    r1: int = 0
    supply: int = 0
    lp: dict[str, int] = field(default_factory=dict)
    next_sync: float = 0.0
    created: bool = False
    last_event: float = 0.0

    @property
    def dec0(self) -> int:
        return DECIMALS.get(self.spec.token0, MEME_DECIMALS)

    @property
    def dec1(self) -> int:
        return DECIMALS[self.spec.token1]

    @property
    def pegged(self) -> bool:
        return self.spec.base_price_usd is None

    def price1(self) -> float:
        """token0 price in token1 (human units)."""
        return (self.r1 / 10**self.dec1) / (self.r0 / 10**self.dec0)


@dataclass
class Intent:
    """A planned pool action; amounts are resolved when it runs (state at that block)."""

    seconds: float
    kind: str  # create | mint | burn | swap
    pool: str
    sender: str
    recipient: str | None = None
    side: str = "buy"  # swap: buy = token1 -> token0, sell = token0 -> token1
    usd: float = 0.0
    # raw; "all" (the sender's balance); "from:<key>" (output of an earlier swap); "reserve"
    # (fraction x the pool's reserve of token_in, so the price impact does not depend on history)
    amount_in: int | str | None = None
    amounts: tuple[int, int] = (0, 0)  # create: initial reserves
    fraction: float = 1.0  # mint: share of reserves; burn: share of the sender's LP
    key: str | None = None  # results are kept under this key
    priority: int = 1


@dataclass
class DexResult:
    trades: list[dict]
    liquidity: list[dict]
    results: dict[str, dict]  # intent key -> the trade/liquidity record(s) it produced
    pools: dict[str, Pool]
    cases: dict[str, dict]
    balances: dict[tuple[str, str], int]


class Dex:
    def __init__(self, market: Market, clock: Clock, ledger: Ledger, seed: int):
        self.market, self.clock, self.ledger = market, clock, ledger
        self.rng = substream(seed, "dex")
        self.pools: dict[str, Pool] = {}
        self.intents: list[Intent] = []
        self.trades: list[dict] = []
        self.liquidity: list[dict] = []
        self.results: dict[str, dict] = {}
        self.balances: dict[tuple[str, str], int] = {}
        self._seq = 0

    # ------------------------------------------------------------------------------ pools
    def add_pool(self, spec: PoolSpec) -> Pool:
        tokens = {}
        for t in (spec.token0, spec.token1):
            tokens[t] = TOKEN_ADDRESSES[ETHEREUM].get(t) or address(self.rng)
        pool = Pool(spec, spec.address or address(self.rng), tokens)
        self.pools[spec.name] = pool
        return pool

    def usd(self, token: str, pool: Pool, seconds: float) -> float:
        if token == pool.spec.token0 and not pool.pegged:
            return pool.price1() * self.market.usd(pool.spec.token1, seconds)
        return self.market.usd(token, seconds)

    def initial_amounts(self, spec: PoolSpec, seconds: float, tvl_usd: float) -> tuple[int, int]:
        p0 = spec.base_price_usd or self.market.usd(spec.token0, seconds)
        p1 = self.market.usd(spec.token1, seconds)
        d0 = DECIMALS.get(spec.token0, MEME_DECIMALS)
        return int(tvl_usd / 2 / p0 * 10**d0), int(tvl_usd / 2 / p1 * 10 ** DECIMALS[spec.token1])

    # ---------------------------------------------------------------------------- intents
    def plan(self, intent: Intent) -> Intent:
        self.intents.append(intent)
        return intent

    def run(self) -> None:
        """Execute every intent in block order (ties: priority, then planning order)."""
        order = sorted(
            range(len(self.intents)),
            key=lambda i: (int(self.intents[i].seconds // BLOCK_S), self.intents[i].priority, i),
        )
        for i in order:
            self._apply(self.intents[i])

    def _block(self, seconds: float) -> int:
        return self.clock.block_at(ETHEREUM, seconds)

    def _liq_record(
        self,
        pool: Pool,
        kind: str,
        tx: str,
        block: int,
        log: int,
        sender: str,
        a0: int,
        a1: int,
        lp: int | None,
    ) -> dict:
        rec = {
            "event_id": deterministic_id(ETHEREUM, tx, log),
            "chain_id": ETHEREUM,
            "pool_address": pool.address,
            "kind": kind,
            "tx_hash": tx,
            "block_number": block,
            "log_index": log,
            "sender": sender,
            "token0": pool.spec.token0,
            "token1": pool.spec.token1,
            "amount0_raw": str(a0),
            "amount1_raw": str(a1),
            "decimals0": pool.dec0,
            "decimals1": pool.dec1,
            "liquidity_raw": None if lp is None else str(lp),
            "event_time": self.clock.block_time(ETHEREUM, block),
            "_sort": (block, log),
        }
        self.liquidity.append(rec)
        return rec

    def _sync(self, pool: Pool, tx: str, block: int, log: int, seconds: float, sender: str) -> dict:
        interval = 600 if pool.pegged else 900
        pool.next_sync = seconds + interval
        return self._liq_record(pool, "sync", tx, block, log, sender, pool.r0, pool.r1, None)

    def _apply(self, it: Intent) -> None:
        pool = self.pools[it.pool]
        block = self._block(it.seconds)
        if it.kind == "create":
            a0, a1 = it.amounts
            tx, log = self.ledger.tx(ETHEREUM, block, 3)
            liq = math.isqrt(a0 * a1)
            pool.r0, pool.r1, pool.supply, pool.created = a0, a1, liq, True
            pool.lp[it.sender] = liq - MINIMUM_LIQUIDITY
            c = self._liq_record(pool, "create", tx, block, log, it.sender, 0, 0, None)
            m = self._liq_record(
                pool, "mint", tx, block, log + 1, it.sender, a0, a1, liq - MINIMUM_LIQUIDITY
            )
            s = self._sync(pool, tx, block, log + 2, it.seconds, it.sender)
            self._keep(it, {"create": c, "mint": m, "sync": s})
            return
        if not pool.created:
            return
        if it.kind == "mint":
            a0, a1 = int(pool.r0 * it.fraction), int(pool.r1 * it.fraction)
            liq = min(a0 * pool.supply // pool.r0, a1 * pool.supply // pool.r1)
            if liq <= 0:
                return
            tx, log = self.ledger.tx(ETHEREUM, block, 2)
            pool.r0, pool.r1, pool.supply = pool.r0 + a0, pool.r1 + a1, pool.supply + liq
            pool.lp[it.sender] = pool.lp.get(it.sender, 0) + liq
            m = self._liq_record(pool, "mint", tx, block, log, it.sender, a0, a1, liq)
            self._keep(
                it, {"mint": m, "sync": self._sync(pool, tx, block, log + 1, it.seconds, it.sender)}
            )
        elif it.kind == "burn":
            held = pool.lp.get(it.sender, 0)
            liq = held if it.fraction >= 1 else int(held * it.fraction)
            if liq <= 0:
                return
            a0, a1 = liq * pool.r0 // pool.supply, liq * pool.r1 // pool.supply
            tx, log = self.ledger.tx(ETHEREUM, block, 2)
            pool.r0, pool.r1, pool.supply = pool.r0 - a0, pool.r1 - a1, pool.supply - liq
            pool.lp[it.sender] = held - liq
            b = self._liq_record(pool, "burn", tx, block, log, it.sender, a0, a1, liq)
            self._credit(it.sender, pool.spec.token0, a0)
            self._credit(it.sender, pool.spec.token1, a1)
            self._keep(
                it, {"burn": b, "sync": self._sync(pool, tx, block, log + 1, it.seconds, it.sender)}
            )
        else:
            self._swap(pool, it, block)

    def _credit(self, wallet: str, token: str, amount: int) -> None:
        self.balances[(wallet, token)] = self.balances.get((wallet, token), 0) + amount

    def _keep(self, it: Intent, rec: dict) -> None:
        if it.key:
            self.results[it.key] = rec

    def _swap(self, pool: Pool, it: Intent, block: int) -> None:
        t = it.seconds
        if pool.pegged:  # arbitrageurs keep the pool on the oracle price (their trades not emitted)
            p_raw = (
                self.market.usd(pool.spec.token0, t)
                / self.market.usd(pool.spec.token1, t)
                * 10 ** (pool.dec1 - pool.dec0)
            )
            k = pool.r0 * pool.r1
            pool.r0 = max(int(math.sqrt(k / p_raw)), 1)
            pool.r1 = k // pool.r0
        buy = it.side == "buy"
        tin, tout = (
            (pool.spec.token1, pool.spec.token0) if buy else (pool.spec.token0, pool.spec.token1)
        )
        din, dout = (pool.dec1, pool.dec0) if buy else (pool.dec0, pool.dec1)
        r_in, r_out = (pool.r1, pool.r0) if buy else (pool.r0, pool.r1)
        if isinstance(it.amount_in, int):
            amount_in = it.amount_in
        elif it.amount_in == "reserve":
            amount_in = int(r_in * it.fraction)
        elif it.amount_in == "all":
            amount_in = self.balances.get((it.sender, tin), 0)
        elif isinstance(it.amount_in, str) and it.amount_in.startswith("from:"):
            amount_in = int(self.results[it.amount_in[5:]]["amount_out_raw"])
        else:
            amount_in = int(it.usd / self.usd(tin, pool, t) * 10**din)
        if amount_in <= 0:
            return
        fee_in = amount_in * FEE_NUM
        amount_out = fee_in * r_out // (r_in * FEE_DEN + fee_in)
        if amount_out <= 0 or amount_out >= r_out:
            return
        # USD value from the quote side (token1), priced before the swap moves the pool.
        q_raw = amount_in if buy else amount_out
        usd = q_raw / 10**pool.dec1 * self.market.usd(pool.spec.token1, t)
        if buy:
            pool.r1, pool.r0 = pool.r1 + amount_in, pool.r0 - amount_out
        else:
            pool.r0, pool.r1 = pool.r0 + amount_in, pool.r1 - amount_out
        recipient = it.recipient or it.sender
        self._credit(it.sender, tin, -amount_in)
        self._credit(recipient, tout, amount_out)
        sync_due = t >= pool.next_sync
        tx, log = self.ledger.tx(ETHEREUM, block, 2 if sync_due else 1)
        rec = {
            "event_id": deterministic_id(ETHEREUM, tx, log),
            "chain_id": ETHEREUM,
            "venue": VENUE,
            "pool_address": pool.address,
            "tx_hash": tx,
            "block_number": block,
            "log_index": log,
            "trader": it.sender,
            "recipient": recipient,
            "token_in": tin,
            "token_out": tout,
            "amount_in_raw": str(amount_in),
            "amount_out_raw": str(amount_out),
            "decimals_in": din,
            "decimals_out": dout,
            "amount_usd": Decimal(f"{usd:.2f}"),
            "event_time": self.clock.block_time(ETHEREUM, block),
            "_sort": (block, log),
        }
        self.trades.append(rec)
        if sync_due:
            self._sync(pool, tx, block, log + 1, t, it.sender)
        self._keep(it, rec)


# ------------------------------------------------------------------------------------ scenario
def simulate_dex(
    market: Market, clock: Clock, ledger: Ledger, seed: int, n_traders: int
) -> DexResult:
    dex = Dex(market, clock, ledger, seed)
    rng = dex.rng
    span = market.n_minutes * 60.0
    traders = addresses(rng, n_traders)
    lps = addresses(rng, 6)

    def fit(seconds: float) -> float:
        return float(min(max(seconds, BLOCK_S), span - 10 * BLOCK_S))

    # Existing pools: created and seeded in the first blocks of the run.
    for i, spec in enumerate(POOLS):
        dex.add_pool(spec)
        dex.plan(
            Intent(
                BLOCK_S * (1 + i),
                "create",
                spec.name,
                lps[i % len(lps)],
                amounts=dex.initial_amounts(spec, 0, spec.tvl_usd),
                priority=0,
            )
        )

    # Ordinary LP adds and removals keep burns in the data that are not rug pulls.
    # (kind, events per day, smallest and largest fraction of the pool)
    lp_changes = (("mint", 2, 0.005, 0.03), ("burn", 1, 0.05, 0.3))
    for spec in POOLS:
        for kind, per_day, lo, hi in lp_changes:
            for _ in range(int(rng.poisson(per_day * market.days))):
                dex.plan(
                    Intent(
                        fit(rng.uniform(600, span)),
                        kind,
                        spec.name,
                        lps[int(rng.integers(len(lps)))],
                        fraction=float(rng.uniform(lo, hi)),
                    )
                )

    cases: dict = {"traders": traders}
    wash = _plan_wash(dex, rng, span, fit)
    cases["wash"] = wash
    busy = [(w["buy_s"] - BLOCK_S, w["sell_s"] + BLOCK_S) for w in wash["_trips"]]

    # Ordinary order flow: lognormal USD sizes, buys and sells equally likely.
    for spec in POOLS:
        n = int(rng.poisson(spec.trades_per_day * market.days))
        times = rng.uniform(300, span, n)
        sizes = np.clip(rng.lognormal(np.log(spec.median_usd), 1.2, n), 5, 250_000)
        sides = rng.random(n) < 0.5
        who = rng.integers(0, len(traders), n)
        for s, usd, side, w in zip(
            times.tolist(), sizes.tolist(), sides.tolist(), who.tolist(), strict=True
        ):
            if spec.name == wash["_pool"] and any(lo <= s <= hi for lo, hi in busy):
                continue  # nobody else trades inside a wash round trip: sizes stay within 1%
            dex.plan(
                Intent(
                    fit(s), "swap", spec.name, traders[w], side="buy" if side else "sell", usd=usd
                )
            )

    cases["rug"] = _plan_rug(dex, rng, span, traders, fit)
    cases["pump"] = _plan_pump(dex, rng, span, traders, fit)
    cases["sybil"] = _plan_sybil(dex, rng, span, fit)
    dex.run()
    return DexResult(dex.trades, dex.liquidity, dex.results, dex.pools, cases, dex.balances)


def _plan_wash(dex: Dex, rng: np.random.Generator, span: float, fit) -> dict:
    """3-4 wallets funded by one funder trade KEKW back and forth: A buys for B, B sells for A."""
    ring = addresses(rng, int(rng.integers(3, 5)))
    funder = address(rng)
    pool = "KEKW/USDC"
    t = fit(rng.uniform(0.3, 0.4) * span)
    size = float(rng.uniform(5_000, 8_000))
    trips = []
    for k in range(int(rng.integers(8, 15))):
        a, b = ring[k % len(ring)], ring[(k + 1) % len(ring)]
        buy_s = fit(t)
        sell_s = fit(buy_s + BLOCK_S * int(rng.integers(2, 21)))  # well inside 25 blocks
        usd = size * (1 + float(rng.uniform(-0.003, 0.003)))
        dex.plan(
            Intent(buy_s, "swap", pool, a, recipient=b, side="buy", usd=usd, key=f"wash-buy-{k}")
        )
        dex.plan(
            Intent(
                sell_s,
                "swap",
                pool,
                b,
                recipient=a,
                side="sell",
                amount_in=f"from:wash-buy-{k}",
                key=f"wash-sell-{k}",
            )
        )
        trips.append({"buy_s": buy_s, "sell_s": sell_s, "k": k})
        t = sell_s + BLOCK_S * int(rng.integers(30, 90))
    return {"_pool": pool, "_trips": trips, "ring": ring, "funder": funder, "_size": size}


def _plan_rug(dex: Dex, rng: np.random.Generator, span: float, traders: list[str], fit) -> dict:
    """A deployer seeds a fresh SAFU/WETH pool, victims buy for hours, the deployer pulls the LP."""
    pool = dex.add_pool(RUG)
    deployer = address(rng)
    t_create = fit(rng.uniform(0.12, 0.25) * span)
    hours = float(rng.uniform(4, 8))
    t_burn = fit(t_create + hours * 3600)
    weth = float(rng.uniform(8, 15))
    a0 = int(
        weth * dex.market.usd("WETH", t_create) / 0.0000007 * 10**MEME_DECIMALS
    )  # SAFU at $0.0000007
    dex.plan(
        Intent(
            t_create,
            "create",
            RUG.name,
            deployer,
            amounts=(a0, int(weth * 10**18)),
            key="rug-create",
            priority=0,
        )
    )
    n_victims = int(rng.integers(15, 31))
    victims = [traders[int(i)] for i in rng.choice(len(traders), n_victims, replace=False)]
    for k, v in enumerate(victims):
        for j in range(int(rng.integers(1, 4))):
            # Buying accelerates as the chart goes up (later times more likely).
            s = t_create + 300 + (t_burn - t_create - 600) * float(rng.random() ** 0.6)
            dex.plan(
                Intent(
                    fit(s),
                    "swap",
                    RUG.name,
                    v,
                    side="buy",
                    usd=float(np.clip(rng.lognormal(np.log(900), 0.9), 50, 20_000)),
                    key=f"rug-buy-{k}-{j}",
                )
            )
    for k in range(int(rng.integers(2, 6))):  # a few early flippers sell part of their bag
        s = t_create + 1800 + (t_burn - t_create - 2400) * float(rng.random())
        dex.plan(
            Intent(
                fit(s), "swap", RUG.name, victims[k], side="sell", usd=float(rng.uniform(100, 600))
            )
        )
    dex.plan(Intent(t_burn, "burn", RUG.name, deployer, fraction=1.0, key="rug-burn", priority=2))
    return {
        "pool": pool.address,
        "token": RUG.token0,
        "deployer": deployer,
        "victims": victims,
        "_t_create": t_create,
        "_t_burn": t_burn,
    }


def _plan_pump(dex: Dex, rng: np.random.Generator, span: float, traders: list[str], fit) -> dict:
    """A group buys ZOOM hard for about an hour, FOMO follows, the group sells into the spike."""
    pool = "ZOOM/WETH"
    group = addresses(rng, int(rng.integers(5, 8)))
    t0 = fit(rng.uniform(0.5, 0.6) * span)
    pump_s = float(rng.uniform(50, 70) * 60)
    keys = []
    n_buys = [int(rng.integers(2, 5)) for _ in group]
    # Each buy adds a share of the current WETH reserve; together they grow it by 1.7-2.1x,
    # which (constant product) lifts the price by about 3-4.5x.
    per_buy = float(rng.uniform(1.7, 2.1)) ** (1 / sum(n_buys)) - 1
    for g, w in enumerate(group):
        for j in range(n_buys[g]):
            s = t0 + pump_s * float(rng.random()) ** 1.3
            key = f"pump-buy-{g}-{j}"
            dex.plan(
                Intent(
                    fit(s),
                    "swap",
                    pool,
                    w,
                    side="buy",
                    amount_in="reserve",
                    fraction=per_buy * float(rng.uniform(0.8, 1.2)),
                    key=key,
                )
            )
            keys.append(key)
    fomo = [
        traders[int(i)] for i in rng.choice(len(traders), int(rng.integers(10, 21)), replace=False)
    ]
    for w in fomo:
        s = t0 + pump_s * float(rng.uniform(0.35, 1.0))
        dex.plan(
            Intent(
                fit(s),
                "swap",
                pool,
                w,
                side="buy",
                usd=float(np.clip(rng.lognormal(np.log(600), 0.8), 50, 8000)),
            )
        )
    dump_start = t0 + pump_s + float(rng.uniform(2, 8)) * 60
    dump_s = float(rng.uniform(15, 40)) * 60
    for g, w in enumerate(group):
        s = dump_start + dump_s * float(rng.random())
        key = f"pump-sell-{g}"
        dex.plan(Intent(fit(s), "swap", pool, w, side="sell", amount_in="all", key=key, priority=2))
        keys.append(key)
    return {
        "_pool": pool,
        "wallets": group,
        "_keys": keys,
        "_t0": t0,
        "_pump_end": t0 + pump_s,
        "_dump_end": dump_start + dump_s,
    }


def _plan_sybil(dex: Dex, rng: np.random.Generator, span: float, fit) -> dict:
    """20+ fresh wallets, funded alike in a burst, all make the same small FROG swap."""
    wallets = addresses(rng, int(rng.integers(22, 29)))
    funder, collector = address(rng), address(rng)
    t_fund = fit(rng.uniform(0.65, 0.72) * span)
    t_swap = t_fund + float(rng.uniform(20, 40)) * 60
    swap_window = float(rng.uniform(1, 2.5)) * 3600
    keys = []
    for i, w in enumerate(wallets):
        key = f"sybil-swap-{i}"
        s = t_swap + swap_window * i / len(wallets) + float(rng.uniform(0, 60))
        dex.plan(
            Intent(fit(s), "swap", "FROG/WETH", w, side="buy", amount_in=2 * 10**16, key=key)
        )  # 0.02 WETH each
        keys.append(key)
    return {
        "wallets": wallets,
        "funder": funder,
        "collector": collector,
        "_t_fund": t_fund,
        "_t_consolidate": fit(t_swap + swap_window + float(rng.uniform(2, 4)) * 3600),
        "_keys": keys,
    }


def case_time(clock: Clock, seconds: float) -> str:
    return iso(clock.block_time(ETHEREUM, clock.block_at(ETHEREUM, seconds)))
