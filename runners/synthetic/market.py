"""Minute price paths and the oracle updates (Chainlink rounds, Pyth updates) derived from them.

Daily BTC/ETH log returns follow a GARCH(1,1) with Student-t innovations fitted to Bitstamp
(see calibration.py); each day is then filled in minute by minute with a Brownian bridge that
ends exactly on the day's return. Stablecoins are an AR(1) deviation around 1.0 plus depegs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from scipy import signal

from runners.synthetic.assets import (
    CHAINLINK_DECIMALS,
    CHAINLINK_FEEDS,
    CHAINLINK_PHASE_ID,
    PRICE_ASSETS,
    PRICE_OF,
    PYTH_EXPO,
    PYTH_FEEDS,
    STABLECOINS,
    START_PRICES,
    VOLATILE,
    Clock,
    iso,
)
from runners.synthetic.calibration import calibration, copula_innovations, garch_paths
from runners.synthetic.rng import substream
from transforms.prices.oracles import (
    decode_chainlink_round,
    decode_pyth_update,
    load_registry,
)

MINUTES_PER_DAY = 1440
BURN_IN_DAYS = 250  # start the GARCH variance from its stationary distribution, not from a constant
STABLE_CLIP = 0.025  # ordinary deviations stay inside +-2.5%; larger moves are explicit depegs
RANDOM_DEPEG_DAILY_PROB = 0.01
FORCED_DEPEG_MIN_DAYS = 5
PYTH_NOISE_BPS = {"BTC": 3.0, "ETH": 3.0, "USDC": 1.0, "USDT": 1.0, "DAI": 1.0}
PYTH_CONF_BPS = {"BTC": 3.0, "ETH": 3.0, "USDC": 1.0, "USDT": 1.0, "DAI": 1.5}
PYTH_EMA_SPAN_MINUTES = 60


def simulate_joint_daily_returns(n_days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Daily log returns and conditional std devs of (BTC, ETH), shape (n_days, 2) each.

    Innovations are Student t (each asset its own nu, scaled to unit variance) joined by a
    Gaussian copula tuned to the BTC/ETH correlation of the real series.
    """
    cal = calibration()
    params = [cal["garch"][a] for a in VOLATILE]
    z = substream(seed, "daily-returns").standard_normal((BURN_IN_DAYS + n_days, 2))
    eps = copula_innovations(z, cal["copula_rho"], [p["nu"] for p in params])
    returns, sigma = garch_paths(eps, params)
    return returns[BURN_IN_DAYS:], sigma[BURN_IN_DAYS:]


def simulate_daily_returns(asset: str, n_days: int, seed: int) -> np.ndarray:
    """Daily log returns of BTC or ETH: the same draws the market generator uses for `seed`."""
    return simulate_joint_daily_returns(n_days, seed)[0][:, VOLATILE.index(asset)].copy()


def brownian_bridge(
    daily_returns: np.ndarray,
    daily_sigma: np.ndarray,
    rng: np.random.Generator,
    steps: int = MINUTES_PER_DAY,
) -> np.ndarray:
    """Cumulative log price (starting at 0) at every step, length days*steps + 1.

    Within day d a Brownian motion with the day's volatility is pinned so that the path at the
    day's end equals the cumulative daily return exactly (the anchors are set, not reached).
    """
    days = len(daily_returns)
    w = np.cumsum(
        rng.standard_normal((days, steps)) * (daily_sigma[:, None] / np.sqrt(steps)), axis=1
    )
    frac = np.arange(1, steps + 1) / steps
    bridge = w - frac[None, :] * w[:, -1:] + frac[None, :] * daily_returns[:, None]
    anchors = np.concatenate([[0.0], np.cumsum(daily_returns)])
    path = anchors[:-1, None] + bridge
    path[:, -1] = anchors[1:]  # exact day closes, no accumulated rounding
    return np.concatenate([[0.0], path.ravel()])


