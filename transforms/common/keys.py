"""ComputeVaR: portfolio VaR and ES per account from composite prices and settlements.

    pytest tests/transforms/var/test_transform.py

Design (linear in events, the same in batch and streaming):

1. ``BucketCloses``: each asset's close per bucket (a day, or an hour with intraday returns) is
   the last non-null composite price in it; keyed by (asset, bucket end), so a key holds one window.
2. Accounts are spread over ``shards`` keys by a stable hash of the account id; every close is sent
   to every shard (a handful of elements per bucket), each settlement to its account's shard.
3. ``VarShardFn`` keeps the shard's ``VarShardEngine`` (positions and close history) in state and
   values the whole shard at each bucket end in one vectorised step (exposures @ returns), driven
   by an event-time timer set to the latest bucket end seen; in batch it fires once, at the end.

Refused settlements (duplicates, balances below zero) are dead letters, unless
``dead_letter_rejections`` is off: in the risk pipeline ``MonitorMargins`` applies the same
``PositionBook`` rules to the same settlements and owns their dead letters, so each refused
settlement is one dead-letter row, not two (VaR still counts them, in ``var/...refused``).
"""

from __future__ import annotations

import hashlib


def shard_of(account_id: str, shards: int) -> int:
    """Stable across processes and runs (Python's hash() is salted per process)."""
    return (
        int.from_bytes(hashlib.blake2b(account_id.encode(), digest_size=8).digest(), "big") % shards
    )
