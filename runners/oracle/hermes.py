"""Pyth prices from the Hermes HTTP API (``GET /v2/updates/price/latest?ids[]=..&parsed=true``).

The answer is ``{"binary": {"encoding": "hex", "data": [...]}, "parsed": [{"id": "<hex, no 0x>",
"price": {"price", "conf", "expo", "publish_time"}, "ema_price": {...}, "metadata": {...}}]}``;
each parsed update goes to ``transforms.prices.oracles.decode_pyth_update`` unchanged.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

from runners.oracle.resilience import SourceError
from runners.oracle.transport import fetch_json

LATEST_PATH = "/v2/updates/price/latest"


class HermesClient:
    def __init__(self, base_url: str, timeout_s: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def url(self, ids: Sequence[str]) -> str:
        # Hermes takes the repeated ``ids[]`` key; 0x-prefixed ids are accepted
        query = urllib.parse.urlencode([("ids[]", i) for i in ids] + [("parsed", "true")])
        return f"{self.base_url}{LATEST_PATH}?{query}"

    def latest(self, ids: Sequence[str]) -> list[Any]:
        """The parsed updates; an answer without a ``parsed`` list is a retryable source error."""
        answer = fetch_json(self.url(ids), timeout_s=self.timeout_s)
        parsed = answer.get("parsed") if isinstance(answer, dict) else None
        if not isinstance(parsed, list):
            raise SourceError(f"Hermes answer has no 'parsed' list: {str(answer)[:120]!r}")
        return parsed