@dataclass
class Depeg:
    asset: str
    start_minute: int
    trough_minute: int
    end_minute: int
    depth: float
    forced: bool
    min_price: float = 0.0

    def weight(self, n_minutes: int) -> np.ndarray:
        """How far the episode has taken over the price (0..1): cosine ease down, then an
        exponential recovery rescaled to reach exactly 0 at the end."""
        w = np.zeros(n_minutes)
        down = np.arange(self.start_minute, self.trough_minute + 1)
        x = (down - self.start_minute) / max(self.trough_minute - self.start_minute, 1)
        w[down] = (1 - np.cos(np.pi * x)) / 2
        up = np.arange(self.trough_minute + 1, min(self.end_minute, n_minutes))
        y = (up - self.trough_minute) / (self.end_minute - self.trough_minute)
        w[up] = (np.exp(-4 * y) - np.exp(-4)) / (1 - np.exp(-4))
        return w

    def apply(self, dev: np.ndarray) -> np.ndarray:
        """Blend the ordinary deviation into the episode: at the trough the price is 1 - depth."""
        w = self.weight(len(dev))
        return dev * (1 - w) - self.depth * w


def _stable_paths(days: int, seed: int) -> tuple[dict[str, np.ndarray], list[Depeg]]:
    cal = calibration()["stablecoins"]
    rng = substream(seed, "stablecoins")
    n = days * MINUTES_PER_DAY
    paths: dict[str, np.ndarray] = {}
    depegs: list[Depeg] = []
    for asset in STABLECOINS:
        p = cal[asset]
        phi = p["phi_daily"] ** (1 / MINUTES_PER_DAY)
        noise = rng.standard_normal(n) * p["dev_std"] * np.sqrt(1 - phi * phi)
        x0 = rng.standard_normal() * p["dev_std"]
        dev = signal.lfilter([1.0], [1.0, -phi], noise, zi=[phi * x0])[0]
        paths[asset] = np.clip(dev, -STABLE_CLIP, STABLE_CLIP)
        # Rare, mild random depegs of USDT/DAI; USDC gets exactly one forced episode instead.
        day_draws = rng.random(days)
        starts = rng.integers(0, MINUTES_PER_DAY, days)
        depths = rng.uniform(0.008, 0.02, days)
        downs = rng.integers(30, 90, days)
        ups = rng.integers(120, 360, days)
        if asset == "USDC":
            continue
        for d in range(days):
            s = d * MINUTES_PER_DAY + int(starts[d])
            end = s + int(downs[d]) + int(ups[d])
            if day_draws[d] < RANDOM_DEPEG_DAILY_PROB and end < n:
                depegs.append(Depeg(asset, s, s + int(downs[d]), end, float(depths[d]), False))
    if days >= FORCED_DEPEG_MIN_DAYS:
        day = int(rng.integers(1, days - 1))
        s = day * MINUTES_PER_DAY + int(rng.integers(0, 12 * 60))
        down = 60 + int(rng.integers(-10, 11))
        up = int(rng.integers(4 * 60, 8 * 60))
        depegs.append(
            Depeg(
                "USDC", s, s + down, s + down + up, 0.03 + float(rng.uniform(-0.003, 0.003)), True
            )
        )
    # Overlapping random episodes of one asset would double-count; keep the first.
    kept: list[Depeg] = []
    for dp in sorted(depegs, key=lambda e: (e.start_minute, e.asset)):
        if all(k.asset != dp.asset or k.end_minute < dp.start_minute for k in kept):
            kept.append(dp)
            paths[dp.asset] = dp.apply(paths[dp.asset])
    return paths, kept


