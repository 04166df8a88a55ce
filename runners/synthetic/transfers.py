"""Token and native transfers: ordinary flows on four chains, case funding, OFAC-listed touches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

import numpy as np

from runners.synthetic.assets import (
    CHAIN_DECIMALS,
    DECIMALS,
    ETHEREUM,
    MEME_DECIMALS,
    NATIVE,
    PRICE_OF,
    TOKEN_ADDRESSES,
    Clock,
)
from runners.synthetic.market import Market
from runners.synthetic.rng import Ledger, address, tron_address
from schemas.base import deterministic_id
from transforms.compliance.store import BUNDLED_DIR

OFAC_DIR = BUNDLED_DIR  # the real lists the pipeline bundles
_SNAPSHOTS = {
    "brave-intl-2025-11-19": "brave-intl-lists-2025-11-19",
    "0xB10C-2024-09-27": "0xB10C-lists-2024-09-27",
}
OFAC_LISTS = {  # list id -> file (copied unmodified, see transforms/compliance/data/ofac/SOURCE.md)
    f"{snap}/{asset}": OFAC_DIR / d / f"sanctioned_addresses_{asset}.txt"
    for snap, d in _SNAPSHOTS.items()
    for asset in ("ETH", "USDT", "TRX")
}
# When each snapshot took effect (the pipeline's bundled versions use the same dates).
SNAPSHOT_DATES = {"0xB10C-2024-09-27": "2024-09-27", "brave-intl-2025-11-19": "2025-11-19"}
TORNADO_USDC_POOL = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
EXTRA_DECIMALS = {"BNB": 18, "TRX": 6}
# chain -> (transfers per day, asset mix)
ORDINARY = {
    "eip155:1": (
        2000,
        {"ETH": 0.4, "USDC": 0.25, "USDT": 0.2, "DAI": 0.05, "WETH": 0.05, "WBTC": 0.05},
    ),
    "eip155:42161": (150, {"ETH": 0.5, "USDC": 0.3, "USDT": 0.2}),
    "eip155:56": (80, {"USDT": 0.7, "BNB": 0.3}),
    "tron:mainnet": (120, {"USDT": 0.85, "TRX": 0.15}),
}
UNPRICED_SIZING = {"BNB": 700.0, "TRX": 0.25}  # only to size amounts; amount_usd stays null


@lru_cache(maxsize=1)
def ofac_lists() -> dict[str, tuple[str, ...]]:
    return {
        k: tuple(line.strip() for line in p.read_text().splitlines() if line.strip())
        for k, p in OFAC_LISTS.items()
    }


def _key(addr: str) -> str:
    # EVM addresses are case-insensitive (EIP-55 is only a checksum); others are exact.
    return addr.lower() if addr.startswith("0x") else addr


@lru_cache(maxsize=1)
def _index() -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for list_id, addrs in ofac_lists().items():
        for a in addrs:
            index.setdefault(_key(a), []).append(list_id)
    return {k: tuple(v) for k, v in index.items()}


def lists_containing(addr: str) -> list[str]:
    """The list ids an address is on (EVM addresses matched case-insensitively)."""
    return list(_index().get(_key(addr), ()))


def listed_in_both(new: str, old: str) -> list[str]:
    """Addresses of list ``new`` also on ``old`` (as ``new`` spells them): they hit whichever
    snapshot is in force, so the injected hits do not depend on the simulated dates."""
    lists = ofac_lists()
    on_old = {_key(a) for a in lists[old]}
    return sorted(a for a in lists[new] if _key(a) in on_old)


def snapshot_in_force(event_time: datetime) -> str | None:
    """The snapshot in force at an event time (each applies from 00:00 UTC of its date)."""
    day = event_time.date().isoformat()
    due = [s for s, d in SNAPSHOT_DATES.items() if d <= day]
    return max(due, key=SNAPSHOT_DATES.__getitem__) if due else None


def expected_result(listed: str, event_time: datetime) -> str:
    """blocked when the snapshot in force at the time lists the address, else clear."""
    snap = snapshot_in_force(event_time)
    return (
        "blocked"
        if snap and any(x.startswith(snap + "/") for x in lists_containing(listed))
        else "clear"
    )


def decimals_of(chain_id: str, asset: str) -> int:
    return CHAIN_DECIMALS.get(
        (chain_id, asset), DECIMALS.get(asset, EXTRA_DECIMALS.get(asset, MEME_DECIMALS))
    )


@dataclass
class Transfers:
    market: Market
    clock: Clock
    ledger: Ledger

    def __post_init__(self) -> None:
        self.records: list[dict] = []

    def add(
        self,
        chain_id: str,
        seconds: float,
        frm: str,
        to: str,
        asset: str,
        raw: int,
        token_address: str | None = None,
        usd_price: float | None = None,
    ) -> dict:
        """One transfer; ERC-20 when the asset is not the chain's native coin."""
        native = asset == NATIVE[chain_id]
        if not native and token_address is None:
            token_address = TOKEN_ADDRESSES[chain_id][asset]
        dec = decimals_of(chain_id, asset)
        block = self.clock.block_at(chain_id, seconds)
        tx, log = self.ledger.tx(chain_id, block, 0 if native else 1)
        if native:
            log = 0  # native value transfers have no log
        if usd_price is None and asset in PRICE_OF:
            usd_price = self.market.usd(asset, seconds)
        usd = None if usd_price is None else Decimal(f"{raw / 10**dec * usd_price:.2f}")
        rec = {
            "event_id": deterministic_id(chain_id, tx, log),
            "chain_id": chain_id,
            "tx_hash": tx,
            "block_number": block,
            "log_index": log,
            "from_address": frm,
            "to_address": to,
            "asset": asset,
            "token_address": None if native else token_address,
            "amount_raw": str(raw),
            "decimals": dec,
            "amount_usd": usd,
            "event_time": self.clock.block_time(chain_id, block),
            "_sort": (chain_id, block, log),
        }
        self.records.append(rec)
        return rec

    def add_usd(
        self, chain_id: str, seconds: float, frm: str, to: str, asset: str, usd: float
    ) -> dict:
        dec = decimals_of(chain_id, asset)
        price = UNPRICED_SIZING.get(asset) or self.market.usd(asset, seconds)
        digits = min(dec, 2 if asset in ("USDC", "USDT", "DAI") else 6)
        raw = max(int(usd / price * 10**digits), 1) * 10 ** (dec - digits)
        return self.add(chain_id, seconds, frm, to, asset, raw)


