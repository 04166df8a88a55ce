"""The injected abuse cases: their funding transfers and their ground-truth records."""

from __future__ import annotations

import numpy as np

from runners.synthetic.assets import ETHEREUM, Clock, iso
from runners.synthetic.dex import BLOCK_S, VENUE, DexResult
from runners.synthetic.rng import address
from runners.synthetic.transfers import Transfers

SYBIL_FUNDING_RAW = 5 * 10**16  # 0.05 ETH to every farm wallet
SYBIL_RETURN_RAW = 295 * 10**14  # 0.0295 ETH back: what is left after the swap and gas


def _net(trades: list[dict], wallet: str, token: str) -> int:
    """Net raw position change of a wallet in a token from swaps (received minus sold)."""
    got = sum(
        int(t["amount_out_raw"])
        for t in trades
        if t["recipient"] == wallet and t["token_out"] == token
    )
    sold = sum(
        int(t["amount_in_raw"]) for t in trades if t["trader"] == wallet and t["token_in"] == token
    )
    return got - sold


def wash_case(dex: DexResult, tr: Transfers, rng: np.random.Generator, clock: Clock) -> dict:
    case = dex.cases["wash"]
    pool = dex.pools[case["_pool"]]
    first = case["_trips"][0]["buy_s"]
    funding = []
    t = first - float(rng.uniform(1, 3)) * 3600
    for w in case["ring"]:  # the ring's first incoming transfers all come from the funder
        funding.append(
            tr.add_usd(ETHEREUM, t, case["funder"], w, "ETH", 0.3 * tr.market.usd("ETH", t))
        )
        funding.append(
            tr.add_usd(
                ETHEREUM,
                t + BLOCK_S,
                case["funder"],
                w,
                "USDC",
                case["_size"] * float(rng.uniform(1.5, 2.5)),
            )
        )
        t += BLOCK_S * int(rng.integers(2, 6))
    trips, trades = [], []
    for trip in case["_trips"]:
        buy, sell = dex.results[f"wash-buy-{trip['k']}"], dex.results[f"wash-sell-{trip['k']}"]
        trades += [buy, sell]
        trips.append(
            {
                "buyer": buy["trader"],
                "seller": sell["trader"],
                "buy_tx": buy["tx_hash"],
                "sell_tx": sell["tx_hash"],
                "buy_block": buy["block_number"],
                "sell_block": sell["block_number"],
                "blocks_apart": sell["block_number"] - buy["block_number"],
                "buy_usd": buy["amount_usd"],
                "sell_usd": sell["amount_usd"],
            }
        )
    token = pool.spec.token0
    return {
        "id": "wash-01",
        "chain_id": ETHEREUM,
        "venue": VENUE,
        "pool": pool.address,
        "pair": pool.spec.name,
        "token": token,
        "wallets": case["ring"],
        "funder": case["funder"],
        "start": iso(trades[0]["event_time"]),
        "end": iso(trades[-1]["event_time"]),
        "funded_at": iso(funding[0]["event_time"]),
        "round_trips": trips,
        "volume_usd": str(sum(x["amount_usd"] for x in trades)),
        "net_token_position_raw": {w: str(_net(trades, w, token)) for w in case["ring"]},
        "funding_tx_hashes": [f["tx_hash"] for f in funding],
        "evidence_tx_hashes": [x["tx_hash"] for x in trades] + [f["tx_hash"] for f in funding],
    }


def rug_case(dex: DexResult, tr: Transfers, rng: np.random.Generator, clock: Clock) -> dict:
    case = dex.cases["rug"]
    created, pulled = dex.results["rug-create"], dex.results["rug-burn"]
    burn, sync = pulled["burn"], pulled["sync"]
    exit_wallet = address(rng)
    t_out = case["_t_burn"] + float(rng.uniform(2, 10)) * 60
    removed = int(burn["amount1_raw"])
    cash_out = tr.add(ETHEREUM, t_out, case["deployer"], exit_wallet, "WETH", removed)
    buys = [v for k, v in dex.results.items() if k.startswith("rug-buy-")]
    victims = [w for w in case["victims"] if any(b["trader"] == w for b in buys)]
    minted = int(created["mint"]["liquidity_raw"])
    return {
        "id": "rug-01",
        "chain_id": ETHEREUM,
        "venue": VENUE,
        "pool": case["pool"],
        "pair": "SAFU/WETH",
        "token": case["token"],
        "quote": "WETH",
        "deployer": case["deployer"],
        "created_at": iso(created["create"]["event_time"]),
        "pulled_at": iso(burn["event_time"]),
        "start": iso(created["create"]["event_time"]),
        "end": iso(sync["event_time"]),
        "lp_minted_raw": str(minted),
        "lp_burned_raw": burn["liquidity_raw"],
        "burn_fraction": round(int(burn["liquidity_raw"]) / minted, 6),
        "quote_removed_raw": str(removed),
        "quote_removed_usd": cash_out["amount_usd"],
        "reserves_after_raw": [sync["amount0_raw"], sync["amount1_raw"]],
        "victims": victims,
        "victim_buy_usd": str(sum(b["amount_usd"] for b in buys)),
        "exit_address": exit_wallet,
        "evidence_tx_hashes": [created["create"]["tx_hash"], burn["tx_hash"], cash_out["tx_hash"]],
    }


