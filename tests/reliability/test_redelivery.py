"""Batch redelivery: every line of every topic file twice gives the same tables and alerts.

Before, compliance screenings went from 5,095 to 9,903 rows and 9 sanctions alerts were emitted
twice. Now each copy after the first is a ``duplicate`` dead letter (``Dedup<Topic>`` for trades,
liquidity, transfers and profiles; ``CompositePrices.duplicate_update`` and the margin stage's
``duplicate`` for prices and settlements), and the books balance.

    .venv/bin/pytest tests/reliability/test_redelivery.py -q
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runners.local.run import run_local
from runners.synthetic.generator import generate
from schemas.registry import ALERT_TOPICS, INPUT_TOPICS, TABLES


def table_ids(out: Path, table: str) -> Counter:
    id_field = next(iter(TABLES[table].model_fields))
    files = sorted((out / "tables" / table).glob("*.parquet"))
    return Counter(
        i for f in files for i in pq.read_table(f, columns=[id_field])[id_field].to_pylist()
    )


def alert_lines(out: Path, topic: str) -> Counter:
    path = out / "alerts" / f"{topic}.jsonl"
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("redelivery")
    once, twice = root / "once", root / "twice"
    generate(once, days=1, accounts=20, seed=5)
    twice.mkdir()
    copies = 0
    for topic in INPUT_TOPICS:
        lines = (once / f"{topic}.jsonl").read_bytes().splitlines(keepends=True)
        (twice / f"{topic}.jsonl").write_bytes(b"".join(line + line for line in lines))
        copies += len(lines)
    a = run_local(once, root / "out_once")
    b = run_local(twice, root / "out_twice")
    return root / "out_once", root / "out_twice", a, b, copies


def test_every_table_and_alert_is_the_same_when_every_line_comes_twice(runs):
    once, twice, a, b, _ = runs
    for table in TABLES:
        if table != "dead_letter" and (once / "tables" / table).exists():
            assert table_ids(twice, table) == table_ids(once, table), table
    assert table_ids(once, "compliance_screenings")  # the case that doubled before
    for topic in ALERT_TOPICS:
        assert alert_lines(twice, topic) == alert_lines(once, topic), topic


def test_the_books_balance_and_each_copy_is_a_dead_letter(runs):
    _, _, a, b, _ = runs
    assert a.balanced() and b.balanced()
    for topic, counts in b.topics.items():
        assert counts["in"] == 2 * a.topics[topic]["in"]
    # each second copy of a trade, liquidity event, transfer and profile is a Dedup dead letter
    dedup = {"dex.trades.v1": "DedupDexTrades", "liquidity.v1": "DedupLiquidity",
             "transfers.v1": "DedupTransfers", "accounts.profiles.v1": "DedupAccountsProfiles"}  # fmt: skip
    for topic, stage in dedup.items():
        assert b.rejected_downstream.get(f"{stage}.duplicate") == a.topics[topic]["out"], (
            topic,
            b.rejected_downstream,
        )
    assert b.rejected_downstream.get("CompositePrices.duplicate_update", 0) > 0