def ordinary_transfers(
    tr: Transfers, rng: np.random.Generator, evm_wallets: list[str], n_tron: int
) -> None:
    span = tr.market.n_minutes * 60.0
    tron = [tron_address(rng) for _ in range(n_tron)]
    for chain_id, (per_day, mix) in ORDINARY.items():
        wallets = tron if chain_id == "tron:mainnet" else evm_wallets
        n = int(rng.poisson(per_day * tr.market.days))
        times = np.sort(rng.uniform(0, span, n))
        assets = rng.choice(list(mix), size=n, p=list(mix.values()))
        sizes = np.clip(rng.lognormal(np.log(400), 1.5, n), 1, 2_000_000)
        pairs = rng.integers(0, len(wallets), (n, 2))
        for s, a, usd, (i, j) in zip(
            times.tolist(), assets.tolist(), sizes.tolist(), pairs.tolist(), strict=True
        ):
            if i == j:
                j = (j + 1) % len(wallets)
            tr.add_usd(chain_id, s, wallets[i], wallets[j], a, usd)


def touch_truth(n: int, rec: dict, listed: str, side: str, note: str, kind: str = "direct") -> dict:
    """The ground truth of transfer ``rec`` touching ``listed`` (on its ``side``), as the n-th."""
    written = rec["from_address"] if side == "from" else rec["to_address"]
    return {
        "id": f"ofac-{n:02d}",
        "kind": kind,
        "chain_id": rec["chain_id"],
        "tx_hash": rec["tx_hash"],
        "event_id": rec["event_id"],
        "event_time": rec["event_time"],
        "from_address": rec["from_address"],
        "to_address": rec["to_address"],
        "asset": rec["asset"],
        "amount_usd": rec["amount_usd"],
        "listed_address": listed,
        "address_as_written": written,
        "listed_side": side,
        "lists": lists_containing(listed),
        "expected_result": expected_result(listed, rec["event_time"]),
        "note": note,
    }


