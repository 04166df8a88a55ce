"""A loopback Ethereum JSON-RPC node (Chainlink AggregatorV3 ``eth_call``) and Pyth Hermes server.

Used by ``pytest -q tests/runners/oracle/test_poller.py``::

    chain = OracleChain(load_registry())
    chain.add_round(eth_feed, answer=300012345678, updated_at=1736121600)
    with OracleServer(chain, Faults(rate=0.5, seed=1)) as server:
        ...  # server.rpc_url, server.hermes_url

The test scripts the rounds and updates (in the recorded raw shapes of ``defi-risk generate``:
Chainlink ``{"feed", "round_id", "answer", "started_at", "updated_at", "answered_in_round"}``,
Hermes parsed updates); the server answers exactly as a node and Hermes do: ABI-encoded
``{"jsonrpc": "2.0", "id": .., "result": "0x.."}``, a code-3 revert for ``getRoundData`` of a round
with no data, and ``{"binary": .., "parsed": [..]}``. ``Faults`` injects HTTP 500s, JSON-RPC error
objects and answers slower than the client's timeout.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runners.oracle.hermes import LATEST_PATH
from runners.oracle.rpc import (
    SELECTOR_DECIMALS,
    SELECTOR_GET_ROUND_DATA,
    SELECTOR_LATEST_ROUND_DATA,
    RoundData,
    encode_round_data,
    encode_uint,
)
from transforms.prices.oracles import (
    FeedRegistry,
    compose_round_id,
    normalise_feed_id,
    split_round_id,
)

FAULT_KINDS = ("http500", "rpc_error", "slow")
# Error(string) "No data present", as a reverting getRoundData returns it
NO_DATA_REVERT = (
    "0x08c379a0" + encode_uint(32) + encode_uint(15) + b"No data present".hex().ljust(64, "0")
)


class Faults:
    """Which requests fail: ``forced`` kinds first (``"ok"`` for none), then ``always``, then
    ``rate`` at random (seeded) among ``kinds`` while ``enabled``."""

    def __init__(self, rate: float = 0.0, seed: int = 0, kinds=FAULT_KINDS, slow_s: float = 0.05):
        self.rate = rate
        self.rng = random.Random(seed)
        self.kinds = tuple(kinds)
        self.slow_s = slow_s
        self.enabled = True
        self.always: str | None = None
        self.forced: deque[str] = deque()
        self._lock = threading.Lock()

    def next(self) -> str | None:
        with self._lock:
            if self.forced:
                kind = self.forced.popleft()
                return None if kind == "ok" else kind
            if self.always is not None:
                return self.always
            if self.enabled and self.rate > 0 and self.rng.random() < self.rate:
                return self.rng.choice(self.kinds)
            return None


@dataclass
class _Feed:
    address: str
    decimals: int
    rounds: dict[int, RoundData] = field(default_factory=dict)
    latest: int | None = None


class OracleChain:
    """The test-controlled state: Chainlink rounds per proxy and the latest Pyth update per id."""

    def __init__(self, registry: FeedRegistry):
        self.lock = threading.RLock()
        self.chainlink = {
            f.key: _Feed(f.feed_id, f.decimals or 8)
            for f in registry.feeds
            if f.source == "chainlink"
        }
        self.pyth: dict[str, dict | None] = {
            f.key: None for f in registry.feeds if f.source == "pyth"
        }
        # (feed key, round id) -> (monotonic, wall) time the round became readable
        self.visible_from: dict[tuple[str, int], tuple[float, float]] = {}
        self._slot = 190_000_000

    # ------------------------------------------------------------------------------ chainlink
    def add_round(
        self,
        feed: str,
        answer: int,
        updated_at: int,
        *,
        round_id: int | None = None,
        started_at: int | None = None,
        answered_in_round: int | None = None,
    ) -> int:
        """Append a round (next aggregator round of the current phase unless ``round_id``)."""
        with self.lock:
            state = self.chainlink[normalise_feed_id(feed)]
            if round_id is None:
                round_id = state.latest + 1 if state.latest else compose_round_id(1, 1)
            state.rounds[round_id] = RoundData(
                round_id,
                answer,
                updated_at if started_at is None else started_at,
                updated_at,
                round_id if answered_in_round is None else answered_in_round,
            )
            state.latest = round_id if state.latest is None else max(state.latest, round_id)
            self.visible_from[(normalise_feed_id(feed), round_id)] = (time.monotonic(), time.time())
            return round_id

    def new_phase(self, feed: str, answer: int, updated_at: int) -> int:
        """A proxy phase change: the new aggregator starts at round 1 of phase + 1."""
        with self.lock:
            phase, _ = split_round_id(self.chainlink[normalise_feed_id(feed)].latest)
            return self.add_round(feed, answer, updated_at, round_id=compose_round_id(phase + 1, 1))

    def drop_round(self, feed: str, round_id: int) -> None:
        """Make getRoundData revert for a round (an aggregator with a hole)."""
        with self.lock:
            del self.chainlink[normalise_feed_id(feed)].rounds[round_id]
            self.visible_from.pop((normalise_feed_id(feed), round_id), None)

    def rounds(self, feed: str) -> list[int]:
        with self.lock:
            return sorted(self.chainlink[normalise_feed_id(feed)].rounds)

    # ----------------------------------------------------------------------------------- pyth
    def set_pyth(
        self, feed_id: str, price: int, conf: int, expo: int, publish_time: int
    ) -> dict[str, Any]:
        """Make this the latest Hermes update of the feed (the Hermes ``parsed`` shape)."""
        with self.lock:
            key = normalise_feed_id(feed_id)
            prev = self.pyth[key]
            self._slot += 3
            update = {
                "id": key,
                "price": {
                    "price": str(price),
                    "conf": str(conf),
                    "expo": expo,
                    "publish_time": publish_time,
                },
                "ema_price": {
                    "price": str(price - price // 1000),
                    "conf": str(conf),
                    "expo": expo,
                    "publish_time": publish_time,
                },
                "metadata": {
                    "slot": self._slot,
                    "proof_available_time": publish_time + 1,
                    "prev_publish_time": prev["price"]["publish_time"]
                    if prev
                    else publish_time - 1,
                },
            }
            self.pyth[key] = update
            return update

    def load_recorded(self, chainlink_rows=(), pyth_rows=()) -> None:
        """Rows as ``defi-risk generate`` writes raw/chainlink_rounds.jsonl and pyth_updates.jsonl."""
        for row in chainlink_rows:
            self.add_round(
                row["feed"],
                int(row["answer"]),
                int(row["updated_at"]),
                round_id=int(row["round_id"]),
                started_at=int(row["started_at"]),
                answered_in_round=int(row["answered_in_round"]),
            )
        for row in pyth_rows:
            p = row["price"]
            self.set_pyth(row["id"], int(p["price"]), int(p["conf"]), p["expo"], p["publish_time"])

    # ------------------------------------------------------------------------------- answers
    def eth_call(self, call: dict) -> tuple[str, Any]:
        """("result", hex) or ("error", JSON-RPC error object), as a node answers."""
        with self.lock:
            state = self.chainlink.get(normalise_feed_id(call.get("to")))
            data = (call.get("data") or call.get("input") or "").lower()
            if state is None:
                return "result", "0x"  # no code at the address
            selector = data[:10]
            if selector == SELECTOR_DECIMALS:
                return "result", "0x" + encode_uint(state.decimals)
            if selector == SELECTOR_LATEST_ROUND_DATA and state.latest is not None:
                return "result", encode_round_data(state.rounds[state.latest])
            if selector == SELECTOR_GET_ROUND_DATA:
                round_data = state.rounds.get(int(data[10:] or "0", 16))
                if round_data is not None:
                    return "result", encode_round_data(round_data)
                return "error", {
                    "code": 3,
                    "message": "execution reverted: No data present",
                    "data": NO_DATA_REVERT,
                }
            return "error", {"code": 3, "message": "execution reverted"}

    def hermes_latest(self, ids: list[str]) -> tuple[int, Any]:
        with self.lock:
            keys = [normalise_feed_id(i) for i in ids]
            unknown = [k for k in keys if k not in self.pyth]
            if unknown:
                return 404, f"Price ids not found: {', '.join(unknown)}"
            parsed = [self.pyth[k] for k in keys if self.pyth[k] is not None]
            blob = "504e4155" + "".join(u["id"][:16] for u in parsed)  # "PNAU" + opaque bytes
            return 200, {"binary": {"encoding": "hex", "data": [blob]}, "parsed": parsed}


# ------------------------------------------------------------------------------------ server
class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        call = (body.get("params") or [{}])[0]
        fault = self.server.faults.next()
        self.server.log("rpc", (call.get("data") or "")[:10], fault)
        if fault == "http500":
            return self._send(500, "internal error", "text/plain")
        if fault == "slow":
            time.sleep(self.server.faults.slow_s)  # the client has given up by now
        if fault == "rpc_error":
            error = {"code": -32000, "message": "header not found"}
            return self._send(200, {"jsonrpc": "2.0", "id": body.get("id"), "error": error})
        if body.get("method") != "eth_call":
            error = {"code": -32601, "message": "the method does not exist"}
            return self._send(200, {"jsonrpc": "2.0", "id": body.get("id"), "error": error})
        kind, value = self.server.chain.eth_call(call)
        self._send(200, {"jsonrpc": "2.0", "id": body.get("id"), kind: value})

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not url.path.endswith(LATEST_PATH):
            return self._send(404, "not found", "text/plain")
        fault = self.server.faults.next()
        self.server.log("hermes", LATEST_PATH, fault)
        if fault == "http500":
            return self._send(500, "internal error", "text/plain")
        if fault == "slow":
            time.sleep(self.server.faults.slow_s)
        if fault == "rpc_error":  # Hermes has no JSON-RPC: an upstream error body instead
            return self._send(200, {"message": "upstream error"})
        ids = urllib.parse.parse_qs(url.query).get("ids[]", [])
        status, answer = self.server.chain.hermes_latest(ids)
        self._send(status, answer, "application/json" if status == 200 else "text/plain")

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out first: that is the point of a slow answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, chain: OracleChain, faults: Faults):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.chain = chain
        self.faults = faults
        self.requests: list[tuple[float, str, str, str | None]] = []
        self._log_lock = threading.Lock()

    def log(self, kind: str, what: str, fault: str | None) -> None:
        with self._log_lock:
            self.requests.append((time.monotonic(), kind, what, fault))

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up mid-answer is expected under chaos


class OracleServer:
    """The server on 127.0.0.1, a free port, in a daemon thread; a context manager."""

    def __init__(self, chain: OracleChain, faults: Faults | None = None):
        self.chain = chain
        self.faults = faults or Faults()
        self.httpd = _Server(chain, self.faults)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def rpc_url(self) -> str:
        return self.base_url + "/"

    @property
    def hermes_url(self) -> str:
        return self.base_url + "/hermes"  # a base path, as behind a provider gateway

    @property
    def requests(self) -> list[tuple[float, str, str, str | None]]:
        with self.httpd._log_lock:
            return list(self.httpd.requests)

    def count(self, kind: str, what: str | None = None) -> int:
        return sum(1 for _, k, w, _ in self.requests if k == kind and (what is None or w == what))

    def start(self) -> OracleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> OracleServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
