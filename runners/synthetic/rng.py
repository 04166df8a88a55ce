"""Seeded random streams and identifiers (tx hashes, addresses) drawn from them."""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict

import numpy as np


def substream(seed: int, name: str) -> np.random.Generator:
    """An independent PCG64 stream per phase, so adding draws to one phase never shifts another.

    The name is folded in with crc32 (stable across processes, unlike ``hash``).
    """
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))
    )


def hex_string(rng: np.random.Generator, n_bytes: int) -> str:
    return rng.bytes(n_bytes).hex()


def address(rng: np.random.Generator) -> str:
    """A fresh EVM address (lower case, as many indexers write them)."""
    return "0x" + hex_string(rng, 20)


def addresses(rng: np.random.Generator, n: int) -> list[str]:
    return [address(rng) for _ in range(n)]


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58check(payload: bytes) -> str:
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


def tron_address(rng: np.random.Generator) -> str:
    """A well-formed Tron address: base58check of 0x41 + 20 bytes (starts with T)."""
    return base58check(b"\x41" + rng.bytes(20))


class Ledger:
    """Hands out tx hashes and log indexes so that indexes increase within every block.

    A tx reserves all its logs at once, so two txs never interleave inside a block.
    """

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._next_log: dict[tuple[str, int], int] = defaultdict(int)

    def tx(self, chain_id: str, block: int, n_logs: int = 1) -> tuple[str, int]:
        tx_hash = "0x" + hex_string(self._rng, 32)
        key = (chain_id, block)
        first = self._next_log[key]
        self._next_log[key] = first + n_logs
        return tx_hash, first