def sanctioned_transfers(
    tr: Transfers, rng: np.random.Generator, customers: list[str]
) -> list[dict]:
    """Transfers touching listed addresses, with the ground truth of each."""
    lists = ofac_lists()
    span = tr.market.n_minutes * 60.0
    eth_now = lists["brave-intl-2025-11-19/ETH"]
    eth_both = listed_in_both("brave-intl-2025-11-19/ETH", "0xB10C-2024-09-27/ETH")
    mixed = sorted(a for a in eth_both if a != a.lower())  # EIP-55 spelled: case tricks show
    usdt_both = listed_in_both("brave-intl-2025-11-19/USDT", "0xB10C-2024-09-27/USDT")
    usdt_only = sorted(
        a for a in usdt_both if a.startswith("0x") and a.lower() not in {e.lower() for e in eth_now}
    )
    tron_listed = sorted(a for a in usdt_both if a.startswith("T"))
    arb = "0x4f47bc496083c727c5fbe3ce9cdf2b0f6496270c"  # listed under ETH, ARB and BSC
    picks = [mixed[int(i)] for i in rng.choice(len(mixed), 4, replace=False)]
    truth: list[dict] = []

    def customer() -> str:
        return customers[int(rng.integers(len(customers)))]

    def when() -> float:
        return float(rng.uniform(0.05, 0.95) * span)

    def record(rec: dict, listed: str, side: str, note: str) -> None:
        truth.append(touch_truth(len(truth) + 1, rec, listed, side, note))

    r = tr.add_usd(ETHEREUM, when(), picks[0], customer(), "ETH", float(rng.uniform(2e3, 5e4)))
    record(r, picks[0], "from", "as listed (EIP-55 mixed case)")
    r = tr.add_usd(
        ETHEREUM,
        when(),
        customer(),
        "0x" + picks[1][2:].upper(),
        "USDC",
        float(rng.uniform(1e3, 2e4)),
    )
    record(r, picks[1], "to", "address upper-cased after 0x")
    r = tr.add_usd(
        ETHEREUM, when(), picks[2].lower(), customer(), "USDT", float(rng.uniform(1e3, 2e4))
    )
    record(r, picks[2], "from", "address lower-cased")
    if usdt_only:
        pick = usdt_only[int(rng.integers(len(usdt_only)))]
        r = tr.add_usd(ETHEREUM, when(), pick, customer(), "USDT", float(rng.uniform(1e3, 2e4)))
        record(r, pick, "from", "EVM address listed only under USDT, not ETH")
    r = tr.add_usd("eip155:42161", when(), arb, customer(), "USDC", float(rng.uniform(1e3, 2e4)))
    record(r, arb, "from", "Arbitrum: EVM addresses are screened on every EVM chain")
    tron_pick = tron_listed[int(rng.integers(len(tron_listed)))]
    r = tr.add_usd(
        "tron:mainnet", when(), tron_pick, tron_address(rng), "USDT", float(rng.uniform(1e3, 3e4))
    )
    record(r, tron_pick, "from", "USDT (TRC-20) on Tron")
    r = tr.add_usd(
        ETHEREUM, when(), customer(), TORNADO_USDC_POOL, "USDC", float(rng.uniform(1e3, 1e4))
    )
    record(
        r,
        TORNADO_USDC_POOL,
        "to",
        "Tornado Cash USDC pool: on the 2024-09 list, delisted by 2025-11",
    )
    # Two hops: listed -> intermediary -> customer, a few hours apart.
    middle, cust = address(rng), customer()
    t1 = float(rng.uniform(0.1, 0.6) * span)
    hop1 = tr.add_usd(ETHEREUM, t1, picks[3], middle, "USDC", float(rng.uniform(5e3, 5e4)))
    record(hop1, picks[3], "from", "first hop of a 2-hop exposure path")
    hop2 = tr.add(
        ETHEREUM,
        t1 + float(rng.uniform(1, 6)) * 3600,
        middle,
        cust,
        "USDC",
        int(hop1["amount_raw"]) * 97 // 100,
    )
    two_hop = touch_truth(
        len(truth) + 1,
        hop2,
        picks[3],
        "upstream",
        "customer wallet 2 hops from a listed address",
        kind="exposure_2hop",
    )
    two_hop.update(address_as_written=picks[3], expected_result="flagged",
                   path=[picks[3], middle, cust],
                   evidence_tx_hashes=[hop1["tx_hash"], hop2["tx_hash"]])  # fmt: skip
    truth.append(two_hop)
    return truth
