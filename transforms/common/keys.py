"""Shard keys: which shard of a stateful stage an account, a transfer or a pool goes to."""

from __future__ import annotations

import hashlib


def shard_of(account_id: str, shards: int) -> int:
    """Stable across processes and runs (Python's hash() is salted per process)."""
    return (
        int.from_bytes(hashlib.blake2b(account_id.encode(), digest_size=8).digest(), "big") % shards
    )
