"""Column helpers shared by the domains' day batches (pure, no Beam): Arrow columns to and from
numpy, exact decimal prices as int64 units of 1e-9, and a day's settlement rows as models.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from schemas.events import Settlement

MICROS = 1_000_000
NANO = 1_000_000_000  # prices are int64 multiples of 1e-9 (BigQuery NUMERIC's scale)


def day_bounds_us(day: date) -> tuple[int, int]:
    lo = int(datetime.combine(day, time(0), tzinfo=UTC).timestamp()) * MICROS
    return lo, lo + 86_400 * MICROS


def to_micros(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)


def to_nano(col) -> np.ndarray:
    """decimal128(38, 9) prices as int64 units of 1e-9, read straight from the 128-bit values
    (exact; a price above 9.2e9 USD would not fit and is refused)."""
    arr = pc.cast(col, pa.decimal128(38, 9))
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    words = np.frombuffer(arr.buffers()[1], dtype="<i8")
    pairs = words[2 * arr.offset : 2 * (arr.offset + len(arr))].reshape(-1, 2)
    low, high = pairs[:, 0], pairs[:, 1]
    if not np.array_equal(high, low >> 63):
        raise ValueError("a price does not fit in int64 units of 1e-9")
    return low.copy()


def name_lists(names: np.ndarray, mask: np.ndarray) -> pa.ListArray:
    """Per row of ``mask`` (rows x names), the names it marks, in column order, as a
    list<string> array built from offsets (no Python list per row)."""
    mask = np.asarray(mask, dtype=bool).reshape(len(mask), len(names))
    offsets = np.zeros(len(mask) + 1, dtype=np.int32)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    values = pa.array(names[np.nonzero(mask)[1]].tolist(), pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def decimal_array(nano: np.ndarray, null: np.ndarray) -> pa.Array:
    """int64 units of 1e-9 as a decimal128(38, 9) array (null where ``null``), built from its
    buffers: the 128-bit little-endian values are the int64 and its sign extension (the exact
    inverse of ``to_nano``; 300x faster than Decimal objects)."""
    words = np.empty((len(nano), 2), dtype="<i8")
    words[:, 0] = nano
    words[:, 1] = np.asarray(nano, dtype=np.int64) >> 63
    validity = pa.array(~np.asarray(null, dtype=bool)).buffers()[1]
    return pa.Array.from_buffers(
        pa.decimal128(38, 9),
        len(nano),
        [validity, pa.py_buffer(words.tobytes())],
        null_count=int(np.count_nonzero(null)),
    )


# ------------------------------------------------------------------------------------ VaR
def settlements_of(table: pa.Table) -> tuple[list[Settlement], list[tuple[dict, str]]]:
    """Settlement models of a day's rows, in event-time order (PositionBook takes models), and
    the rows the contract refuses, each with its error: a bad row never stops a backfill."""
    valid, invalid = [], []
    for r in table.to_pylist():
        try:
            valid.append(Settlement.model_validate(r))
        except ValidationError as err:
            invalid.append((r, str(err).replace("\n", " ")[:500]))
    return valid, invalid
