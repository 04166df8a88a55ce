"""The oracle poller against a real loopback HTTP server (tests/support/oracle_server.py).

    pytest -q tests/runners/oracle/test_poller.py                 # all, < 60 s on 2 cores
    pytest -q tests/runners/oracle/test_poller.py -k chaos -rA    # the 20 chaos runs, with their stats
    pytest -q tests/runners/oracle/test_poller.py -m pubsub       # the Pub/Sub emulator round trip

The chaos test fails or delays half of all RPC and Hermes requests at random while rounds advance
every 50 ms interval, and checks that no round is missed, none is published twice, no stale price
is published, and the status shows ``degraded`` exactly while a breaker is open.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from runners.cli import main as cli_main
from runners.cli import make_parser
from runners.oracle.hermes import HermesClient
from runners.oracle.poller import OraclePoller, PollerConfig
from runners.oracle.publish import DeadLetterSink, JsonlPublisher, PubSubPublisher
from runners.oracle.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Backoff,
    CircuitBreaker,
    ExecutionReverted,
    FakeClock,
    PermanentSourceError,
    SourceError,
    SystemClock,
)
from runners.oracle.rpc import (
    ChainlinkReader,
    JsonRpcClient,
    RoundData,
    decode_round_data,
    encode_round_data,
)
from schemas.events import PriceEvent
from schemas.serde import from_avro, from_json
from schemas.topics import rfc3339
from tests.support.oracle_server import Faults, OracleChain, OracleServer
from transforms.prices.oracles import (
    compose_round_id,
    decode_chainlink_round,
    decode_pyth_update,
    load_registry,
    normalise_feed_id,
    split_round_id,
)

REGISTRY = load_registry()
CL = {f.asset: f for f in REGISTRY.feeds if f.source == "chainlink"}
PY = {f.asset: f for f in REGISTRY.feeds if f.source == "pyth"}
T = 1_736_121_600  # 2025-01-06T00:00:00Z
# (Chainlink answer at 8 decimals, Pyth price at expo -8, Pyth conf)
PRICES = {
    "ETH": (300_012_345_678, 300_010_000_000, 150_000_000),
    "BTC": (9_800_012_345_678, 9_800_100_000_000, 2_000_000_000),
    "USDC": (100_010_000, 100_005_000, 20_000),
    "USDT": (99_980_000, 99_990_000, 20_000),
    "DAI": (99_990_000, 100_000_000, 30_000),
}


# ------------------------------------------------------------------------------------ helpers
def fresh_chain(now: int) -> OracleChain:
    """One fresh round per Chainlink feed and one fresh update per Pyth feed."""
    chain = OracleChain(REGISTRY)
    for asset, (answer, price, conf) in PRICES.items():
        chain.add_round(CL[asset].feed_id, answer, now - 30, round_id=compose_round_id(1, 100))
        chain.set_pyth(PY[asset].feed_id, price, conf, -8, now - 2)
    return chain


def make_poller(server: OracleServer, tmp_path: Path, *, clock=None, seed: int = 0, **config):
    settings = {
        "interval_s": 10.0,
        "timeout_s": 2.0,
        "max_retries": 1,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.005,
    }
    cfg = PollerConfig(**{**settings, **config})
    return OraclePoller(
        REGISTRY,
        JsonlPublisher(tmp_path / "prices.jsonl"),
        chainlink=ChainlinkReader(JsonRpcClient(server.rpc_url, cfg.timeout_s)),
        hermes=HermesClient(server.hermes_url, cfg.timeout_s),
        config=cfg,
        dead_letters=DeadLetterSink(tmp_path / "dead_letters.jsonl"),
        clock=clock or SystemClock(),
        rng=random.Random(seed),
        status_file=tmp_path / "status.json",
    )


def published(tmp_path: Path) -> list[PriceEvent]:
    path = tmp_path / "prices.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [from_json(PriceEvent, line) for line in lines]


def dead_letters(tmp_path: Path) -> list[dict]:
    path = tmp_path / "dead_letters.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for row in rows:
        row["raw"] = json.loads(row["raw_payload"])
    return rows


def rounds_of(events, asset: str) -> list[int]:
    return [int(e.round_id) for e in events if e.source == "chainlink" and e.asset == asset]


def assert_accounted(poller: OraclePoller) -> None:
    c = poller.counters
    total = c["published"] + c["duplicates_skipped"] + sum(poller.dead_letters.counts.values())
    assert c["polled"] == total + len(poller._outbox), (dict(c), poller.dead_letters.counts)


# ---------------------------------------------------------------------------------- decoding
def test_abi_and_price_decoding_of_known_values():
    eth = CL["ETH"]
    rid = compose_round_id(6, 12_345)
    hexdata = encode_round_data(RoundData(rid, 300_012_345_678, T - 5, T, rid))
    assert hexdata.startswith("0x") and len(hexdata) == 2 + 5 * 64
    rd = decode_round_data(hexdata)
    assert rd == RoundData(rid, 300_012_345_678, T - 5, T, rid)
    event = decode_chainlink_round(rd.raw(eth.feed_id, 8), REGISTRY)
    assert event.price == Decimal("3000.12345678")
    assert split_round_id(int(event.round_id)) == (6, 12_345)  # the phase bits are kept
    assert int(event.round_id) == (6 << 64) | 12_345

    # int256 two's complement: a negative answer decodes negative (and is then refused)
    negative = decode_round_data(encode_round_data(RoundData(1, -5, T, T, 1)))
    assert negative.answer == -5
    assert encode_round_data(RoundData(1, -5, T, T, 1))[2 + 64 : 2 + 128] == "f" * 63 + "b"

    update = {
        "id": PY["ETH"].key,
        "price": {"price": "12276250", "conf": "1500", "expo": -5, "publish_time": T},
    }
    pyth = decode_pyth_update(update, REGISTRY)
    assert pyth.price == Decimal("122.7625") and pyth.confidence == Decimal("0.015")


def test_http_errors_are_classified(tmp_path):
    chain = fresh_chain(T)
    with OracleServer(chain) as server:
        rpc = JsonRpcClient(server.rpc_url, timeout_s=0.2)
        reader = ChainlinkReader(rpc)
        assert reader.decimals(CL["ETH"].feed_id) == 8
        assert reader.get_round(CL["ETH"].feed_id, 12) is None  # code-3 revert: no data
        with pytest.raises(ExecutionReverted):
            rpc.eth_call(CL["ETH"].feed_id, "0xdeadbeef")
        with pytest.raises(PermanentSourceError, match="no contract"):
            reader.latest_round("0x" + "11" * 20)
        server.faults.forced.extend(["http500", "rpc_error", "slow"])
        server.faults.slow_s = 0.4
        for match in ("HTTP 500", "header not found", "timeout"):
            with pytest.raises(SourceError, match=match) as info:
                reader.latest_round(CL["ETH"].feed_id)
            assert info.value.retryable
        with pytest.raises(PermanentSourceError, match="HTTP 404"):
            HermesClient(server.hermes_url).latest(["0x" + "ab" * 32])
        assert len(HermesClient(server.hermes_url).latest([f.feed_id for f in PY.values()])) == 5


# ------------------------------------------------------------------------------- the poller
def test_all_registry_feeds_are_polled_and_published(tmp_path):
    clock = FakeClock(T)
    with OracleServer(fresh_chain(T)) as server:
        poller = make_poller(server, tmp_path, clock=clock)
        report = poller.poll_once()
        clock.advance(10)
        again = poller.poll_once()
        poller.close()
    events = published(tmp_path)
    assert {(e.source, e.asset) for e in events} == {(f.source, f.asset) for f in REGISTRY.feeds}
    assert len(events) == len(REGISTRY.feeds) == 10 and report.published == 10
    assert {("chainlink", "ETH"), ("chainlink", "BTC"), ("chainlink", "USDC")} <= {
        (e.source, e.asset) for e in events
    }
    by_key = {(e.source, e.asset): e for e in events}
    assert by_key["chainlink", "ETH"].price == Decimal("3000.12345678")
    assert by_key["pyth", "BTC"].price == Decimal("98001.00000000")
    assert by_key["pyth", "BTC"].confidence == Decimal("20")
    assert all(e.observed_at == datetime.fromtimestamp(T, UTC) for e in events)
    assert again.published == 0 and again.duplicates_skipped == 10  # nothing new, nothing twice
    assert json.loads((tmp_path / "status.json").read_text())["chainlink"] == "ok"
    assert "cycle 2: polled 10, published 0, duplicates 10" in again.line()
    assert_accounted(poller)


def test_gaps_phase_change_stale_negative_and_no_duplicates(tmp_path):
    clock = FakeClock(T)
    chain = fresh_chain(T)
    eth, btc, usdc, usdt, dai = (CL[a].feed_id for a in ("ETH", "BTC", "USDC", "USDT", "DAI"))
    stale_round = chain.add_round(usdt, 99_990_000, T - 2 * 86_400)  # a feed that stopped
    chain.set_pyth(PY["USDT"].feed_id, 99_990_000, 20_000, -8, T - 1_000)  # 1000 s > 60 + 120
    with OracleServer(chain) as server:
        poller = make_poller(server, tmp_path, clock=clock)
        first = poller.poll_once()
        assert first.published == 8 and first.dead_letters == Counter(stale=2)

        # between two polls: ETH moves three rounds, BTC changes phase and moves twice in it,
        # USDC answers negative, DAI has a round without data, Pyth ETH moves, Pyth BTC does not
        eth_new = [chain.add_round(eth, 300_100_000_000 + i, T + i) for i in range(1, 4)]
        btc_new = [chain.new_phase(btc, 9_810_000_000_000, T + 1)]
        btc_new += [chain.add_round(btc, 9_820_000_000_000 + i, T + 2 + i) for i in range(2)]
        chain.add_round(usdc, -100_000, T + 2)
        dai_new = [chain.add_round(dai, 99_990_000 + i, T + i) for i in range(1, 4)]
        chain.drop_round(dai, dai_new[1])
        chain.set_pyth(PY["ETH"].feed_id, 300_200_000_000, 150_000_000, -8, T + 8)
        clock.advance(10)
        get_round_before = server.count("rpc", "0x9a6fc8f5")
        second = poller.poll_once()
        # ETH: 2 missing rounds; BTC: the end of phase 1 (a revert), then rounds 1 and 2 of
        # phase 2; DAI: 2 (one reverts)
        assert server.count("rpc", "0x9a6fc8f5") - get_round_before == 7

        # a lagging node and a lagging Hermes: older answers than already handled
        chain.chainlink[normalise_feed_id(eth)].latest = eth_new[0]
        chain.set_pyth(PY["ETH"].feed_id, 300_000_000_000, 150_000_000, -8, T + 5)
        clock.advance(10)
        third = poller.poll_once()
        poller.close()

    events = published(tmp_path)
    assert rounds_of(events, "ETH") == [compose_round_id(1, 100), *eth_new]
    assert rounds_of(events, "BTC") == [compose_round_id(1, 100), *btc_new]
    assert [split_round_id(r)[0] for r in rounds_of(events, "BTC")] == [1, 2, 2, 2]
    assert rounds_of(events, "DAI") == [compose_round_id(1, 100), dai_new[0], dai_new[2]]
    assert rounds_of(events, "USDC") == [compose_round_id(1, 100)]  # the negative one refused
    assert second.published == 3 + 3 + 2 + 1
    assert second.dead_letters == Counter(non_positive_price=1, round_missing=1)
    assert third.published == 0 and third.dead_letters == Counter(out_of_order=1)
    keys = [(e.source, e.feed_id, e.round_id or e.publish_time) for e in events]
    assert len(keys) == len(set(keys))  # no duplicates
    assert not [e for e in events if e.asset == "USDT"]  # stale is never published

    rows = dead_letters(tmp_path)
    stale = [r for r in rows if r["error_reason"] == "stale"]
    assert {r["source"] for r in stale} == {"oracle:chainlink", "oracle:pyth"}
    cl_stale = next(r for r in stale if r["source"] == "oracle:chainlink")
    assert cl_stale["raw"]["round_id"] == stale_round and "heartbeat 86400 s" in cl_stale["error"]
    assert cl_stale["raw"]["updated_at"] == T - 2 * 86_400 and cl_stale["stage"] == "OraclePoller"
    negative = next(r for r in rows if r["error_reason"] == "non_positive_price")
    assert negative["raw"]["answer"] == -100_000
    assert poller.dead_letters.counts == Counter(
        stale=2, non_positive_price=1, round_missing=1, out_of_order=1
    )
    assert_accounted(poller)


def test_breaker_opens_marks_degraded_and_recovers(tmp_path):
    clock = FakeClock(T)
    chain = fresh_chain(T)
    eth = CL["ETH"].feed_id
    status_file = tmp_path / "status.json"
    with OracleServer(chain) as server:
        poller = make_poller(
            server, tmp_path, clock=clock, breaker_threshold=3, breaker_cooldown_s=25
        )
        poller.poll_once()
        assert poller.status() == {"chainlink": "ok", "pyth": "ok"}

        server.faults.always = "http500"
        clock.advance(10)
        poller.poll_once()  # 5 feeds x 2 attempts fail: the Chainlink breaker opens
        assert poller.status() == {"chainlink": "degraded", "pyth": "ok"}  # Pyth: 2 failures < 3
        assert json.loads(status_file.read_text())["chainlink"] == "degraded"

        outage_rounds = [chain.add_round(eth, 300_000_000_000 + i, T + 10 + i) for i in range(3)]
        rpc_calls = server.count("rpc")
        clock.advance(10)
        report = poller.poll_once()  # Chainlink not called; Pyth's breaker opens too
        assert server.count("rpc") == rpc_calls
        assert report.status == {"chainlink": "degraded", "pyth": "degraded"}

        server.faults.always = None  # the outage ends
        clock.advance(10)
        hermes_calls = server.count("hermes")
        poller.poll_once()  # still cooling down: nobody is called
        assert server.count("rpc") == rpc_calls and server.count("hermes") == hermes_calls
        clock.advance(10)
        report = poller.poll_once()  # Chainlink: 30 s > 25 s cool-down, the trial closes it
        assert report.status == {"chainlink": "ok", "pyth": "degraded"}
        clock.advance(10)
        report = poller.poll_once()
        assert report.status == {"chainlink": "ok", "pyth": "ok"}
        assert json.loads(status_file.read_text())["pyth"] == "ok"
        poller.close()

    states = [s for _, s in poller.breakers["chainlink"].transitions]
    assert states == [OPEN, HALF_OPEN, CLOSED]
    # the rounds of the outage were backfilled, in order
    assert rounds_of(published(tmp_path), "ETH") == [compose_round_id(1, 100), *outage_rounds]
    assert_accounted(poller)


def test_breaker_and_backoff_units():
    clock = FakeClock(0)
    breaker = CircuitBreaker("x", threshold=2, cooldown_s=5, clock=clock)
    breaker.record_failure()
    assert breaker.allow() and breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN and not breaker.allow()
    clock.advance(5)
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert breaker.state == OPEN and not breaker.would_allow()
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED

    backoff = Backoff(base_s=0.1, cap_s=0.5, rng=random.Random(1))
    delays = [backoff.delay(a) for a in range(10) for _ in range(50)]
    assert all(0 <= d <= 0.5 for d in delays) and max(delays) > 0.4  # full jitter, capped
    assert all(d <= 0.1 for d in (backoff.delay(0) for _ in range(50)))


# ------------------------------------------------------------------------------- publishing
class _Future:
    def __init__(self, error: Exception | None):
        self.error = error

    def result(self, timeout=None):
        if self.error:
            raise self.error
        return "message-id"


class _FlakyPubSub:
    """A PublisherClient stand-in whose first ``fail`` publishes fail."""

    def __init__(self, fail: int):
        self.fail = fail
        self.sent: list[tuple[str, bytes, dict]] = []

    def publish(self, topic, data, **attrs):
        if self.fail > 0:
            self.fail -= 1
            return _Future(RuntimeError("503 unavailable"))
        self.sent.append((topic, data, attrs))
        return _Future(None)


def test_failed_publishes_are_retried_then_kept_not_lost(tmp_path):
    clock = FakeClock(T)
    client = _FlakyPubSub(fail=10 + 4)  # all 10 fail once, 4 fail their retry too
    topic = "projects/p/topics/market.prices.v1"
    with OracleServer(fresh_chain(T)) as server:
        poller = make_poller(server, tmp_path, clock=clock)
        poller.publisher = PubSubPublisher(
            topic, client=client, max_retries=1, sleep=lambda s: None
        )
        first = poller.poll_once()
        assert first.published == 6 and first.unpublished == 4
        assert poller.counters["publish_failures"] == 4
        clock.advance(10)
        second = poller.poll_once()  # the next cycle publishes what was waiting
        poller.close()
    assert second.published == 4 and second.unpublished == 0 and second.duplicates_skipped == 10
    events = [from_avro(PriceEvent, data) for _, data, _ in client.sent]
    assert len({e.event_id for e in events}) == 10
    for (sent_topic, _, attrs), event in zip(client.sent, events, strict=True):
        assert sent_topic == topic
        assert attrs == {"event_id": event.event_id, "ts": rfc3339(event.publish_time)}
    assert_accounted(poller)


def test_cli_oracle_poll(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["oracle", "poll", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--rpc-url", "--hermes-url", "--interval", "--publish", "--status-file"):
        assert option in help_text
    now = int(time.time())
    with OracleServer(fresh_chain(now)) as server:
        code = cli_main(
            [
                "oracle", "poll", "--rpc-url", server.rpc_url, "--hermes-url", server.hermes_url,
                "--interval", "0.05", "--iterations", "2", "--timeout", "1",
                "--publish", f"jsonl:{tmp_path / 'prices.jsonl'}",
                "--status-file", str(tmp_path / "status.json"),
                "--dead-letter-file", str(tmp_path / "dead_letters.jsonl"),
            ]
        )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "cycle 1: polled 10, published 10" in out and "status chainlink=ok pyth=ok" in out
    assert "cycle 2: polled 10, published 0, duplicates 10" in out
    assert len(published(tmp_path)) == 10
    assert json.loads((tmp_path / "status.json").read_text())["cycle"] == 2


# ------------------------------------------------------------------------------------- chaos
CHAOS_INTERVAL = 0.05
CHAOS_TIMEOUT = 0.03
# Cycles: a fault-free first cycle (each feed's first reading is its baseline), 16 cycles with
# half the requests failing, then 5 fault-free cycles. While a breaker is open the source is not
# called, so under 50 % faults the poller falls behind (10-25 ETH rounds at 1.25 rounds a cycle);
# the fault-free end is the outage ending, after which nothing exposed may be missing.
WARMUP, CHAOS, TAIL = 1, 16, 5
CHAOS_SEEDS = range(20)


def _chaos_market(chain: OracleChain, seed: int):
    """A function that moves every feed one tick (one 'second' of chain time)."""
    rng = random.Random(seed)
    base = int(time.time()) - 100  # chain time runs ahead at 1 s per tick: distinct publish times
    ticks = itertools.count(1)

    def advance() -> None:
        k = next(ticks)
        t = base + k
        with chain.lock:
            for _ in range(2 if rng.random() < 0.25 else 1):  # sometimes 2 rounds per tick
                chain.add_round(CL["ETH"].feed_id, PRICES["ETH"][0] + rng.randrange(10**8), t)
            if k == 8:
                chain.new_phase(CL["BTC"].feed_id, PRICES["BTC"][0], t)
            else:
                chain.add_round(CL["BTC"].feed_id, PRICES["BTC"][0] + k, t)
            chain.add_round(CL["USDC"].feed_id, -100_000 if k % 5 == 0 else PRICES["USDC"][0], t)
            chain.add_round(CL["USDT"].feed_id, PRICES["USDT"][0], t - 200_000)  # always stale
            chain.add_round(CL["DAI"].feed_id, PRICES["DAI"][0], t)
            for asset, (_, price, conf) in PRICES.items():
                chain.set_pyth(
                    PY[asset].feed_id, price + k, conf, -8, t - (1_000 if asset == "USDT" else 0)
                )

    return advance


@pytest.mark.parametrize("seed", CHAOS_SEEDS)
def test_chaos(seed, tmp_path):
    started = time.perf_counter()
    chain = OracleChain(REGISTRY)
    advance = _chaos_market(chain, seed)
    advance()
    faults = Faults(rate=0.5, seed=seed, slow_s=CHAOS_TIMEOUT * 1.5)
    faults.enabled = False
    stop = threading.Event()

    def tick() -> None:  # rounds advance every interval, whatever the poller does
        while not stop.wait(CHAOS_INTERVAL):
            advance()

    ticker = threading.Thread(target=tick, daemon=True)
    snapshots = []
    with OracleServer(chain, faults) as server:
        poller = make_poller(
            server,
            tmp_path,
            seed=seed,
            interval_s=CHAOS_INTERVAL,
            timeout_s=CHAOS_TIMEOUT,
            max_retries=3,
            backoff_base_s=0.004,
            backoff_cap_s=0.02,
            breaker_threshold=4,
            breaker_cooldown_s=2 * CHAOS_INTERVAL,
        )

        chaos_window = []

        def on_cycle(report):
            enabled = WARMUP <= report.cycle < WARMUP + CHAOS
            if enabled != faults.enabled:
                chaos_window.append(time.monotonic())
            faults.enabled = enabled
            breakers = {s: b.state for s, b in poller.breakers.items()}
            on_file = json.loads((tmp_path / "status.json").read_text())
            snapshots.append((report.status, breakers, on_file))

        ticker.start()
        try:
            poller.run(iterations=WARMUP + CHAOS + TAIL, on_cycle=on_cycle)
            t_end = time.monotonic()
        finally:
            stop.set()
            ticker.join()
            poller.close()
        requests = server.requests

    events, rows = published(tmp_path), dead_letters(tmp_path)
    injected = Counter(fault for *_, fault in requests if fault)
    in_window = [r for r in requests if chaos_window[0] <= r[0] <= chaos_window[1]]
    fault_share = sum(1 for r in in_window if r[3]) / len(in_window)
    assert 0.25 < fault_share < 0.75, fault_share  # about half the requests failed while chaotic

    # degraded exactly while a breaker is not closed, in status() and in the status file
    for status, breakers, on_file in snapshots:
        for source, state in breakers.items():
            assert status[source] == ("ok" if state == CLOSED else "degraded")
            assert on_file[source] == status[source]
    # and an open breaker's source is not called (requests in flight when it opened aside). The
    # server stamps arrival, not sending: under CPU load a request sent just before the breaker
    # opened can arrive later than CHAOS_TIMEOUT after it (seen twice in full-suite runs), so up
    # to one in-flight request per feed of the source is tolerated in each open interval.
    kinds = {"chainlink": "rpc", "pyth": "hermes"}
    for source, breaker in poller.breakers.items():
        in_flight = sum(1 for f in REGISTRY.feeds if f.source == source)
        transitions = breaker.transitions
        for (t_open, state), (t_next, _) in itertools.pairwise(transitions + [(t_end, "")]):
            if state == OPEN:
                window = (t_open + CHAOS_TIMEOUT, t_next)
                late = [
                    r for r in requests if r[1] == kinds[source] and window[0] < r[0] < window[1]
                ]
                assert len(late) <= in_flight, late

    # no duplicates, nothing out of order, nothing stale published
    for source, asset in {(e.source, e.asset) for e in events}:
        mine = [e for e in events if e.source == source and e.asset == asset]
        order = [int(e.round_id) if source == "chainlink" else e.publish_time for e in mine]
        assert order == sorted(set(order)), f"{source} {asset}: duplicate or out of order"
    for e in events:
        heartbeat = REGISTRY.by_id(e.feed_id).heartbeat_s
        assert (e.observed_at - e.publish_time).total_seconds() <= heartbeat + REGISTRY.grace_s
        if e.source == "chainlink":  # observed_at is the time of the read, not a cached time
            visible_wall = chain.visible_from[(normalise_feed_id(e.feed_id), int(e.round_id))][1]
            assert e.observed_at.timestamp() >= visible_wall - 1e-3
    assert "USDT" not in {e.asset for e in events}
    reasons = Counter(r["error_reason"] for r in rows)
    assert set(reasons) <= {"stale", "non_positive_price"} and reasons["stale"] > 0

    # no missed round: from each feed's first reading on, every round exposed for longer than
    # two intervals was published or dead-lettered (stale, negative)
    for asset, feed in CL.items():
        handled = rounds_of(events, asset) + [
            int(r["raw"]["round_id"])
            for r in rows
            if r["source"] == "oracle:chainlink" and normalise_feed_id(r["raw"]["feed"]) == feed.key
        ]
        assert len(handled) == len(set(handled)), f"{asset}: a round handled twice"
        exposed = {
            rid
            for (key, rid), (t_visible, _) in list(chain.visible_from.items())
            if key == feed.key and rid >= min(handled) and t_visible <= t_end - 2 * CHAOS_INTERVAL
        }
        assert not exposed - set(handled), (
            f"{asset}: missed rounds {sorted(exposed - set(handled))}"
        )
    assert_accounted(poller)

    elapsed = time.perf_counter() - started
    opened = {
        s: sum(1 for _, st in b.transitions if st == OPEN) for s, b in poller.breakers.items()
    }
    print(
        f"chaos seed {seed}: {elapsed:.2f} s, {len(requests)} requests, {len(in_window)} in the "
        f"chaos window of which {fault_share:.0%} failed {dict(injected)}, "
        f"breaker opened {opened}, published {len(events)}, dead letters {dict(reasons)}, "
        f"overruns {poller.counters['overruns']}"
    )
    assert elapsed < 3.0


# ------------------------------------------------------------------------------------ pub/sub
# The pubsub_emulator fixture (tests/conftest.py) starts the real emulator on a free port.
@pytest.mark.pubsub
def test_pubsub_emulator_round_trip(pubsub_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    from apache_beam.utils.timestamp import Timestamp
    from google.cloud import pubsub_v1

    publisher_client, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher_client.topic_path("defi-risk-test", "market.prices.v1")
    subscription = subscriber.subscription_path("defi-risk-test", "oracle-poller-test")
    publisher_client.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)

    now = int(time.time())
    chain = fresh_chain(now)
    with OracleServer(chain) as server:
        poller = make_poller(server, tmp_path)
        poller.publisher = PubSubPublisher(topic, client=publisher_client, timeout_s=10)
        for cycle in range(3):
            chain.add_round(CL["ETH"].feed_id, PRICES["ETH"][0] + cycle, now - 10 + cycle)
            chain.set_pyth(PY["BTC"].feed_id, PRICES["BTC"][1] + cycle, 1, -8, now + cycle)
            poller.poll_once()
        poller.close()  # stops the publisher client: everything is flushed
    expected = poller.counters["published"]
    assert expected == 10 + 2 + 2  # cycle 1: every feed; then Chainlink ETH and Pyth BTC move

    received: dict[str, tuple[PriceEvent, dict]] = {}
    deadline = time.monotonic() + 30
    while len(received) < expected and time.monotonic() < deadline:
        answer = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
        for message in answer.received_messages:
            event = from_avro(PriceEvent, message.message.data)
            received[event.event_id] = (event, dict(message.message.attributes))
        if answer.received_messages:
            subscriber.acknowledge(
                subscription=subscription, ack_ids=[m.ack_id for m in answer.received_messages]
            )
    subscriber.close()
    assert len(received) == expected
    for event, attrs in received.values():
        assert attrs["event_id"] == event.event_id
        assert Timestamp.from_rfc3339(attrs["ts"]) == Timestamp.from_utc_datetime(
            event.publish_time
        )
        assert event.observed_at is not None
    assert {(e.source, e.asset) for e, _ in received.values()} == {
        (f.source, f.asset) for f in REGISTRY.feeds
    }