@dataclass
class Market:
    """Minute-grid prices of PRICE_ASSETS from minute 0 (= start) to n_minutes - 1."""

    start: datetime
    days: int
    seed: int
    log_path: dict[str, np.ndarray]  # BTC/ETH: log price at minutes 0..n_minutes (inclusive)
    daily_returns: dict[str, np.ndarray]
    true_price: np.ndarray  # (n_minutes, 5) the path; Chainlink reports it
    cl_answer: np.ndarray  # int64, Chainlink answer (8 decimals)
    pyth_price: np.ndarray  # int64 with expo -8
    pyth_conf: np.ndarray
    pyth_ema: np.ndarray
    pyth_ema_conf: np.ndarray
    depegs: list[Depeg] = field(default_factory=list)

    @property
    def n_minutes(self) -> int:
        return self.true_price.shape[0]

    @property
    def mid(self) -> np.ndarray:
        """Per-minute mid of the Chainlink and Pyth prices: the valuation price for margin."""
        return (self.cl_answer.astype(np.float64) + self.pyth_price.astype(np.float64)) / 2e8

    def minute(self, seconds: float) -> int:
        return min(max(int(seconds // 60), 0), self.n_minutes - 1)

    def usd(self, symbol: str, seconds: float) -> float:
        """USD price of a token symbol (wrapped tokens via their underlying) at a time."""
        return float(self._mid[self.minute(seconds), PRICE_ASSETS.index(PRICE_OF[symbol])])

    def __post_init__(self) -> None:
        self._mid = self.mid


def simulate_market(days: int, seed: int, start: datetime) -> Market:
    n = days * MINUTES_PER_DAY
    rets, sigma = simulate_joint_daily_returns(days, seed)
    rng = substream(seed, "intraday")
    log_path, daily = {}, {}
    price = np.empty((n, len(PRICE_ASSETS)))
    for j, asset in enumerate(VOLATILE):
        path = np.log(START_PRICES[asset]) + brownian_bridge(rets[:, j], sigma[:, j], rng)
        log_path[asset], daily[asset] = path, rets[:, j].copy()
        price[:, PRICE_ASSETS.index(asset)] = np.exp(path[:n])
    stable, depegs = _stable_paths(days, seed)
    for asset in STABLECOINS:
        price[:, PRICE_ASSETS.index(asset)] = 1.0 + stable[asset]

    orng = substream(seed, "oracles")
    scale = 10.0**CHAINLINK_DECIMALS
    cl = np.rint(price * scale).astype(np.int64)
    noise_bps = np.array([PYTH_NOISE_BPS[a] for a in PRICE_ASSETS])
    conf_bps = np.array([PYTH_CONF_BPS[a] for a in PRICE_ASSETS])
    pyth_f = price * (1 + orng.standard_normal(price.shape) * noise_bps * 1e-4)
    conf_f = pyth_f * conf_bps * 1e-4 * np.exp(orng.standard_normal(price.shape) * 0.35)
    a = 2 / (PYTH_EMA_SPAN_MINUTES + 1)
    ema = signal.lfilter([a], [1, a - 1], pyth_f, axis=0, zi=(1 - a) * pyth_f[:1])[0]
    ema_conf = signal.lfilter([a], [1, a - 1], conf_f, axis=0, zi=(1 - a) * conf_f[:1])[0]
    pscale = 10.0**-PYTH_EXPO
    market = Market(
        start=start,
        days=days,
        seed=seed,
        log_path=log_path,
        daily_returns=daily,
        true_price=price,
        cl_answer=cl,
        pyth_price=np.rint(pyth_f * pscale).astype(np.int64),
        pyth_conf=np.maximum(np.rint(conf_f * pscale), 1).astype(np.int64),
        pyth_ema=np.rint(ema * pscale).astype(np.int64),
        pyth_ema_conf=np.maximum(np.rint(ema_conf * pscale), 1).astype(np.int64),
        depegs=depegs,
    )
    for dp in depegs:
        j = PRICE_ASSETS.index(dp.asset)
        dp.min_price = float(market.mid[dp.start_minute : dp.end_minute, j].min())
    return market


# ---------------------------------------------------------------------------------- oracle output
def chainlink_round_ids(seed: int) -> dict[str, int]:
    """First aggregator round of each feed (phase bits added in `round_id`)."""
    rng = substream(seed, "chainlink-rounds")
    return {a: int(rng.integers(20_000, 40_000)) for a in PRICE_ASSETS}


def round_id(aggregator_round: int) -> int:
    return (CHAINLINK_PHASE_ID << 64) | aggregator_round


def oracle_rows(market: Market, clock: Clock) -> Iterator[tuple[dict, dict, list[dict]]]:
    """Per minute and asset: (Chainlink round, Pyth update, [normalised PriceEvent fields])."""
    base_ts = int(clock.start.timestamp())
    first_round = chainlink_round_ids(market.seed)
    cl, pp, pc = market.cl_answer.tolist(), market.pyth_price.tolist(), market.pyth_conf.tolist()
    pe, pec = market.pyth_ema.tolist(), market.pyth_ema_conf.tolist()
    silent: dict[tuple[str, str], set[int]] = {}
    for o in oracle_outages(market):
        for src in o.sources:
            silent.setdefault((o.asset, src), set()).update(range(o.start_minute, o.end_minute))
    for k in range(market.n_minutes):
        ts = base_ts + 60 * k
        when = clock.at(60 * k)
        for j, asset in enumerate(PRICE_ASSETS):
            rid = str(round_id(first_round[asset] + k))
            feed = CHAINLINK_FEEDS[asset]
            chainlink = {
                "feed": feed,
                "asset": asset,
                "round_id": rid,
                "answer": cl[k][j],
                "decimals": CHAINLINK_DECIMALS,
                "started_at": ts,
                "updated_at": ts,
                "answered_in_round": rid,
            }
            pyth = {
                "id": PYTH_FEEDS[asset],
                "price": {
                    "price": str(pp[k][j]),
                    "conf": str(pc[k][j]),
                    "expo": PYTH_EXPO,
                    "publish_time": ts,
                },
                "ema_price": {
                    "price": str(pe[k][j]),
                    "conf": str(pec[k][j]),
                    "expo": PYTH_EXPO,
                    "publish_time": ts,
                },
            }
            # A feed in an outage publishes nothing: no raw update and no price event.
            cl_on = k not in silent.get((asset, "chainlink"), ())
            py_on = k not in silent.get((asset, "pyth"), ())
            yield (
                chainlink if cl_on else None,
                pyth if py_on else None,
                ([normalise_chainlink(chainlink, when)] if cl_on else [])
                + ([normalise_pyth(pyth, asset, when)] if py_on else []),
            )


@dataclass(frozen=True)
class OracleOutage:
    asset: str
    sources: tuple[str, ...]
    start_minute: int
    end_minute: int  # exclusive


def oracle_outages(market: Market) -> list[OracleOutage]:
    """Scripted feed outages, so the composite's degraded and unavailable paths show in a demo.

    From day 3 on: DAI's Pyth feed is silent for 2 h (the composite runs on Chainlink alone,
    degraded); then on day 3 both DAI feeds are silent for 90 min (Chainlink is carried forward
    for its heartbeat plus grace, then the price is unavailable until the feeds return).
    """
    if market.n_minutes < 3 * MINUTES_PER_DAY:
        return []
    day2, day3 = MINUTES_PER_DAY + 600, 2 * MINUTES_PER_DAY + 840
    return [
        OracleOutage("DAI", ("pyth",), day2, day2 + 120),
        OracleOutage("DAI", ("chainlink", "pyth"), day3, day3 + 90),
    ]


def outage_truth(market: Market, clock: Clock) -> list[dict]:
    return [
        {
            "asset": o.asset,
            "sources": list(o.sources),
            "start": iso(clock.at(60 * o.start_minute)),
            "end": iso(clock.at(60 * o.end_minute)),
        }
        for o in oracle_outages(market)
    ]


OBSERVATION_DELAY_S = {"chainlink": 2, "pyth": 1}  # poller read lag: well inside any heartbeat


def normalise_chainlink(r: dict, when: datetime) -> dict:
    """The round as the poller publishes it: the same decoder as production (transforms.prices.oracles)."""
    observed = when + timedelta(seconds=OBSERVATION_DELAY_S["chainlink"])
    return decode_chainlink_round(r, load_registry(), observed_at=observed).model_dump()


def normalise_pyth(u: dict, asset: str, when: datetime) -> dict:
    observed = when + timedelta(seconds=OBSERVATION_DELAY_S["pyth"])
    event = decode_pyth_update(u, load_registry(), observed_at=observed)
    assert event.asset == asset, (event.asset, asset)
    return event.model_dump()


def depeg_truth(market: Market, clock: Clock) -> list[dict]:
    return [
        {
            "asset": d.asset,
            "start": iso(clock.at(60 * d.start_minute)),
            "trough": iso(clock.at(60 * d.trough_minute)),
            "end": iso(clock.at(60 * d.end_minute)),
            "depth": round(d.depth, 6),
            "min_price": round(d.min_price, 6),
            "forced": d.forced,
        }
        for d in market.depegs
    ]
