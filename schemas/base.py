"""Base class of every contract model."""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache
from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A typed record: one topic message or one table row.

    ``event_time_field`` names the field that is the element's event timestamp in Beam and the
    BigQuery partitioning column; ``key_fields`` are the clustering columns (main key first).
    """

    # Unknown extra fields are ignored so producers can add fields (additive, NULLABLE only).
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    event_time_field: ClassVar[str]
    key_fields: ClassVar[tuple[str, ...]] = ()
    doc: ClassVar[str] = ""

    def event_timestamp(self) -> datetime:
        return getattr(self, self.event_time_field)

    def message_id(self) -> str:
        """The id a redelivery shares: ``event_id`` where the contract has one, else a hash of
        the key fields and the event time (an account profile version, for example)."""
        own = getattr(self, "event_id", None)
        if own:
            return own
        keys = (getattr(self, f) for f in self.key_fields)
        return deterministic_id(type(self).__name__, *keys, self.event_timestamp())


def deterministic_id(*parts: object) -> str:
    """A stable id from key fields, so replays and redeliveries produce the same row ids."""
    text = "\x1f".join(
        p
        if type(p) is str
        else ("" if p is None else (p.isoformat() if isinstance(p, datetime) else str(p)))
        for p in parts
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_set = object.__setattr__


@cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)  # pydantic's class attribute costs ~4 µs per read


def construct(model: type[BaseModel], values: dict) -> BaseModel:
    """``model.model_construct(**values)`` for ``values`` that hold every field, already checked
    (a hot path's own rows): the same instance -- fields, fields set, equality, dumps, pickling --
    at a third of the cost (measured ~3 µs against 9.3 µs for a margin_health row). The fields
    are put in declaration order, as ``model_construct`` does: dumps follow that order."""
    instance = model.__new__(model)
    _set(instance, "__dict__", {name: values[name] for name in _field_names(model)})
    _set(instance, "__pydantic_fields_set__", set(values))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance
