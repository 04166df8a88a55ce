"""Chainlink AggregatorV3 over Ethereum JSON-RPC ``eth_call`` (stdlib only, no web3).

    >>> encode_call(SELECTOR_GET_ROUND_DATA, (6 << 64) | 5)[:10]
    '0x9a6fc8f5'
    >>> decode_round_data(encode_round_data(RoundData((6 << 64) | 5, -1, 2, 3, 5))).answer
    -1

``latestRoundData()`` and ``getRoundData(uint80)`` return five 32-byte words: roundId (uint80),
answer (int256, two's complement), startedAt, updatedAt (uint256) and answeredInRound (uint80).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

from runners.oracle.resilience import ExecutionReverted, PermanentSourceError, SourceError
from runners.oracle.transport import fetch_json

SELECTOR_LATEST_ROUND_DATA = "0xfeaf968c"  # latestRoundData()
SELECTOR_DECIMALS = "0x313ce567"  # decimals()
SELECTOR_GET_ROUND_DATA = "0x9a6fc8f5"  # getRoundData(uint80)
WORD = 64  # hex characters per ABI word
UINT80_MAX = (1 << 80) - 1


class AbiError(SourceError):
    """The node's answer is not the ABI encoding we expect (a proxy error page, a wrong contract)."""


@dataclass(frozen=True)
class RoundData:
    round_id: int
    answer: int
    started_at: int
    updated_at: int
    answered_in_round: int

    def raw(self, feed: str, decimals: int) -> dict[str, Any]:
        """The raw reading ``transforms.prices.oracles.decode_chainlink_round`` takes (and dead letters keep)."""
        return {
            "feed": feed,
            "round_id": self.round_id,
            "answer": self.answer,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "answered_in_round": self.answered_in_round,
            "decimals": decimals,
        }


# ---------------------------------------------------------------------------------------- ABI
def encode_uint(value: int) -> str:
    if value < 0 or value >= 1 << 256:
        raise ValueError(f"{value} is not a uint256")
    return f"{value:064x}"


def encode_int(value: int) -> str:
    if not -(1 << 255) <= value < 1 << 255:
        raise ValueError(f"{value} is not an int256")
    return encode_uint(value % (1 << 256))


def encode_call(selector: str, *uint_args: int) -> str:
    return selector + "".join(encode_uint(a) for a in uint_args)


def decode_words(result: Any, count: int) -> list[int]:
    """``count`` unsigned 32-byte words from an ``eth_call`` result ``"0x..."``."""
    if not isinstance(result, str) or not result.startswith("0x"):
        raise AbiError(f"eth_call result is not 0x-hex: {str(result)[:40]!r}")
    body = result[2:]
    if body == "":
        # what a node returns when the address has no code: configuration, not a flaky node
        raise PermanentSourceError("eth_call returned 0x: no contract at this address?")
    if len(body) < count * WORD:
        raise AbiError(f"eth_call result has {len(body) // 2} bytes, expected {count * 32}")
    try:
        return [int(body[i * WORD : (i + 1) * WORD], 16) for i in range(count)]
    except ValueError as err:
        raise AbiError(f"eth_call result is not hex: {body[:40]!r}") from err


def to_int256(word: int) -> int:
    return word - (1 << 256) if word >= 1 << 255 else word


def decode_round_data(result: Any) -> RoundData:
    round_id, answer, started_at, updated_at, answered = decode_words(result, 5)
    if round_id > UINT80_MAX or answered > UINT80_MAX:
        raise AbiError(f"roundId {round_id} or answeredInRound {answered} is not a uint80")
    return RoundData(round_id, to_int256(answer), started_at, updated_at, answered)


def encode_round_data(rd: RoundData) -> str:
    """The ``eth_call`` result a node returns for ``rd`` (used by the test server)."""
    return "0x" + "".join(
        [
            encode_uint(rd.round_id),
            encode_int(rd.answer),
            encode_uint(rd.started_at),
            encode_uint(rd.updated_at),
            encode_uint(rd.answered_in_round),
        ]
    )


# ----------------------------------------------------------------------------------- JSON-RPC
class JsonRpcClient:
    """One JSON-RPC request per call, each with its own timeout (``urllib``; thread-safe)."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call(self, method: str, params: list[Any]) -> Any:
        with self._lock:
            request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        answer = fetch_json(self.url, timeout_s=self.timeout_s, body=body)
        if not isinstance(answer, dict):
            raise SourceError(f"{method}: JSON-RPC answer is not an object")
        error = answer.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = str(error.get("message") if isinstance(error, dict) else error)[:200]
            # code 3 / "execution reverted" is the contract speaking; anything else is the node
            if code == 3 or "revert" in message.lower():
                raise ExecutionReverted(f"{method}: {message}")
            raise SourceError(f"{method}: JSON-RPC error {code}: {message}")
        if answer.get("id") != request_id or "result" not in answer:
            raise SourceError(f"{method}: JSON-RPC answer without result for id {request_id}")
        return answer["result"]

    def eth_call(self, to: str, data: str, block: str = "latest") -> Any:
        return self.call("eth_call", [{"to": to, "data": data}, block])


class ChainlinkReader:
    """AggregatorV3 reads through the feed's proxy address."""

    def __init__(self, rpc: JsonRpcClient):
        self.rpc = rpc

    def decimals(self, address: str) -> int:
        (value,) = decode_words(self.rpc.eth_call(address, SELECTOR_DECIMALS), 1)
        if value > 77:
            raise AbiError(f"decimals() of {address} is {value}")
        return value

    def latest_round(self, address: str) -> RoundData:
        return decode_round_data(self.rpc.eth_call(address, SELECTOR_LATEST_ROUND_DATA))

    def get_round(self, address: str, round_id: int) -> RoundData | None:
        """The round, or None when the aggregator has no data for it.

        Newer aggregators revert ("No data present"); older ones return zeros.
        """
        try:
            rd = decode_round_data(
                self.rpc.eth_call(address, encode_call(SELECTOR_GET_ROUND_DATA, round_id))
            )
        except ExecutionReverted:
            return None
        return None if rd.updated_at == 0 else rd
