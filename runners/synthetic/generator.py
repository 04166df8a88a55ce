"""The generator entry point: market, accounts, DEX, transfers, files and ground truth."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

from runners.synthetic import cases, compliance
from runners.synthetic.accounts import margin_truth, simulate_accounts
from runners.synthetic.assets import PRICE_ASSETS, Clock, iso
from runners.synthetic.dex import simulate_dex
from runners.synthetic.market import depeg_truth, oracle_rows, outage_truth, simulate_market
from runners.synthetic.rng import Ledger, substream
from runners.synthetic.transfers import (
    Transfers,
    ordinary_transfers,
    sanctioned_transfers,
    touch_truth,
)
from runners.synthetic.writer import TopicWriter, write_topic
from schemas.registry import INPUT_TOPICS

FORMATS = ("jsonl", "parquet", "both")
RAW_CHAINLINK = "raw/chainlink_rounds.jsonl"
RAW_PYTH = "raw/pyth_updates.jsonl"
GROUND_TRUTH = "ground_truth.json"


def n_traders(accounts: int) -> int:
    """Ordinary DEX wallets: 300..1000, growing mildly with the number of accounts."""
    return int(np.clip(300 + 2 * accounts, 300, 1000))


def _json_default(o: object) -> str:
    if isinstance(o, datetime):
        return iso(o)
    if isinstance(o, Decimal):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def generate(
    out_dir: str | Path,
    days: int = 7,
    accounts: int = 200,
    seed: int = 7,
    start: datetime = datetime(2025, 1, 6, tzinfo=UTC),
    fmt: str = "jsonl",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Writes the market; returns a summary dict {topic: n_records, ...}. fmt in {"jsonl","parquet","both"}.

    n_records of a topic counts the records in its file: with JSONL that includes the injected bad
    lines (ground_truth.json has the valid counts and the bad ones apart).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if days < 1 or accounts < 1 or seed < 0:
        raise ValueError("days and accounts must be >= 1 and seed >= 0")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    start = start.astimezone(UTC).replace(microsecond=0)
    out = Path(out_dir)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    _remove_stale(out, fmt)
    say = progress or (lambda _msg: None)
    clock = Clock(start)
    started = time.perf_counter()

    def step(msg: str) -> None:
        say(f"{msg} ({time.perf_counter() - started:.1f} s)")

    market = simulate_market(days, seed, start)
    step(
        f"prices: {days} days x {market.n_minutes // days} minutes x {len(PRICE_ASSETS)} assets simulated"
    )
    writers: dict[str, TopicWriter] = {}
    bad_rng = substream(seed, "bad-records")
    n_prices = market.n_minutes * len(PRICE_ASSETS) * 2
    pw = TopicWriter(out, "market.prices.v1", fmt, n_prices, bad_rng)
    n_chainlink = n_pyth = 0
    try:
        with (
            open(out / RAW_CHAINLINK, "w", encoding="utf-8", newline="\n") as fc,
            open(out / RAW_PYTH, "w", encoding="utf-8", newline="\n") as fp,
        ):
            for chainlink, pyth, events in oracle_rows(market, clock):
                if chainlink is not None:
                    fc.write(_dumps(chainlink) + "\n")
                    n_chainlink += 1
                if pyth is not None:
                    fp.write(_dumps(pyth) + "\n")
                    n_pyth += 1
                for e in events:
                    pw.write(e)
    finally:
        pw.close()
    writers["market.prices.v1"] = pw
    step(
        f"oracles: {n_chainlink:,} Chainlink rounds, {n_pyth:,} Pyth updates, {pw.n_valid:,} price events"
    )

    ledger = Ledger(substream(seed, "ledger"))
    acc = simulate_accounts(market, accounts, seed, clock, ledger)
    margins = margin_truth(market, acc, clock)
    step(f"accounts: {len(acc.settlements):,} settlements, {len(margins)} accounts in margin call")

    dex = simulate_dex(market, clock, ledger, seed, n_traders(accounts))
    step(f"dex: {len(dex.trades):,} trades, {len(dex.liquidity):,} liquidity events")

    tr = Transfers(market, clock, ledger)
    crng = substream(seed, "cases")
    wash = cases.wash_case(dex, tr, crng, clock)
    rug = cases.rug_case(dex, tr, crng, clock)
    pump = cases.pump_case(dex, clock)
    sybil = cases.sybil_case(dex, tr, crng, clock)
    trng = substream(seed, "transfers")
    holders = dex.cases["traders"]
    ordinary_transfers(tr, trng, holders, n_tron=80)
    sanctioned = sanctioned_transfers(tr, trng, holders)
    comp_rng = substream(seed, "compliance")
    profiles = compliance.account_profiles(comp_rng, holders, clock)
    extra_profiles, scenario = compliance.scenario(tr, comp_rng, clock)
    profiles += extra_profiles
    sanctioned.append(scenario_funding_truth(tr, scenario, len(sanctioned)))
    step(
        f"transfers: {len(tr.records):,} (incl. case funding and {len(sanctioned)} sanctioned "
        f"touches); {len(profiles)} account profiles"
    )

    for topic, records in (
        ("settlements.v1", acc.settlements),
        ("dex.trades.v1", dex.trades),
        ("liquidity.v1", dex.liquidity),
        ("transfers.v1", tr.records),
        ("accounts.profiles.v1", profiles),
    ):
        records.sort(key=lambda r: (r.get("event_time") or r["updated_at"], *r["_sort"]))
        writers[topic] = write_topic(out, topic, fmt, records, bad_rng)
    step("topic files written")

    truth = {
        "seed": seed,
        "start": iso(start),
        "end": iso(start + timedelta(days=days)),
        "days": days,
        "accounts": accounts,
        "assets": list(PRICE_ASSETS),
        # Genuine records; rejected_updates (valid per contract, refused by the pipeline) apart.
        "counts": {t: writers[t].n_valid for t in INPUT_TOPICS},
        "margin_calls": margins,
        "depegs": depeg_truth(market, clock),
        "oracle_outages": outage_truth(market, clock),
        "wash_trading": [wash],
        "rug_pulls": [rug],
        "pump_and_dumps": [pump],
        "sybil_farms": [sybil],
        "sanctioned_transfers": sanctioned,
        "compliance_scenario": scenario,
        "profiles": {
            "embargoed": [p["account_id"] for p in profiles if p["country"] == "IR"],
            "pep": [p["account_id"] for p in profiles if p["pep"]],
        },
        "bad_records": {t: writers[t].bad_counts() for t in INPUT_TOPICS},
        "bad_record_lines": {t: [list(x) for x in writers[t].bad_lines] for t in INPUT_TOPICS},
        "rejected_updates": {"market.prices.v1": pw.reject_counts()},
        "rejected_update_lines": {"market.prices.v1": [list(x) for x in pw.reject_lines]},
        "conventions": CONVENTIONS,
    }
    (out / GROUND_TRUTH).write_text(
        json.dumps(truth, indent=1, default=_json_default) + "\n", encoding="utf-8"
    )
    step("ground_truth.json written")
    summary: dict[str, int] = {t: writers[t].n_written for t in INPUT_TOPICS}
    summary[RAW_CHAINLINK] = n_chainlink
    summary[RAW_PYTH] = n_pyth
    return summary


CONVENTIONS = {
    "health": "(collateral_usd - borrow_usd) / borrow_usd * 100 at each minute t, counting settlements with "
    "event_time <= t, valued at the mean of the Chainlink and Pyth prices published at t",
    "first_margin_call": "first minute with health < 30",
    "first_liquidation": "first minute with health < 15 (the liquidation settlement follows 2-5 minutes later)",
    "liquidation": "one tx: repay settlements (debt paid by the liquidator) then liquidation settlements "
    "(collateral seized = repaid * 1.05), back to health 45",
    "symbols": "settlements and prices use BTC/ETH; DEX pools and ERC-20 transfers use WBTC/WETH",
    "bad_record_lines": "[1-based line number in <topic>.jsonl, reason]",
    "rejected_updates": "contract-valid price updates the pipeline must refuse (validation rules, "
    "duplicates), by reason; they become dead letters like bad_records",
}


def scenario_funding_truth(tr: Transfers, scenario: dict, n: int) -> dict:
    """The scenario's funding transfer is a direct hit on its listed sender too."""

    rec = next(r for r in tr.records if r["tx_hash"] == scenario["funding_tx"])
    note = "compliance scenario: the listed address funds the intermediary"
    return touch_truth(n + 1, rec, scenario["listed_address"], "from", note)


def _remove_stale(out: Path, fmt: str) -> None:
    """Drop topic files of the other format left by an earlier run (they would not match)."""
    for topic in INPUT_TOPICS:
        for ext in ("jsonl", "parquet"):
            if fmt not in (ext, "both"):
                (out / f"{topic}.{ext}").unlink(missing_ok=True)
