"""Live price scenarios: Chainlink rounds and Pyth updates for every registry asset, decoded as
the generator and the oracle poller do (``runners.synthetic.market``), ready for
``runners.live.publish.publish_records`` (which moves them to current event times).

Used by tests/runners/live/test_run.py and tests/benchmarks/bench_pubsub_read.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from runners.synthetic.assets import CHAINLINK_DECIMALS, CHAINLINK_FEEDS, PYTH_EXPO, PYTH_FEEDS
from runners.synthetic.market import normalise_chainlink, normalise_pyth, round_id
from schemas.events import PriceEvent
from tests.support.paths import ROOT
from transforms.prices.oracles import load_registry

USD = {"ETH": "3000", "BTC": "98000", "USDC": "1", "USDT": "1", "DAI": "1"}
ETH_AFTER_DROP = "1900"  # 10 ETH against 15,000 USDC: health 100 -> 26.7, a margin call


def oracle_scenario(
    start: datetime, seconds: int, drop_at: int | None = None
) -> list[tuple[str, PriceEvent]]:
    """Per second and registry asset, a Chainlink round and a Pyth update as the generator makes
    them (``runners.synthetic.market``); ETH falls to 1,900 from second ``drop_at`` on."""
    assets = sorted({feed.asset for feed in load_registry().feeds})
    events = []
    for k in range(seconds):
        when = start + timedelta(seconds=k)
        ts = int(when.timestamp())
        for asset in assets:
            usd = Decimal(
                ETH_AFTER_DROP
                if asset == "ETH" and drop_at is not None and k >= drop_at
                else USD[asset]
            )
            rid = str(round_id(40_000 + k))
            chainlink = {
                "feed": CHAINLINK_FEEDS[asset],
                "asset": asset,
                "round_id": rid,
                "answer": int(usd * 10**CHAINLINK_DECIMALS),
                "decimals": CHAINLINK_DECIMALS,
                "started_at": ts,
                "updated_at": ts,
                "answered_in_round": rid,
            }
            mantissa = int(usd * 10**-PYTH_EXPO)
            quote = {"price": str(mantissa), "conf": str(mantissa // 5000), "expo": PYTH_EXPO,
                     "publish_time": ts}  # fmt: skip
            pyth = {"id": PYTH_FEEDS[asset], "price": quote, "ema_price": dict(quote)}
            events.append(("market.prices.v1", PriceEvent(**normalise_chainlink(chainlink, when))))
            events.append(("market.prices.v1", PriceEvent(**normalise_pyth(pyth, asset, when))))
    return events


class LiveRun:
    """``defi-risk run PIPELINE --source pubsub --streaming`` in a subprocess, stdout kept;
    ``started`` is set once the pipeline reads its subscriptions."""

    def __init__(
        self,
        host: str,
        project: str,
        out: Path,
        duration_s: float,
        extra_args: list[str] = (),
        pipeline: str = "risk",
    ):
        env = {**os.environ, "PUBSUB_EMULATOR_HOST": host, "PYTHONUNBUFFERED": "1"}
        self.lines: list[str] = []
        self.started = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runners.cli", "run", pipeline, "--source", "pubsub",
             "--streaming", "--project", project, "--output-dir", str(out),
             "--duration-s", str(duration_s), *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "started: reading" in line:
                self.started.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        """Kills the run if it is still going (a failed test)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
