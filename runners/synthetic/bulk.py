"""Bulk history generator: years of 1-minute prices and lending settlements, Parquet by day.

    from runners.synthetic.bulk import generate_history
    generate_history("data/history", start=date(2024, 1, 1), days=730, assets=20, accounts=10_000)

Layout (the backfill reads it)::

    DIR/market.prices.v1/date=YYYY-MM-DD/part-00000.parquet   arrow_schema(PriceEvent)
    DIR/settlements.v1/date=YYYY-MM-DD/part-00000.parquet     arrow_schema(Settlement)
    DIR/feeds.toml        the feed registry of the generated assets (load_registry accepts it)
    DIR/history.json      manifest: arguments, assets, rows per topic per day, totals, wall time

The generator works one day at a time and carries only the end-of-day state (per asset: log
price, volatility regime, stablecoin deviation, Pyth EMA, last Chainlink answer/round/update
minute; per account and asset: collateral and debt in integer units), so memory does not grow
with the number of days. Columns are built with numpy and pyarrow (no per-row Python objects).

Prices: volatile assets follow a one-factor correlated GBM-like walk with a daily AR(1)
volatility regime; the log price mean-reverts weakly to the start level (half-life 1 year) and is
reflected inside [start/100, start*100], far inside the feed bounds;
stablecoins are an AR(1) deviation around 1.0. Pyth publishes every minute (price with a few bps
of noise, confidence, EMA); Chainlink publishes a new round only when the answer moved more than
the feed's deviation threshold since the last round or its heartbeat elapsed.

Settlements: accounts open over time (collateral deposits, then stablecoin/ETH borrows a few
minutes later); an open account acts on a day with probability ACT_PROB (deposit, withdraw,
borrow, repay, keeping health >= SAFE_HEALTH) and is liquidated when its health is below
LIQUIDATION at its minute of the day. Amounts are integer units (cents for stablecoins, 1e-6
otherwise) so balances are exact and never negative.

The Parquet files are byte-identical for the same arguments; history.json also records the
wall time, so it differs between runs.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import signal

from runners.io.files import write_bytes_atomic, write_parquet_atomic
from runners.synthetic.assets import (
    BLOCKS_PER_MINUTE,
    CHAINLINK_DECIMALS,
    CHAINLINK_PHASE_ID,
    CHAINS,
    DECIMALS,
    ETHEREUM,
    START_PRICES,
)
from runners.synthetic.market import OBSERVATION_DELAY_S
from runners.synthetic.rng import substream
from schemas.codegen import arrow_schema
from schemas.events import PriceEvent, Settlement
from transforms.prices.oracles import load_registry

GENERATOR_VERSION = "bulk-history/1"


PRICES_TOPIC = "market.prices.v1"


SETTLEMENTS_TOPIC = "settlements.v1"


PART_FILE = "part-00000.parquet"


MANIFEST = "history.json"


FEEDS_FILE = "feeds.toml"


MAX_ASSETS = 20


MINUTES_PER_DAY = 1440


PRICE_SCHEMA = arrow_schema(PriceEvent)


SETTLEMENT_SCHEMA = arrow_schema(Settlement)


@dataclass(frozen=True)
class AssetSpec:
    symbol: str
    start_price: float
    daily_vol: float  # volatile: daily log-return std; stablecoin: std of the deviation from 1
    decimals: int  # token decimals (settlement amount_raw)
    beta: float = 0.0  # loading on the common market factor
    stable: bool = False


# The 5 real assets first (real feed ids from transforms/prices/config/feeds.toml), then 15 synthetic.
ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("BTC", START_PRICES["BTC"], 0.0395, DECIMALS["BTC"], 0.80),
    AssetSpec("ETH", START_PRICES["ETH"], 0.0526, DECIMALS["ETH"], 0.85),
    AssetSpec("USDC", 1.0, 0.0008, DECIMALS["USDC"], stable=True),
    AssetSpec("USDT", 1.0, 0.0010, DECIMALS["USDT"], stable=True),
    AssetSpec("DAI", 1.0, 0.0012, DECIMALS["DAI"], stable=True),
    AssetSpec("SOL", 190.0, 0.060, 9, 0.75),
    AssetSpec("BNB", 700.0, 0.035, 18, 0.65),
    AssetSpec("XRP", 2.40, 0.055, 6, 0.60),
    AssetSpec("ADA", 1.05, 0.055, 6, 0.70),
    AssetSpec("AVAX", 40.0, 0.060, 18, 0.75),
    AssetSpec("LINK", 22.0, 0.055, 18, 0.75),
    AssetSpec("DOT", 7.0, 0.055, 10, 0.70),
    AssetSpec("POL", 0.50, 0.060, 18, 0.70),
    AssetSpec("UNI", 14.0, 0.060, 18, 0.70),
    AssetSpec("LTC", 110.0, 0.045, 8, 0.65),
    AssetSpec("ATOM", 6.5, 0.055, 6, 0.70),
    AssetSpec("AAVE", 320.0, 0.060, 18, 0.70),
    AssetSpec("ARB", 0.80, 0.065, 18, 0.75),
    AssetSpec("OP", 1.90, 0.065, 18, 0.75),
    AssetSpec("MKR", 1500.0, 0.055, 18, 0.65),
)


REAL_ASSETS = ("BTC", "ETH", "USDC", "USDT", "DAI")


STABLE_PHI_DAILY = {"USDC": 0.816798, "USDT": 0.714855, "DAI": 0.459164}  # calibration.py


STABLE_CLIP = 0.025


MEAN_REVERSION_HALF_LIFE_DAYS = 365  # pull of the log price back towards the start level


REFLECT_LOG = float(np.log(100.0))  # log price stays within start/100 .. start*100


SYNTHETIC_MAX_FACTOR = 1000  # feed max_price = start * this (well beyond the reflection)


VOL_REGIME_PHI, VOL_REGIME_SD = 0.94, 0.12  # daily AR(1) of the log volatility multiplier


PYTH_EXPO = -8


PYTH_NOISE_BPS = {True: 1.0, False: 3.0}  # by stable


PYTH_CONF_BPS = {True: 1.0, False: 3.0}


PYTH_EMA_SPAN_MINUTES = 60


MAX_CONF_RATIO = 0.01  # well inside the registry's 0.02


SYNTHETIC_CHAINLINK = {"heartbeat_s": 3600, "deviation_pct": 0.5}


PYTH_HEARTBEAT_S = 60


ROUND_BASE = CHAINLINK_PHASE_ID << 64


ROUND_HI, ROUND_LO = divmod(ROUND_BASE, 10**12)  # round ids exceed int64: hi digits + 12 low


# Accounts
OPEN_ON_DAY0 = 0.2  # share of accounts opened on the first day; the rest over the first half


ACT_PROB = 0.3  # chance an open account acts on a given day


SAFE_HEALTH = 60.0


LIQUIDATION = 15.0


LIQUIDATION_TARGET = 45.0


LIQUIDATION_BONUS = 0.05


VENUES = ("aave_v3", "compound_v3", "maker")


VENUE_P = (0.5, 0.25, 0.25)


VENUE_DEBT = {
    "aave_v3": ("USDC", "USDT", "DAI", "ETH"),
    "compound_v3": ("USDC", "ETH"),
    "maker": ("DAI",),
}


KINDS = ("deposit", "withdraw", "borrow", "repay", "liquidation")


DEPOSIT, WITHDRAW, BORROW, REPAY, LIQUIDATE = range(5)


MAX_COLL, MAX_DEBT = 3, 2


# --------------------------------------------------------------------------------- helpers
def _feed_hex(kind: str, symbol: str, n_hex: int) -> str:
    return hashlib.sha256(f"defi-risk-synthetic:{kind}:{symbol}".encode()).hexdigest()[:n_hex]


def feed_entries(assets: tuple[AssetSpec, ...]) -> list[dict]:
    """Registry entries of the generated assets: real feeds copied, synthetic ones made up."""
    real = load_registry()
    entries: list[dict] = []
    for source in ("chainlink", "pyth"):
        for a in assets:
            feed = real.for_asset(a.symbol, source) if a.symbol in REAL_ASSETS else None
            if feed is not None:
                e = {"source": source, "asset": a.symbol, "feed_id": feed.feed_id}
                if source == "chainlink":
                    e |= {
                        "chain_id": feed.chain_id,
                        "decimals": feed.decimals,
                        "heartbeat_s": feed.heartbeat_s,
                        "deviation_pct": feed.deviation_pct,
                        "min_price": str(feed.min_price),
                        "max_price": str(feed.max_price),
                    }
                else:
                    e["heartbeat_s"] = feed.heartbeat_s
            elif source == "chainlink":
                e = {
                    "source": source,
                    "asset": a.symbol,
                    "feed_id": "0x" + _feed_hex("chainlink", a.symbol, 40),
                    "chain_id": ETHEREUM,
                    "decimals": CHAINLINK_DECIMALS,
                    **SYNTHETIC_CHAINLINK,
                    "min_price": "0.00000001",
                    "max_price": str(int(a.start_price * SYNTHETIC_MAX_FACTOR) + 1),
                }
            else:
                e = {
                    "source": source,
                    "asset": a.symbol,
                    "feed_id": "0x" + _feed_hex("pyth", a.symbol, 64),
                    "heartbeat_s": PYTH_HEARTBEAT_S,
                }
            entries.append(e)
    return entries


def registry_toml(entries: list[dict]) -> str:
    real = load_registry()
    lines = [
        "# Feed registry of a generated history (runners/synthetic/bulk.py); same format as",
        "# transforms/prices/config/feeds.toml. BTC ETH USDC USDT DAI keep their real feed ids; the",
        "# other assets have deterministic made-up ids.",
        "",
        "[defaults]",
        f"grace_s = {real.grace_s}",
        f"max_conf_ratio = {real.max_conf_ratio}",
        f"max_source_deviation_bps = {real.max_source_deviation_bps}",
    ]
    for e in entries:
        lines += ["", "[[feed]]"]
        for k, v in e.items():
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def _dec9_from_e8(mantissa: np.ndarray) -> pa.Array:
    """decimal128(38, 9) from int64 mantissas at 1e-8, built from buffers: exact and fast."""
    unscaled = mantissa.astype(np.int64) * 10
    buf = np.empty((len(unscaled), 2), dtype=np.int64)
    buf[:, 0] = unscaled
    buf[:, 1] = unscaled >> 63  # sign extension of the 128-bit two's complement
    return pa.Array.from_buffers(pa.decimal128(38, 9), len(unscaled), [None, pa.py_buffer(buf)])


def _ts(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype(np.int64), type=pa.timestamp("us", tz="UTC"))


def _hex_strings(raw: bytes, width: int) -> pa.Array:
    """Fixed-width hex strings of consecutive `width`-byte chunks, without per-row objects."""
    n = len(raw) // width
    data = binascii.hexlify(raw)
    offsets = np.arange(0, 2 * width * n + 1, 2 * width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _const(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([value])
    ).cast(pa.string())


def _pick(values: list[str], idx: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values, type=pa.string()), pa.array(idx.astype(np.int32)))


def _join(*parts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _check_args(start: date | datetime, days: int, assets: int, accounts: int, seed: int) -> date:
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be an integer >= 1, got {days!r}")
    if not isinstance(assets, int) or not 1 <= assets <= MAX_ASSETS:
        raise ValueError(f"assets must be an integer in 1..{MAX_ASSETS}, got {assets!r}")
    if not isinstance(accounts, int) or accounts < 1:
        raise ValueError(f"accounts must be an integer >= 1, got {accounts!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError("start must be a date or a timezone-aware (UTC) datetime")
        start = start.astimezone(UTC)
        if start.time() != datetime.min.time():
            raise ValueError(f"start must be midnight UTC (partitions are days), got {start}")
        return start.date()
    if isinstance(start, date):
        return start
    raise ValueError(f"start must be a date, got {type(start).__name__}")


# ---------------------------------------------------------------------------------- prices
class PriceModel:
    """Per-asset minute prices and oracle updates, one day at a time (state carried)."""

    def __init__(self, specs: tuple[AssetSpec, ...], entries: list[dict], seed: int):
        self.specs = specs
        self.n = len(specs)
        self.stable = np.array([s.stable for s in specs])
        self.vol_idx = np.flatnonzero(~self.stable)
        self.stable_idx = np.flatnonzero(self.stable)
        self.rng = substream(seed, "history-prices")
        self.orng = substream(seed, "history-oracles")
        init = substream(seed, "history-init")
        # volatile state: unreflected log price relative to the start, log-vol regime
        self.x = np.zeros(len(self.vol_idx))
        self.log_vol = init.standard_normal(len(self.vol_idx)) * VOL_REGIME_SD
        self.sigma = np.array([specs[i].daily_vol for i in self.vol_idx])
        self.beta = np.array([specs[i].beta for i in self.vol_idx])
        self.start_log = np.log([specs[i].start_price for i in self.vol_idx])
        self.kappa = np.log(2) / (MEAN_REVERSION_HALF_LIFE_DAYS * MINUTES_PER_DAY)
        # stable state: AR(1) deviation
        self.phi = np.array(
            [
                STABLE_PHI_DAILY.get(specs[i].symbol, 0.6) ** (1 / MINUTES_PER_DAY)
                for i in self.stable_idx
            ]
        )
        self.dev_std = np.array([specs[i].daily_vol for i in self.stable_idx])
        self.dev = init.standard_normal(len(self.stable_idx)) * self.dev_std * 0.5
        # oracle state
        self.ema_zi: np.ndarray | None = None
        cl = {e["asset"]: e for e in entries if e["source"] == "chainlink"}
        py = {e["asset"]: e for e in entries if e["source"] == "pyth"}
        self.cl_feed = [cl[s.symbol]["feed_id"] for s in specs]
        self.cl_chain = [cl[s.symbol]["chain_id"] for s in specs]
        self.py_feed = ["0x" + py[s.symbol]["feed_id"].lower().removeprefix("0x") for s in specs]
        self.hb_min = np.array([cl[s.symbol]["heartbeat_s"] // 60 for s in specs])
        self.dev_pct = np.array([cl[s.symbol]["deviation_pct"] for s in specs])
        rounds = substream(seed, "history-chainlink-rounds")
        self.next_round = rounds.integers(20_000, 40_000, self.n)
        self.last_answer = np.zeros(self.n, dtype=np.int64)
        self.last_update = np.full(self.n, -(10**9), dtype=np.int64)  # global minute
        self.first_update = np.ones(self.n, dtype=bool)
        noise = np.array([PYTH_NOISE_BPS[bool(s)] for s in self.stable])
        conf = np.array([PYTH_CONF_BPS[bool(s)] for s in self.stable])
        self.noise_bps, self.conf_bps = noise, conf
        symbols = [s.symbol for s in specs]
        self.pyth_prefix = [f"pyth:{s}:" for s in symbols]
        self.cl_prefix = [f"chainlink:{s}:" for s in symbols]
        self.symbols = symbols

    def day_prices(self) -> np.ndarray:
        """True minute prices of the next day, shape (1440, n); advances the state."""
        m = MINUTES_PER_DAY
        price = np.empty((m, self.n))
        if len(self.vol_idx):
            self.log_vol = VOL_REGIME_PHI * self.log_vol + self.rng.standard_normal(
                len(self.vol_idx)
            ) * VOL_REGIME_SD * np.sqrt(1 - VOL_REGIME_PHI**2)
            s_min = self.sigma * np.exp(self.log_vol - VOL_REGIME_SD**2 / 2) / np.sqrt(m)
            f = self.rng.standard_normal((m, 1))
            e = self.rng.standard_normal((m, len(self.vol_idx)))
            z = self.beta * f + np.sqrt(1 - self.beta**2) * e
            # log price: an OU around the start level with a long half-life (GBM-like within
            # days and weeks; keeps a multi-year path in a realistic range)
            keep = 1.0 - self.kappa
            path = signal.lfilter(
                [1.0], [1.0, -keep], z * s_min, axis=0, zi=keep * self.x[None, :]
            )[0]
            self.x = path[-1].copy()
            # triangle-wave reflection into [-L, L]: continuous, identity away from the walls
            lw = REFLECT_LOG
            refl = lw - np.abs(np.mod(path + lw, 4 * lw) - 2 * lw)
            price[:, self.vol_idx] = np.exp(self.start_log + refl)
        if len(self.stable_idx):
            k = len(self.stable_idx)
            innov = self.rng.standard_normal((m, k)) * self.dev_std * np.sqrt(1 - self.phi**2)
            dev = np.empty((m, k))
            for j in range(k):  # k <= 3 columns; lfilter is vectorised over the minutes
                dev[:, j] = signal.lfilter(
                    [1.0], [1.0, -self.phi[j]], innov[:, j], zi=[self.phi[j] * self.dev[j]]
                )[0]
            self.dev = dev[-1].copy()
            price[:, self.stable_idx] = 1.0 + np.clip(dev, -STABLE_CLIP, STABLE_CLIP)
        return price

    def chainlink_minutes(self, answers: np.ndarray, day: int) -> list[np.ndarray]:
        """Per asset, the minutes of the day with a new round (deviation or heartbeat)."""
        out = []
        base = day * MINUTES_PER_DAY
        for a in range(self.n):
            col = answers[:, a]
            hb, thr = int(self.hb_min[a]), self.dev_pct[a] / 100.0
            hits: list[int] = []
            pos = 0
            if self.first_update[a]:
                hits.append(0)
                ref, last, pos = int(col[0]), 0, 1
                self.first_update[a] = False
            else:
                ref, last = int(self.last_answer[a]), int(self.last_update[a] - base)
            while pos < MINUTES_PER_DAY:
                due = last + hb  # heartbeat elapsed at this minute
                end = min(MINUTES_PER_DAY, max(due, pos))
                seg = col[pos:end]
                moved = np.flatnonzero(np.abs(seg - ref) > ref * thr)
                if moved.size:
                    k = pos + int(moved[0])
                elif due < MINUTES_PER_DAY:
                    k = max(due, pos)
                else:
                    break
                hits.append(k)
                ref, last, pos = int(col[k]), k, k + 1
            self.last_answer[a] = ref
            self.last_update[a] = last + base
            out.append(np.asarray(hits, dtype=np.int64))
        return out

    def day_table(self, price: np.ndarray, day: int, start_s: int) -> pa.Table:
        m, n = price.shape
        scale = 10.0**-PYTH_EXPO
        answers = np.rint(price * 10.0**CHAINLINK_DECIMALS).astype(np.int64)
        pyth_f = price * (1 + self.orng.standard_normal(price.shape) * self.noise_bps * 1e-4)
        conf_f = (
            pyth_f * self.conf_bps * 1e-4 * np.exp(self.orng.standard_normal(price.shape) * 0.35)
        )
        conf_f = np.minimum(conf_f, pyth_f * MAX_CONF_RATIO)
        a = 2 / (PYTH_EMA_SPAN_MINUTES + 1)
        if self.ema_zi is None:
            self.ema_zi = (1 - a) * pyth_f[:1]
        ema, self.ema_zi = signal.lfilter([a], [1, a - 1], pyth_f, axis=0, zi=self.ema_zi)
        p_m = np.maximum(np.rint(pyth_f * scale), 1).astype(np.int64).ravel()
        c_m = np.maximum(np.rint(conf_f * scale), 1).astype(np.int64).ravel()
        e_m = np.maximum(np.rint(ema * scale), 1).astype(np.int64).ravel()

        minute = np.repeat(np.arange(m, dtype=np.int64), n)
        asset = np.tile(np.arange(n, dtype=np.int64), m)
        pub_s = start_s + 60 * (day * MINUTES_PER_DAY + minute)
        pub_us = pub_s * 1_000_000
        n_py = len(minute)

        # Chainlink rounds
        hits = self.chainlink_minutes(answers, day)
        cl_min = np.concatenate(hits)
        cl_asset = np.concatenate([np.full(len(h), a, dtype=np.int64) for a, h in enumerate(hits)])
        agg = np.concatenate(
            [self.next_round[a] + np.arange(len(h)) for a, h in enumerate(hits)]
        ).astype(np.int64)
        for a, h in enumerate(hits):
            self.next_round[a] += len(h)
        n_cl = len(cl_min)
        cl_pub_us = (start_s + 60 * (day * MINUTES_PER_DAY + cl_min)) * 1_000_000
        round_str = _join(
            _const(str(ROUND_HI), n_cl),
            pc.utf8_lpad(pc.cast(pa.array(ROUND_LO + agg), pa.string()), width=12, padding="0"),
        )

        # Rows: pyth grid then chainlink rounds, sorted by (time, asset, source)
        t_min = np.concatenate([minute, cl_min])
        t_asset = np.concatenate([asset, cl_asset])
        t_src = np.concatenate([np.ones(n_py, dtype=np.int64), np.zeros(n_cl, dtype=np.int64)])
        order = np.lexsort((t_src, t_asset, t_min))

        py_ts_str = pc.cast(pa.array(pub_s), pa.string())
        null_str = pa.nulls(n_py, pa.string())
        null_ts = pa.nulls(n_py, pa.timestamp("us", tz="UTC"))
        null_dec = pa.nulls(n_cl, pa.decimal128(38, 9))
        dly = OBSERVATION_DELAY_S
        cols = {
            "event_id": pa.concat_arrays(
                [
                    _join(_pick(self.pyth_prefix, asset), py_ts_str),
                    _join(_pick(self.cl_prefix, cl_asset), round_str),
                ]
            ),
            "asset": pa.concat_arrays([_pick(self.symbols, asset), _pick(self.symbols, cl_asset)]),
            "quote": _const("USD", n_py + n_cl),
            "source": pa.concat_arrays([_const("pyth", n_py), _const("chainlink", n_cl)]),
            "price": pa.concat_arrays(
                [_dec9_from_e8(p_m), _dec9_from_e8(answers[cl_min, cl_asset])]
            ),
            "confidence": pa.concat_arrays([_dec9_from_e8(c_m), null_dec]),
            "publish_time": _ts(np.concatenate([pub_us, cl_pub_us])),
            "feed_id": pa.concat_arrays(
                [_pick(self.py_feed, asset), _pick(self.cl_feed, cl_asset)]
            ),
            "round_id": pa.concat_arrays([null_str, round_str]),
            "answered_in_round": pa.concat_arrays([null_str, round_str]),
            "started_at": pa.concat_arrays([null_ts, _ts(cl_pub_us)]),
            "ema_price": pa.concat_arrays([_dec9_from_e8(e_m), null_dec]),
            "observed_at": _ts(
                np.concatenate(
                    [pub_us + dly["pyth"] * 1_000_000, cl_pub_us + dly["chainlink"] * 1_000_000]
                )
            ),
            "chain_id": pa.concat_arrays([null_str, _pick(self.cl_chain, cl_asset)]),
        }
        table = pa.Table.from_arrays(list(cols.values()), schema=PRICE_SCHEMA)
        return table.take(pa.array(order))


# ------------------------------------------------------------------------------- accounts
class AccountBook:
    """Plans and positions of all accounts (integer units per account and asset)."""

    def __init__(self, specs: tuple[AssetSpec, ...], n_accounts: int, days: int, seed: int):
        self.specs = specs
        self.n_assets = len(specs)
        self.n = n_accounts
        rng = substream(seed, "history-accounts")
        self.rng = substream(seed, "history-settlements")
        self.tx_rng = substream(seed, "history-tx-hashes")
        symbols = [s.symbol for s in specs]
        self.symbols = symbols
        self.unit_digits = np.array(
            [min(s.decimals, 2 if s.stable else 6) for s in specs], dtype=np.int64
        )
        self.unit = 10.0 ** -self.unit_digits.astype(np.float64)  # human qty of one unit
        self.raw_suffix = [
            "0" * (s.decimals - int(d)) for s, d in zip(specs, self.unit_digits, strict=True)
        ]
        self.decimals = np.array([s.decimals for s in specs], dtype=np.int64)
        # opening time: a share on day 0, the rest spread over the first half of the period
        spread = max(1, days // 2) * MINUTES_PER_DAY
        day0 = rng.random(n_accounts) < OPEN_ON_DAY0
        opened_at = np.where(day0, 0, rng.integers(0, spread, n_accounts))
        self.open_day = opened_at // MINUTES_PER_DAY
        self.open_minute = np.minimum(opened_at % MINUTES_PER_DAY, MINUTES_PER_DAY - 10)
        self.venue = rng.choice(len(VENUES), size=n_accounts, p=VENUE_P)
        vol = [i for i, s in enumerate(specs) if not s.stable]
        stables = [i for i, s in enumerate(specs) if s.stable]
        weights = np.array([1.0 / (1 + k) for k in range(len(vol))])
        weights /= weights.sum()
        self.coll = np.full((n_accounts, MAX_COLL), -1, dtype=np.int64)
        self.debt_assets = np.full((n_accounts, MAX_DEBT), -1, dtype=np.int64)
        idx_of = {s: i for i, s in enumerate(symbols)}
        for i in range(n_accounts):  # one-off planning, O(accounts)
            k = min(len(vol), int(rng.choice(3, p=[0.5, 0.3, 0.2])) + 1)
            chosen = [vol[j] for j in rng.choice(len(vol), size=k, replace=False, p=weights)]
            if stables and rng.random() < 0.15 and k < MAX_COLL:
                chosen.append(stables[int(rng.integers(len(stables)))])
            self.coll[i, : len(chosen)] = chosen
            cands = [idx_of[s] for s in VENUE_DEBT[VENUES[self.venue[i]]] if s in idx_of]
            cands = (
                [c for c in cands if c not in chosen]
                or [c for c in (stables + [idx_of.get("ETH", -1)]) if c >= 0 and c not in chosen]
                or [chosen[0]]
            )
            kd = 2 if len(cands) > 1 and rng.random() < 0.25 else 1
            self.debt_assets[i, :kd] = rng.choice(cands, size=kd, replace=False)
        self.n_coll = (self.coll >= 0).sum(axis=1)
        self.n_debt = (self.debt_assets >= 0).sum(axis=1)
        self.coll_u = np.zeros((n_accounts, self.n_assets), dtype=np.int64)
        self.debt_u = np.zeros((n_accounts, self.n_assets), dtype=np.int64)
        self.account_ids = [f"acct-{i + 1:05d}" for i in range(n_accounts)]

    def _units(self, usd: np.ndarray, px: np.ndarray, asset: np.ndarray) -> np.ndarray:
        return np.floor(usd / px / self.unit[asset]).astype(np.int64)

    def day(self, price: np.ndarray, day: int, start_s: int) -> pa.Table:
        """The day's settlements (sorted by time), applied to the positions."""
        rng = self.rng
        rows: list[tuple[np.ndarray, ...]] = []  # (acct, asset, kind, minute, units, action, sub)
        n_action = 0

        def add(acct, asset, kind, minute, units, action, sub) -> None:
            keep = units > 0
            rows.append(
                (
                    acct[keep],
                    asset[keep],
                    np.full(int(keep.sum()), kind, dtype=np.int64),
                    minute[keep],
                    units[keep],
                    action[keep],
                    np.broadcast_to(sub, keep.shape)[keep],
                )
            )

        # 1. accounts opening today: deposits, then borrows 1-5 minutes later
        new = np.flatnonzero(self.open_day == day)
        if new.size:
            mm = self.open_minute[new]
            total = np.clip(rng.lognormal(np.log(50_000), 1.1, new.size), 1_000, 5_000_000)
            g = rng.gamma(2.0, size=(new.size, MAX_COLL)) * (self.coll[new] >= 0)
            share = g / g.sum(axis=1, keepdims=True)
            act = n_action + np.arange(new.size)
            n_action += new.size
            for j in range(MAX_COLL):
                ok = self.coll[new, j] >= 0
                acc, asset = new[ok], self.coll[new[ok], j]
                units = self._units(total[ok] * share[ok, j], price[mm[ok], asset], asset)
                self.coll_u[acc, asset] += units
                add(acc, asset, DEPOSIT, mm[ok], units, act[ok], j)
            bm = mm + rng.integers(1, 6, new.size)
            act_b = n_action + np.arange(new.size)
            n_action += new.size
            coll_usd = (self.coll_u[new] * self.unit * price[bm]).sum(axis=1)
            debt_usd = coll_usd / (1 + rng.uniform(80, 250, new.size) / 100)
            g = rng.gamma(2.0, size=(new.size, MAX_DEBT)) * (self.debt_assets[new] >= 0)
            share = g / g.sum(axis=1, keepdims=True)
            for j in range(MAX_DEBT):
                ok = self.debt_assets[new, j] >= 0
                acc, asset = new[ok], self.debt_assets[new[ok], j]
                units = self._units(debt_usd[ok] * share[ok, j], price[bm[ok], asset], asset)
                self.debt_u[acc, asset] += units
                add(acc, asset, BORROW, bm[ok], units, act_b[ok], j)

        # 2. accounts opened before today: liquidation when unhealthy, else an occasional action
        old = np.flatnonzero(self.open_day < day)
        if old.size:
            minute = rng.integers(0, MINUTES_PER_DAY, old.size)
            acts = rng.random(old.size) < ACT_PROB
            r = rng.random(old.size)
            size = rng.uniform(0.03, 0.3, old.size)
            slot = rng.random(old.size)
            px = price[minute]  # (k, n_assets)
            cv = self.coll_u[old] * self.unit * px  # USD per asset
            dv = self.debt_u[old] * self.unit * px
            c, b = cv.sum(axis=1), dv.sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                health = np.where(b > 1e-9, (c - b) / np.maximum(b, 1e-300) * 100, np.inf)
            liq = health < LIQUIDATION
            act_id = n_action + np.arange(old.size)
            n_action += old.size

            # liquidations: repay debt pro rata, seize collateral * (1 + bonus) pro rata
            li = np.flatnonzero(liq)
            if li.size:
                bl, cl = b[li], c[li]
                repay = ((1 + LIQUIDATION_TARGET / 100) * bl - cl) / (
                    LIQUIDATION_TARGET / 100 - LIQUIDATION_BONUS
                )
                repay = np.clip(
                    np.minimum(np.minimum(repay, bl), cl / (1 + LIQUIDATION_BONUS)), 0, None
                )
                frac_d = np.where(bl > 0, repay / np.maximum(bl, 1e-300), 0)[:, None]
                frac_c = np.where(
                    cl > 0, repay * (1 + LIQUIDATION_BONUS) / np.maximum(cl, 1e-300), 0
                )
                frac_c = np.minimum(frac_c, 1.0)[:, None]
                acc = old[li]
                rep_u = np.minimum(
                    np.floor(self.debt_u[acc] * frac_d).astype(np.int64), self.debt_u[acc]
                )
                sei_u = np.minimum(
                    np.floor(self.coll_u[acc] * frac_c).astype(np.int64), self.coll_u[acc]
                )
                self.debt_u[acc] -= rep_u
                self.coll_u[acc] -= sei_u
                assets = np.arange(self.n_assets)
                for units, kind, sub0 in ((rep_u, REPAY, 0), (sei_u, LIQUIDATE, self.n_assets)):
                    ai, aj = np.nonzero(units)
                    add(
                        acc[ai],
                        assets[aj],
                        kind,
                        minute[li][ai],
                        units[ai, aj],
                        act_id[li][ai],
                        sub0 + aj,
                    )

            normal = acts & ~liq
            # deposit
            sel = np.flatnonzero(normal & (r < 0.3))
            if sel.size:
                acc = old[sel]
                j = np.floor(slot[sel] * self.n_coll[acc]).astype(np.int64)
                asset = self.coll[acc, j]
                usd = np.maximum(c[sel], 1000.0) * size[sel]
                units = self._units(usd, px[sel, asset], asset)
                self.coll_u[acc, asset] += units
                add(acc, asset, DEPOSIT, minute[sel], units, act_id[sel], 0)
            # withdraw, never below SAFE_HEALTH
            sel = np.flatnonzero(normal & (r >= 0.3) & (r < 0.5))
            if sel.size:
                acc = old[sel]
                j = np.floor(slot[sel] * self.n_coll[acc]).astype(np.int64)
                asset = self.coll[acc, j]
                held = self.coll_u[acc, asset]
                value = held * self.unit[asset] * px[sel, asset]
                room = np.where(b[sel] > 0, c[sel] - (1 + SAFE_HEALTH / 100) * b[sel], c[sel])
                usd = np.minimum(value * size[sel], room)
                units = self._units(np.maximum(usd, 0), px[sel, asset], asset)
                units = np.where(units >= held * 0.999, held, np.minimum(units, held))
                units = np.where(usd > 0.005 * c[sel], units, 0)
                self.coll_u[acc, asset] -= units
                add(acc, asset, WITHDRAW, minute[sel], units, act_id[sel], 0)
            # borrow, never below SAFE_HEALTH
            sel = np.flatnonzero(normal & (r >= 0.5) & (r < 0.75))
            if sel.size:
                acc = old[sel]
                j = np.floor(slot[sel] * self.n_debt[acc]).astype(np.int64)
                asset = self.debt_assets[acc, j]
                room = c[sel] / (1 + SAFE_HEALTH / 100) - b[sel]
                usd = np.minimum(np.maximum(b[sel], 0.2 * c[sel]) * size[sel], room)
                units = np.where(
                    usd > 0.005 * c[sel], self._units(np.maximum(usd, 0), px[sel, asset], asset), 0
                )
                self.debt_u[acc, asset] += units
                add(acc, asset, BORROW, minute[sel], units, act_id[sel], 0)
            # repay
            sel = np.flatnonzero(normal & (r >= 0.75))
            if sel.size:
                acc = old[sel]
                j = np.floor(slot[sel] * self.n_debt[acc]).astype(np.int64)
                asset = self.debt_assets[acc, j]
                owed = self.debt_u[acc, asset]
                units = np.floor(owed * np.minimum(size[sel] * 2, 1.0)).astype(np.int64)
                units = np.where(units >= owed * 0.999, owed, np.minimum(units, owed))
                self.debt_u[acc, asset] -= units
                add(acc, asset, REPAY, minute[sel], units, act_id[sel], 0)

        return self._table(rows, n_action, day, start_s)

    def _table(
        self, rows: list[tuple[np.ndarray, ...]], n_action: int, day: int, start_s: int
    ) -> pa.Table:
        if rows:
            acct, asset, kind, minute, units, action, sub = (
                np.concatenate(c) for c in zip(*rows, strict=True)
            )
        else:
            acct = asset = kind = minute = units = action = sub = np.zeros(0, dtype=np.int64)
        n = len(acct)
        if n == 0:
            return SETTLEMENT_SCHEMA.empty_table()
        order = np.lexsort((sub, action, minute))
        acct, asset, kind, minute, units, action = (
            x[order] for x in (acct, asset, kind, minute, units, action)
        )
        # one tx per action; log indexes count up within each block (= minute)
        tx_of_action = _hex_strings(self.tx_rng.bytes(32 * max(n_action, 1)), 32)
        new_block = np.r_[True, minute[1:] != minute[:-1]]
        starts = np.flatnonzero(new_block)
        log_index = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        g = day * MINUTES_PER_DAY + minute
        block = CHAINS[ETHEREUM].base_block + BLOCKS_PER_MINUTE * g
        event_us = (start_s + 60 * g) * 1_000_000
        block_s = pc.cast(pa.array(block), pa.string())
        cols = [
            _join(
                _const(f"settlement:{ETHEREUM}:", n),
                block_s,
                _const(":", n),
                pc.cast(pa.array(log_index), pa.string()),
            ),
            _pick(self.account_ids, acct),
            _pick(list(VENUES), self.venue[acct]),
            _const(ETHEREUM, n),
            _pick(list(KINDS), kind),
            _pick(self.symbols, asset),
            _join(pc.cast(pa.array(units), pa.string()), _pick(self.raw_suffix, asset)),
            pa.array(self.decimals[asset]),
            _join(_const("0x", n), pc.take(tx_of_action, pa.array(action))),
            pa.array(block),
            pa.array(log_index, pa.int64()),
            pa.nulls(n, pa.int64()),  # tx_index: the log index orders the block already
            _ts(event_us),
        ]
        return pa.Table.from_arrays(cols, schema=SETTLEMENT_SCHEMA)