def _unit_price(t: dict) -> float:
    """USD per whole memecoin of a swap (the quote side carries amount_usd)."""
    base_raw = int(t["amount_out_raw"] if t["token_in"] in ("WETH", "USDC") else t["amount_in_raw"])
    return float(t["amount_usd"]) / (base_raw / 10**18)


def pump_case(dex: DexResult, clock: Clock) -> dict:
    case = dex.cases["pump"]
    pool = dex.pools[case["_pool"]]
    trades = [t for t in dex.trades if t["pool_address"] == pool.address]
    group = [dex.results[k] for k in case["_keys"] if k in dex.results]
    t_start, t_end = min(g["event_time"] for g in group), max(g["event_time"] for g in group)
    before = [t for t in trades if t["event_time"] < t_start]
    window = [t for t in trades if t_start <= t["event_time"] <= t_end]
    after = [t for t in trades if t["event_time"] > t_end]
    peak = max(window, key=_unit_price)
    hours = max((t_start - clock.start).total_seconds() / 3600, 1.0)
    return {
        "id": "pnd-01",
        "chain_id": ETHEREUM,
        "venue": VENUE,
        "pool": pool.address,
        "pair": pool.spec.name,
        "token": pool.spec.token0,
        "quote": pool.spec.token1,
        "wallets": case["wallets"],
        "start": iso(t_start),
        "peak": iso(peak["event_time"]),
        "end": iso(t_end),
        "price_before_usd": round(_unit_price(before[-1]), 12) if before else None,
        "peak_price_usd": round(_unit_price(peak), 12),
        "price_after_usd": round(_unit_price(after[0]), 12)
        if after
        else round(_unit_price(window[-1]), 12),
        "window_volume_usd": str(sum(t["amount_usd"] for t in window)),
        "baseline_hourly_volume_usd": round(float(sum(t["amount_usd"] for t in before)) / hours, 2),
        "evidence_tx_hashes": [g["tx_hash"] for g in sorted(group, key=lambda g: g["_sort"])],
    }


def sybil_case(dex: DexResult, tr: Transfers, rng: np.random.Generator, clock: Clock) -> dict:
    case = dex.cases["sybil"]
    frog = dex.pools["FROG/WETH"]
    funding, swaps, back = [], [], []
    block = clock.block_at(ETHEREUM, case["_t_fund"])
    for w in case["wallets"]:  # one transfer a block: the whole burst takes a few minutes
        funding.append(
            tr.add(
                ETHEREUM,
                clock.block_seconds(ETHEREUM, block),
                case["funder"],
                w,
                "ETH",
                SYBIL_FUNDING_RAW,
            )
        )
        block += 1
    for key in case["_keys"]:
        swaps.append(dex.results[key])
    block = clock.block_at(ETHEREUM, case["_t_consolidate"])
    for w, s in zip(case["wallets"], swaps, strict=True):
        t = clock.block_seconds(ETHEREUM, block)
        raw = int(s["amount_out_raw"])
        back.append(
            tr.add(
                ETHEREUM,
                t,
                w,
                case["collector"],
                "FROG",
                raw,
                token_address=frog.token_addresses["FROG"],
                usd_price=_unit_price(s),
            )
        )
        back.append(tr.add(ETHEREUM, t + BLOCK_S, w, case["collector"], "ETH", SYBIL_RETURN_RAW))
        block += int(rng.integers(1, 3))
    return {
        "id": "sybil-01",
        "chain_id": ETHEREUM,
        "funder": case["funder"],
        "collector": case["collector"],
        "wallets": case["wallets"],
        "n_wallets": len(case["wallets"]),
        "funding_asset": "ETH",
        "funding_amount_raw": str(SYBIL_FUNDING_RAW),
        "action": {
            "kind": "swap",
            "pool": frog.address,
            "pair": "FROG/WETH",
            "token_in": "WETH",
            "amount_in_raw": swaps[0]["amount_in_raw"],
        },
        "start": iso(funding[0]["event_time"]),
        "end": iso(back[-1]["event_time"]),
        "funding_tx_hashes": [f["tx_hash"] for f in funding],
        "action_tx_hashes": [s["tx_hash"] for s in swaps],
        "consolidation_tx_hashes": [b["tx_hash"] for b in back],
        "evidence_tx_hashes": [x["tx_hash"] for x in funding + swaps + back],
    }
