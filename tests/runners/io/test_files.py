"""The batch table sink: rows written in chunks, each chunk a whole Parquet file, and an empty
table still present with its contract's columns."""

from __future__ import annotations

from datetime import UTC, datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from runners.direct import local_pipeline_options
from runners.io.files import fill_empty_tables, write_table
from schemas.codegen import arrow_schema
from schemas.serde import to_row
from schemas.tables import PriceRow

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def _rows(n: int) -> list[PriceRow]:
    return [
        PriceRow(price_id=f"p{i:04d}", asset="BTC", price=f"{100 + i}.5", status="ok",
                 n_sources=2, window_start=T0, event_time=T0)
        for i in range(n)
    ]  # fmt: skip


def test_the_batch_sink_writes_every_row_in_bounded_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("runners.io.files.CHUNK_ROWS", 40)  # read when the step is built
    rows = _rows(250)
    with beam.Pipeline(options=local_pipeline_options()) as p:
        write_table(p | beam.Create(rows), "prices", tmp_path)
    files = sorted((tmp_path / "tables" / "prices").glob("*.parquet"))
    sizes = [pq.read_metadata(f).num_rows for f in files]
    assert sum(sizes) == 250 and max(sizes) <= 40 and len(files) >= 7
    assert not list((tmp_path / "tables" / "prices").glob(".*"))  # no temporary file left
    got = pq.read_table(files, schema=arrow_schema(PriceRow)).to_pylist()
    want = pa.Table.from_pylist([to_row(r) for r in rows], schema=arrow_schema(PriceRow))
    assert sorted(got, key=lambda r: r["price_id"]) == want.to_pylist()


def test_a_table_without_rows_gets_one_empty_file_with_its_columns(tmp_path):
    with beam.Pipeline(options=local_pipeline_options()) as p:
        write_table(p | beam.Create([]).with_output_types(PriceRow), "prices", tmp_path)
    assert not list((tmp_path / "tables" / "prices").glob("*.parquet"))
    fill_empty_tables(tmp_path, ["prices"])
    table = pq.read_table(tmp_path / "tables" / "prices")
    assert table.num_rows == 0 and table.schema.names == arrow_schema(PriceRow).names
    fill_empty_tables(tmp_path, ["prices"])  # idempotent: still one file
    assert len(list((tmp_path / "tables" / "prices").glob("*.parquet"))) == 1
