"""Turning contract instances into JSON, Avro and Arrow rows, and back."""

from __future__ import annotations

import io
import json
from decimal import ROUND_HALF_EVEN, Context, Decimal
from functools import cache
from typing import Any

import fastavro
from pydantic import BaseModel

from schemas.codegen import NUMERIC_SCALE, avro_record

_QUANTUM = Decimal(1).scaleb(-NUMERIC_SCALE)
# NUMERIC holds 38 digits; the default context's 28 fails to quantize values from 1e19 upward.
_NUMERIC_CTX = Context(prec=40)


def to_json(record: BaseModel) -> str:
    """Compact JSON; Decimals become strings and timestamps ISO-8601 UTC."""
    return record.model_dump_json()


def from_json(model: type[BaseModel], text: str | bytes) -> BaseModel:
    return model.model_validate_json(text)


def _avro_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return {k: _avro_value(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, list):
        return [_avro_value(v) for v in value]
    return value


@cache
def parsed_avro_schema(model: type[BaseModel]) -> Any:
    return fastavro.parse_schema(avro_record(model, model.__name__))


def to_avro(record: BaseModel) -> bytes:
    """Schemaless Avro (the Pub/Sub message body; the schema lives on the topic)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_avro_schema(type(record)), _avro_value(record))
    return buf.getvalue()


def from_avro(model: type[BaseModel], payload: bytes) -> BaseModel:
    buf = io.BytesIO(payload)
    data = fastavro.schemaless_reader(buf, parsed_avro_schema(model), None)
    if buf.tell() != len(payload):
        raise ValueError(f"{len(payload) - buf.tell()} trailing bytes after the Avro record")
    return model.model_validate(data)


def to_numeric(value: Decimal) -> Decimal:
    """``value`` at NUMERIC's scale: 9 decimals, rounded half-even as BigQuery does."""
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_NUMERIC_CTX)


def _arrow_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return to_numeric(value)
    if isinstance(value, BaseModel):
        return {k: _arrow_value(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, list):
        return [_arrow_value(v) for v in value]
    return value


def to_row(record: BaseModel) -> dict[str, Any]:
    """A dict ready for an Arrow/Parquet writer or BigQuery: Decimals at NUMERIC scale."""
    return {k: _arrow_value(getattr(record, k)) for k in type(record).model_fields}


def to_json_dict(record: BaseModel) -> dict[str, Any]:
    return json.loads(record.model_dump_json())
