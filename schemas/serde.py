"""Turning contract instances into JSON, Avro and Arrow rows, and back."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from functools import cache
from typing import Any

import fastavro
import pyarrow as pa
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


def _convert(value: Any, decimal: Callable[[Decimal], Any]) -> Any:
    """A value with nested models as dicts of their fields and lists element by element,
    recursively, and each Decimal as ``decimal`` makes it (Avro, Arrow and plain dicts differ
    only there)."""
    if isinstance(value, Decimal):
        return decimal(value)
    if isinstance(value, BaseModel):
        return {k: _convert(getattr(value, k), decimal) for k in type(value).model_fields}
    if isinstance(value, list):
        return [_convert(v, decimal) for v in value]
    return value


def _avro_value(value: Any) -> Any:
    return _convert(value, str)


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
    return _convert(value, to_numeric)


def to_row(record: BaseModel) -> dict[str, Any]:
    """A dict ready for an Arrow/Parquet writer or BigQuery: Decimals at NUMERIC scale."""
    return {k: _arrow_value(getattr(record, k)) for k in type(record).model_fields}


# Values Arrow takes as they are (a Decimal too, when its scale fits the column's).
_PLAIN = frozenset({str, int, float, bool, type(None), datetime, Decimal})


def _plain(value: Any) -> Any:
    """Nested models as dicts, Decimals as they are (Arrow rescales them)."""
    return _convert(value, lambda d: d)


def to_arrow_table(records: list[BaseModel], schema: pa.Schema) -> pa.Table:
    """``pa.Table.from_pylist([to_row(r) for r in records], schema)``, built column by column:
    the same table without a dict per row (a sink's hot path). Arrow rescales a Decimal to the
    column's scale only when no digit is lost; a column holding a longer one is rounded first,
    as ``to_row`` rounds (half-even, NUMERIC's 9 places)."""
    columns = []
    for name in schema.names:
        values = [getattr(r, name) for r in records]
        if any(type(v) not in _PLAIN for v in values):
            values = [v if type(v) in _PLAIN else _plain(v) for v in values]
        try:
            column = pa.array(values, type=schema.field(name).type)
        except pa.ArrowInvalid:  # a Decimal with more places than the column keeps
            rounded = [_arrow_value(getattr(r, name)) for r in records]
            column = pa.array(rounded, type=schema.field(name).type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def to_json_dict(record: BaseModel) -> dict[str, Any]:
    return json.loads(record.model_dump_json())