# ----------------------------------------------------------------------------------- driver
def _remove_stale(out: Path, keep: set[str]) -> None:
    """Drop day partitions of an earlier, longer or shifted run (the backfill would read them)."""
    for topic in (PRICES_TOPIC, SETTLEMENTS_TOPIC):
        root = out / topic
        if not root.is_dir():
            continue
        for part in root.glob("date=*"):
            if part.is_dir() and part.name not in keep:
                shutil.rmtree(part)


def generate_history(
    out_dir: str | Path,
    start: date | datetime = date(2024, 1, 1),
    days: int = 730,
    assets: int = 20,
    accounts: int = 10_000,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
    progress_every: int = 30,
) -> dict:
    """Write the history day by day (bounded memory); returns the manifest (also history.json)."""
    first_day = _check_args(start, days, assets, accounts, seed)
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = ASSETS[:assets]
    entries = feed_entries(specs)
    write_bytes_atomic(registry_toml(entries).encode("utf-8"), out / FEEDS_FILE)
    dates = [(first_day + timedelta(days=d)).isoformat() for d in range(days)]
    _remove_stale(out, {f"date={d}" for d in dates})
    start_s = int(datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC).timestamp())

    prices = PriceModel(specs, entries, seed)
    book = AccountBook(specs, accounts, days, seed)
    per_day: dict[str, dict[str, int]] = {PRICES_TOPIC: {}, SETTLEMENTS_TOPIC: {}}
    total_rows = total_bytes = 0
    every = max(1, progress_every)
    for d, day_str in enumerate(dates):
        price = prices.day_prices()
        pt = prices.day_table(price, d, start_s)
        st = book.day(price, d, start_s)
        part = f"date={day_str}"
        total_bytes += write_parquet_atomic(pt, out / PRICES_TOPIC / part / PART_FILE)
        total_bytes += write_parquet_atomic(st, out / SETTLEMENTS_TOPIC / part / PART_FILE)
        per_day[PRICES_TOPIC][day_str] = pt.num_rows
        per_day[SETTLEMENTS_TOPIC][day_str] = st.num_rows
        total_rows += pt.num_rows + st.num_rows
        if (d + 1) % every == 0 or d + 1 == days:
            el = time.perf_counter() - started
            rate = total_rows / el if el > 0 else 0.0
            eta = el / (d + 1) * (days - d - 1)
            say(
                f"day {d + 1}/{days} ({day_str}): {total_rows:,} rows, {rate:,.0f} rows/s, "
                f"{total_bytes / 1e6:,.0f} MB, ETA {eta:.0f} s"
            )

    wall = time.perf_counter() - started
    totals = {t: sum(v.values()) for t, v in per_day.items()}
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "start": first_day.isoformat(),
        "end": (first_day + timedelta(days=days)).isoformat(),
        "days": days,
        "assets": [
            {
                "symbol": s.symbol,
                "start_price": s.start_price,
                "daily_vol": s.daily_vol,
                "decimals": s.decimals,
                "stablecoin": s.stable,
                "real_feeds": s.symbol in REAL_ASSETS,
            }
            for s in specs
        ],
        "accounts": accounts,
        "seed": seed,
        "layout": {
            PRICES_TOPIC: f"{PRICES_TOPIC}/date=YYYY-MM-DD/{PART_FILE}",
            SETTLEMENTS_TOPIC: f"{SETTLEMENTS_TOPIC}/date=YYYY-MM-DD/{PART_FILE}",
            "feeds": FEEDS_FILE,
        },
        "rows_per_day": per_day,
        "rows": totals,
        "total_rows": sum(totals.values()),
        "bytes": total_bytes,
        "wall_time_s": round(wall, 3),
    }
    write_bytes_atomic((json.dumps(manifest, indent=1) + "\n").encode("utf-8"), out / MANIFEST)
    return manifest
