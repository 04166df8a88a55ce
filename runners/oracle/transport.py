"""HTTP with a per-request timeout over stdlib ``urllib``; failures become ``SourceError``s."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from runners.oracle.resilience import PermanentSourceError, SourceError

USER_AGENT = "defi-risk-oracle-poller/0.1"
MAX_BODY = 8 * 1024 * 1024  # a price answer is a few kB; more is a broken proxy


def fetch_json(url: str, *, timeout_s: float, body: Any = None) -> Any:
    """GET (or POST ``body`` as JSON) and parse the JSON answer.

    Timeouts, connection errors, HTTP 429/5xx and unparsable bodies are retryable; other 4xx
    are permanent (a wrong URL or a rejected request does not heal by retrying).
    """
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as err:
        detail = _error_body(err)
        if err.code == 429 or err.code >= 500:
            raise SourceError(f"HTTP {err.code} from {_where(url)}: {detail}") from err
        raise PermanentSourceError(f"HTTP {err.code} from {_where(url)}: {detail}") from err
    except TimeoutError as err:
        raise SourceError(f"timeout after {timeout_s:g} s from {_where(url)}") from err
    except urllib.error.URLError as err:
        reason = "timeout" if isinstance(err.reason, TimeoutError) else str(err.reason)
        raise SourceError(f"{reason} from {_where(url)}") from err
    except (OSError, http.client.HTTPException) as err:
        raise SourceError(f"{type(err).__name__} from {_where(url)}: {err}") from err
    if len(raw) > MAX_BODY:
        raise SourceError(f"answer from {_where(url)} is larger than {MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except ValueError as err:
        raise SourceError(f"invalid JSON from {_where(url)}: {raw[:80]!r}") from err


def _where(url: str) -> str:
    # never log a query string or an API key embedded in a provider URL path
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


def _error_body(err: urllib.error.HTTPError) -> str:
    try:
        return err.read(200).decode("utf-8", "replace").strip() or err.reason
    except Exception:  # the body of an error is best effort
        return str(err.reason)
