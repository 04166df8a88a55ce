"""Dead-letter rows, and the output tags of every domain composite.

The composite contract: every domain composite returns a mapping of tag to PCollection holding
its main output under ``MAIN_TAG``, its alerts under ``ALERTS_TAG`` and its dead letters under
``DEAD_LETTER_TAG`` (each may be empty), plus any further outputs of its own (``MonitorMargins``'
``events``). ``pipelines/graph.py`` reads them by tag. Every record a step rejects becomes one
dead-letter row, with a reason code.

Pure functions; the Beam side only tags outputs and counts reasons with Metrics counters.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.base import deterministic_id
from schemas.serde import to_json
from schemas.tables import DeadLetterRow

MAIN_TAG = "main"
ALERTS_TAG = "alerts"  # alerts.*.v1
DEAD_LETTER_TAG = "dead_letter"
MAX_PAYLOAD_CHARS = 100_000  # keep one huge payload from bloating the table; the length is noted

# pydantic error types -> our reason codes (the codes are counter names and table values)
_PYDANTIC_REASONS = {
    "missing": "missing_field",
    "json_invalid": "invalid_json",
    "json_type": "invalid_json",
    "finite_number": "not_finite",
    "not_finite": "not_finite",
    "absurd_timestamp": "absurd_timestamp",
    "naive_timestamp": "absurd_timestamp",
    "out_of_range": "out_of_range",
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "less_than_equal": "out_of_range",
    "string_too_long": "too_large",
    "too_long": "too_large",
    "string_too_short": "empty_field",
    "too_short": "empty_field",
    "invalid_address": "invalid_address",
    "invalid_chain_id": "invalid_chain_id",
    "control_character": "control_character",
}


def reason_from_validation(err: ValidationError) -> str:
    """The reason code of the first error pydantic reports."""
    first = err.errors()[0]
    kind = first["type"]
    if kind in ("non_positive", "negative"):
        field = first["loc"][-1] if first["loc"] else "value"
        return f"{kind}_{field}"
    return _PYDANTIC_REASONS.get(kind, "wrong_type")


def short_message(err: Exception) -> str:
    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors()[:5]:
            loc = ".".join(str(x) for x in e["loc"]) or "<record>"
            parts.append(f"{loc}: {e['msg']}")
        return "; ".join(parts)
    return f"{type(err).__name__}: {err}"[:2000]


def encode_payload(raw: Any, binary: bool = False) -> tuple[str, str]:
    """The payload as text for the table: UTF-8 when it is text, base64 when binary.

    ``binary`` forces base64 for formats such as Avro whose bytes may happen to decode as UTF-8.
    """
    if isinstance(raw, bytes) and binary:
        text, enc = base64.b64encode(raw).decode("ascii"), "base64"
    elif isinstance(raw, bytes):
        try:
            text, enc = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, enc = base64.b64encode(raw).decode("ascii"), "base64"
    elif isinstance(raw, str):
        text, enc = raw, "utf-8"
    else:
        text, enc = json.dumps(raw, default=str, sort_keys=True), "json"
    if len(text) > MAX_PAYLOAD_CHARS:
        text = text[:MAX_PAYLOAD_CHARS] + f"...[truncated, {len(text)} chars]"
    return text, enc


def make_dead_letter(
    *,
    source: str,
    stage: str,
    reason: str,
    error: str,
    raw: Any,
    event_time: datetime | None = None,
    processing_time: datetime | None = None,
    binary: bool = False,
) -> DeadLetterRow:
    payload, encoding = encode_payload(raw, binary)
    return DeadLetterRow(
        dead_letter_id=deterministic_id(source, stage, reason, payload),
        source=source,
        stage=stage,
        error_reason=reason,
        error=error,
        raw_payload=payload,
        payload_encoding=encoding,
        event_time=event_time,
        # Processing time is wall-clock by definition; it is never used for a risk number.
        processing_time=processing_time or datetime.now(UTC),
    )


def refused_settlement(stage: str, rejected) -> DeadLetterRow:
    """The dead letter of a settlement the position rules refused (``duplicate``,
    ``negative_balance``, ``late_settlement``): ``rejected`` has ``outcome`` and ``settlement``."""
    return make_dead_letter(
        source="settlements.v1",
        stage=stage,
        reason=rejected.outcome.reason,
        error=rejected.outcome.message,
        raw=to_json(rejected.settlement),
        event_time=rejected.settlement.event_time,
    )


def composite_outputs(result, *more: str) -> dict:
    """The composite contract from a multi-output step declared with ``main=MAIN_TAG``,
    ``ALERTS_TAG`` and ``DEAD_LETTER_TAG``: {tag: PCollection}, plus the tags in ``more``."""
    return {tag: result[tag] for tag in (MAIN_TAG, ALERTS_TAG, DEAD_LETTER_TAG, *more)}
