"""Generate Avro, BigQuery JSON and Arrow schemas from the pydantic contracts.

Run ``defi-risk schemas generate`` after changing a model; ``defi-risk schemas check`` (and the
test suite) fails when a committed generated file is stale.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel

from schemas.registry import TABLES, TOPICS, avro_name
from schemas.types import BQ

SCHEMA_DIR = Path(__file__).resolve().parent
AVRO_NAMESPACE = "io.defirisk.v1"
NUMERIC_SCALE = 9  # BigQuery NUMERIC: precision 38, scale 9


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # string, int, float, bool, numeric, timestamp, date, json, record
    nullable: bool
    repeated: bool
    description: str
    model: type[BaseModel] | None = None  # for records


def _resolve(tp: Any, metadata: list[Any]) -> tuple[str, bool, bool, type[BaseModel] | None]:
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *extra = get_args(tp)
        return _resolve(base, metadata + list(extra))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only Optional[X] unions are supported, got {tp}")
        kind, _, repeated, model = _resolve(args[0], metadata)
        return kind, True, repeated, model
    if origin is list:
        (inner,) = get_args(tp)
        kind, nullable, repeated, model = _resolve(inner, metadata)
        if nullable or repeated:
            raise TypeError(f"lists of optionals or of lists are not supported: {tp}")
        return kind, False, True, model
    if origin is Literal:
        return "string", False, False, None
    for marker in metadata:
        if isinstance(marker, BQ):
            return (
                {
                    "NUMERIC": "numeric",
                    "TIMESTAMP": "timestamp",
                    "JSON": "json",
                    "STRING": "string",
                }[marker.type],
                False,
                False,
                None,
            )
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "record", False, False, tp
    simple = {
        str: "string",
        int: "int",
        float: "float",
        bool: "bool",
        Decimal: "numeric",
        datetime: "timestamp",
        date: "date",
    }
    if tp in simple:
        return simple[tp], False, False, None
    raise TypeError(f"unsupported field type {tp!r}")


def fields_of(model: type[BaseModel]) -> list[FieldSpec]:
    specs = []
    for name, info in model.model_fields.items():
        kind, nullable, repeated, sub = _resolve(info.annotation, list(info.metadata))
        if not info.description:
            raise ValueError(f"{model.__name__}.{name} has no description")
        specs.append(FieldSpec(name, kind, nullable, repeated, info.description, sub))
    return specs


# ---------------------------------------------------------------------------------------- Avro
def _avro_type(spec: FieldSpec, namespace: str) -> Any:
    base: Any
    if spec.kind == "record":
        assert spec.model is not None
        base = avro_record(spec.model, spec.model.__name__, namespace)
    else:
        base = {
            "string": "string",
            "json": "string",
            "numeric": "string",  # decimal string on the wire: no float rounding, any scale
            "int": "long",
            "float": "double",
            "bool": "boolean",
            "timestamp": {"type": "long", "logicalType": "timestamp-micros"},
            "date": {"type": "int", "logicalType": "date"},
        }[spec.kind]
    if spec.repeated:
        base = {"type": "array", "items": base}
    return ["null", base] if spec.nullable else base


def avro_record(model: type[BaseModel], name: str, namespace: str = AVRO_NAMESPACE) -> dict:
    fields = []
    for spec in fields_of(model):
        field: dict[str, Any] = {
            "name": spec.name,
            "type": _avro_type(spec, namespace),
            "doc": spec.description,
        }
        if spec.nullable:
            field["default"] = None
        elif spec.repeated:
            field["default"] = []
        fields.append(field)
    doc = getattr(model, "doc", "") or (model.__doc__ or "").strip().splitlines()[0]
    return {"type": "record", "name": name, "namespace": namespace, "doc": doc, "fields": fields}


def avro_schema(topic: str) -> dict:
    return avro_record(TOPICS[topic], TOPICS[topic].__name__)


# ------------------------------------------------------------------------------------ BigQuery
_BQ_TYPES = {
    "string": "STRING",
    "json": "JSON",
    "numeric": "NUMERIC",
    "int": "INT64",
    "float": "FLOAT64",
    "bool": "BOOL",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "record": "RECORD",
}


def bigquery_fields(model: type[BaseModel]) -> list[dict]:
    out = []
    for spec in fields_of(model):
        mode = "REPEATED" if spec.repeated else ("NULLABLE" if spec.nullable else "REQUIRED")
        field: dict[str, Any] = {
            "name": spec.name,
            "type": _BQ_TYPES[spec.kind],
            "mode": mode,
            "description": spec.description,
        }
        if spec.kind == "record":
            assert spec.model is not None
            field["fields"] = bigquery_fields(spec.model)
        out.append(field)
    return out


# --------------------------------------------------------------------------------------- Arrow
def _arrow_type(spec: FieldSpec) -> pa.DataType:
    if spec.kind == "record":
        assert spec.model is not None
        base = pa.struct(
            [
                pa.field(s.name, _arrow_type(s), nullable=s.nullable or s.repeated)
                for s in fields_of(spec.model)
            ]
        )
    else:
        base = {
            "string": pa.string(),
            "json": pa.string(),
            "numeric": pa.decimal128(38, NUMERIC_SCALE),
            "int": pa.int64(),
            "float": pa.float64(),
            "bool": pa.bool_(),
            "timestamp": pa.timestamp("us", tz="UTC"),
            "date": pa.date32(),
        }[spec.kind]
    return pa.list_(base) if spec.repeated else base


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    return pa.schema(
        [
            pa.field(s.name, _arrow_type(s), nullable=s.nullable or s.repeated)
            for s in fields_of(model)
        ]
    )


# -------------------------------------------------------------------------------- BigQuery DDL
SQL_DIR = SCHEMA_DIR.parent / "sql"
# Partitions that may expire: operational data only. Risk, surveillance and compliance rows are
# kept (auditors ask for any day of the last two years; compliance records for years more).
PARTITION_EXPIRATION_DAYS = {"dead_letter": 90}
_CLUSTERABLE = {"STRING", "INT64", "NUMERIC", "BIGNUMERIC", "BOOL", "DATE", "TIMESTAMP", "DATETIME"}


def _sql_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ddl_type(field: dict) -> str:
    if field["type"] == "RECORD":
        inner = ", ".join(
            f"{f['name']} {_ddl_type(f)}{' NOT NULL' if f['mode'] == 'REQUIRED' else ''}"
            for f in field["fields"]
        )
        base = f"STRUCT<{inner}>"
    else:
        base = field["type"]
    return f"ARRAY<{base}>" if field["mode"] == "REPEATED" else base


def table_ddl(table: str, dataset: str = "risk") -> str:
    """CREATE TABLE for one table: partitioned by the DATE of its event time, clustered by its
    key fields (BigQuery allows 4, of orderable scalar types)."""

    model = TABLES[table]
    fields = bigquery_fields(model)
    types_of = {f["name"]: f for f in fields}
    part = types_of[model.event_time_field]
    if part["type"] not in ("TIMESTAMP", "DATE") or part["mode"] == "REPEATED":
        raise ValueError(f"{table}: partition column {part['name']} is {part['type']}")
    cluster = list(model.key_fields[:4])
    bad = [c for c in cluster if types_of[c]["type"] not in _CLUSTERABLE]
    if bad:
        raise ValueError(f"{table}: cannot cluster by {bad}")
    cols = ",\n".join(
        f"  {f['name']} {_ddl_type(f)}{' NOT NULL' if f['mode'] == 'REQUIRED' else ''}"
        f" OPTIONS(description={_sql_string(f['description'])})"
        for f in fields
    )
    partition = part["name"] if part["type"] == "DATE" else f"DATE({part['name']})"
    options = [f"description={_sql_string(model.doc)}"]
    if table in PARTITION_EXPIRATION_DAYS:
        options.append(f"partition_expiration_days={PARTITION_EXPIRATION_DAYS[table]}")
    opts = ",\n  ".join(options)
    return (
        f"-- Generated from schemas/ ({model.__name__}) by `defi-risk schemas generate`; do not edit.\n"
        f"CREATE TABLE IF NOT EXISTS {dataset}.{table} (\n{cols}\n)\n"
        f"PARTITION BY {partition}\n"
        f"CLUSTER BY {', '.join(cluster)}\n"
        f"OPTIONS(\n  {opts}\n);\n"
    )


# ---------------------------------------------------------------------------------- generation
def rendered_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for topic in TOPICS:
        files[SCHEMA_DIR / "avro" / f"{avro_name(topic)}.avsc"] = (
            json.dumps(avro_schema(topic), indent=2) + "\n"
        )
    for table, model in TABLES.items():
        files[SCHEMA_DIR / "bigquery" / f"{table}.json"] = (
            json.dumps(bigquery_fields(model), indent=2) + "\n"
        )
        files[SQL_DIR / "ddl" / f"{table}.sql"] = table_ddl(table)
    return files


def _generated_dirs() -> tuple[tuple[Path, str], ...]:
    return (
        (SCHEMA_DIR / "avro", "*.avsc"),
        (SCHEMA_DIR / "bigquery", "*.json"),
        (SQL_DIR / "ddl", "*.sql"),
    )


def stale_files() -> list[Path]:
    """Generated files that are missing, differ from the models, or are no longer generated."""
    files = rendered_files()
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    for folder, pattern in _generated_dirs():
        stale += [p for p in folder.glob(pattern) if p not in files]
    return sorted(stale)


def write_files() -> list[Path]:
    files = rendered_files()
    for folder, pattern in _generated_dirs():
        folder.mkdir(parents=True, exist_ok=True)
        for orphan in folder.glob(pattern):
            if orphan not in files:
                orphan.unlink()
    for path, text in files.items():
        path.write_text(text)
    return sorted(files)
