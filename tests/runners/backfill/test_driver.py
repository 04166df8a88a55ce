"""The backfill: same rows as the streaming pipeline, idempotent days, resume after a kill.

pytest tests/runners/backfill/test_driver.py
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runners.backfill import config as backfill_config
from runners.backfill.config import BackfillConfig
from runners.backfill.driver import backfill, resume_point
from runners.backfill.files import (
    BackfillError,
    marker_path,
    scan_days,
    state_path,
    table_file,
    write_marker,
)
from runners.local.run import run_local
from runners.synthetic.bulk import generate_history

START, DAYS = date(2024, 1, 1), 12
FIRST, LAST = date(2024, 1, 3), date(2024, 1, 12)
VAR_ARGS = {"var_window": 5, "var_min_scenarios": 2, "margin_interval_s": 3600}
TABLES = ("prices", "portfolio_var", "margin_health", "margin_events", "dead_letter")
KEYS = {"prices": "price_id", "portfolio_var": "var_id", "margin_health": "row_id",
        "margin_events": "alert_id", "dead_letter": "dead_letter_id"}  # fmt: skip


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("history")
    generate_history(out, start=START, days=DAYS, assets=4, accounts=60, seed=11)
    return out


def config(history: Path, out: Path, **kw) -> BackfillConfig:
    base = dict(start=FIRST, end=LAST, input_dir=str(history), output_dir=str(out),
                workers=1, chunk_days=4, **VAR_ARGS)  # fmt: skip
    base.update(kw)
    return BackfillConfig(**base)


def tables(out: Path) -> dict[str, pd.DataFrame]:
    result = {}
    for name in TABLES:
        files = sorted((out / name).glob("date=*/part-*.parquet"))
        df = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
        result[name] = df.sort_values(KEYS[name]).reset_index(drop=True)
    return result


def same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for name in ("prices", "portfolio_var", "margin_health", "margin_events"):
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
    assert len(a["dead_letter"]) == len(b["dead_letter"])


@pytest.fixture(scope="module")
def clean(history, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clean")
    summary = backfill(config(history, out), say=lambda _m: None)
    return out, summary


def test_backfill_writes_every_table_for_every_day(clean):
    out, summary = clean
    assert summary["written"] == summary["days"] == 10 and summary["skipped"] == 0
    for day in pd.date_range(FIRST, LAST).date:
        for name in TABLES:
            assert (out / name / f"date={day}" / "part-00000.parquet").exists()
        marker = json.loads(marker_path(out, day).read_text())
        assert marker["rows"]["prices"] == 4 * 1440  # 4 assets, a row per minute
    t = tables(out)
    assert len(t["portfolio_var"]) > 0 and set(t["portfolio_var"].method) == {
        "historical",
        "parametric",
    }
    assert not list(out.rglob("*.tmp*"))  # every file was renamed into place


@pytest.fixture(scope="module")
def stream_run(history, tmp_path_factory) -> Path:
    """The streaming graph (risk pipeline, batch replay) over the same events."""
    tmp = tmp_path_factory.mktemp("stream")
    flat = tmp / "flat"
    flat.mkdir()
    for topic in ("market.prices.v1", "settlements.v1"):
        parts = sorted((history / topic).glob("date=*/*.parquet"))
        pq.write_table(
            pa.concat_tables([pq.read_table(p) for p in parts]), flat / f"{topic}.parquet"
        )
    stream = tmp / "out"
    report = run_local(
        flat, stream, pipeline="risk", input_format="parquet",
        extra_args=[f"--feed_registry={history / 'feeds.toml'}", "--var_interval=daily",
                    "--var_window=5", "--var_min_scenarios=2", "--var_shards=4",
                    "--margin_shards=4", "--margin_snapshot_s=3600"],
    )  # fmt: skip
    assert report.balanced()
    return stream


def test_backfill_equals_the_streaming_pipeline_on_the_same_events(clean, stream_run):
    """The proof that the two paths are one system: the streaming graph over the same events
    gives the backfill's rows, ids included, to 1e-9."""
    out, _ = clean
    stream = stream_run
    lo = pd.Timestamp(FIRST, tz="UTC")
    s_prices = pq.read_table(stream / "tables" / "prices").to_pandas()
    s_prices = s_prices[s_prices.event_time > lo].sort_values("price_id").reset_index(drop=True)
    s_var = pq.read_table(stream / "tables" / "portfolio_var").to_pandas()
    s_var = s_var[s_var.as_of > lo].sort_values("var_id").reset_index(drop=True)
    b = tables(out)
    assert len(s_prices) == len(b["prices"]) == 10 * 4 * 1440
    assert len(s_var) == len(b["portfolio_var"]) > 100
    for col in s_prices.columns:
        if col == "price":
            diff = (s_prices[col].astype(float) - b["prices"][col].astype(float)).abs().max()
            assert diff <= 1e-9, diff
        elif col in ("sources", "sources_set_aside"):
            assert s_prices[col].map(list).tolist() == b["prices"][col].map(list).tolist(), col
        else:
            pd.testing.assert_series_equal(
                s_prices[col], b["prices"][col], check_exact=False, rtol=1e-12
            )
    for col in s_var.columns:
        if col.endswith("_usd"):
            diff = (s_var[col].astype(float) - b["portfolio_var"][col].astype(float)).abs()
            assert (diff <= 1e-9 * s_var[col].astype(float).abs().clip(lower=1)).all(), col
        else:
            pd.testing.assert_series_equal(s_var[col], b["portfolio_var"][col], check_exact=True)


def test_backfill_margin_rows_equal_the_streaming_pipeline(history, clean, stream_run):
    """A day's partition holds what its events produced: a snapshot or price row stamped exactly
    at midnight was produced by the day before (as the window ending at midnight closes it)."""
    out, _ = clean
    lo = pd.Timestamp(FIRST, tz="UTC")
    b = tables(out)
    for name in ("margin_health", "margin_events"):
        s = pq.read_table(stream_run / "tables" / name).to_pandas()
        s = s[s.event_ts > lo].sort_values(KEYS[name]).reset_index(drop=True)
        assert len(s) == len(b[name]), name
        for col in s.columns:
            left, right = s[col], b[name][col]
            if col == "liquidation_prices":
                assert (
                    left.map(lambda x: [dict(d) for d in x]).tolist()
                    == right.map(lambda x: [dict(d) for d in x]).tolist()
                )
            else:
                assert [None if pd.isna(v) else v for v in left] == [
                    None if pd.isna(v) else v for v in right
                ], (name, col)
    assert len(b["margin_health"]) > 1000 and set(b["margin_health"].trigger) >= {
        "settlement",
        "snapshot",
    }


def test_rerunning_the_range_changes_nothing_and_force_replaces_without_duplicates(
    history, clean, tmp_path
):
    out, _ = clean
    before = tables(out)
    again = backfill(config(history, out), say=lambda _m: None)
    assert again["skipped"] == 10 and again["written"] == 0
    forced = backfill(config(history, out, force=True), say=lambda _m: None)
    assert forced["written"] == 10
    same(tables(out), before)


def test_an_overlapping_range_gives_the_clean_runs_rows(history, clean, tmp_path):
    out = tmp_path / "overlap"
    backfill(config(history, out, end=date(2024, 1, 8)), say=lambda _m: None)
    second = backfill(config(history, out, start=date(2024, 1, 6)), say=lambda _m: None)
    assert second["skipped"] == 3 and second["written"] == 4  # 6..8 done, 9..12 new
    backfill(config(history, out, start=date(2024, 1, 5), end=date(2024, 1, 10), force=True),
             say=lambda _m: None)  # fmt: skip
    same(tables(out), tables(clean[0]))


def test_another_configuration_recomputes_the_days(history, clean, tmp_path):
    out = tmp_path / "cfg"
    backfill(config(history, out), say=lambda _m: None)
    changed = backfill(config(history, out, var_window=4), say=lambda _m: None)
    assert changed["written"] == 10 and changed["skipped"] == 0


def test_another_configuration_never_resumes_from_the_first_ones_state(history, tmp_path):
    """The first run saves engine state at its chunk ends (Jan 4, 8, 12 with 4-day chunks from
    Jan 1). A run with another VaR window starting on Jan 5 must replay from the first day, not
    restore the Jan 4 state of the old window: its rows equal a clean run's."""
    out, clean_out = tmp_path / "shared", tmp_path / "clean4"
    backfill(config(history, out), say=lambda _m: None)
    later = dict(start=date(2024, 1, 5), var_window=4)
    backfill(config(history, out, **later), say=lambda _m: None)
    backfill(config(history, clean_out, **later), say=lambda _m: None)
    got, want = tables(out), tables(clean_out)
    for name in ("portfolio_var", "margin_health"):
        cut = got[name][got[name][KEYS[name]].isin(want[name][KEYS[name]])]
        assert len(cut) == len(want[name]) > 0
        pd.testing.assert_frame_equal(cut.reset_index(drop=True), want[name], check_exact=True)


def test_a_killed_run_resumes_where_it_stopped(history, clean, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "runners.cli", "backfill", "--start", str(FIRST), "--end",
           str(LAST), "--input", str(history), "--output", str(out), "--workers", "1",
           "--chunk-days", "2", "--var-window", "5", "--var-min-scenarios", "2",
           "--margin-interval-s", "3600"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 120
    markers = out / "_backfill" / "days"
    while time.monotonic() < deadline and len(list(markers.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(markers.glob("*.json")))
    assert 3 <= done < 10, done  # killed mid-run
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    # Markers are written day by day after each 2-day chunk (Jan 3-4, 5-6, ...): a kill between
    # a chunk's two markers leaves its first day done, but the engines resume from the chunk
    # before, so that day is written again.
    assert summary["skipped"] == done and summary["written"] == 10 - done + done % 2
    assert "days" in resumed.stdout and "ETA" in resumed.stdout  # progress lines
    same(tables(out), tables(clean[0]))


def test_a_uri_input_reads_the_same_partitions(history, clean, tmp_path):
    """The input goes through pyarrow's filesystems (gs:// on GCS): a file:// URI gives the
    local directory's rows."""
    out = tmp_path / "uri"
    cfg = config(history, out, input_dir=f"file://{history}", end=date(2024, 1, 5))
    assert backfill(cfg, say=lambda _m: None)["written"] == 3
    got, want = tables(out), tables(clean[0])
    for name in ("prices", "portfolio_var"):
        cut = want[name][
            want[name]["price_id" if name == "prices" else "var_id"].isin(got[name].iloc[:, 0])
        ]
        pd.testing.assert_frame_equal(got[name], cut.reset_index(drop=True), check_exact=True)


def test_bad_ranges_and_missing_input_are_clear_errors(history, tmp_path):
    with pytest.raises(BackfillError, match="before --start"):
        backfill(config(history, tmp_path / "x", start=LAST, end=FIRST))
    with pytest.raises(BackfillError, match="no prices for"):
        backfill(config(history, tmp_path / "x", end=date(2024, 2, 1)))
    with pytest.raises(BackfillError, match="generate --history"):
        backfill(replace(config(history, tmp_path / "x"), input_dir=str(tmp_path)))


def test_progress_is_a_bar_on_a_terminal_and_a_line_otherwise(capsys):
    from runners.backfill.driver import Progress, terminal_say

    p = Progress(total_days=10, done_days=4, events=1_000)
    assert p.bar().startswith("[" + "#" * 12 + "." * 18 + "] 4/10 days, 1,000 events")
    terminal_say(p.bar())
    terminal_say("a message")
    err = capsys.readouterr().err
    assert err.startswith("\r[") and "\na message\n" in err  # the bar redraws its own line


def test_array_validation_refuses_exactly_what_check_update_refuses(tmp_path):
    """validate_prices is check_update on columns: on the generator's price file, which holds
    every kind of update ValidatePrices refuses, both give the same reason for every row."""
    from runners.synthetic import generate
    from schemas.codegen import arrow_schema
    from schemas.events import PriceEvent
    from schemas.serde import to_row
    from transforms.prices.batch import validate_prices
    from transforms.prices.oracles import load_registry
    from transforms.prices.validation import check_update

    generate(tmp_path, days=1, accounts=5, seed=3)
    events = []
    for line in (tmp_path / "market.prices.v1.jsonl").read_bytes().splitlines():
        try:
            events.append(PriceEvent.model_validate_json(line))
        except ValueError:
            continue  # a malformed line: the parser's dead letter, not a validation rule
    registry = load_registry()
    rows = [to_row(e) for e in events]  # as a Parquet input holds them (NUMERIC scale 9)
    table = pa.Table.from_pylist(rows, schema=arrow_schema(PriceEvent))
    mask, bad = validate_prices(table, registry)
    expected = {i: r[0] for i, e in enumerate(events) if (r := check_update(e, registry))}
    assert {i: reason for i, reason, _ in bad} == expected
    assert set(expected.values()) >= {"stale", "confidence_too_wide", "unknown_feed"}
    assert mask.tolist() == [i not in expected for i in range(len(events))]


def test_the_code_version_is_part_of_the_fingerprint(tmp_path, monkeypatch):
    """Saved engine state names its classes by module path: a release that moves them raises
    CODE_VERSION, and state saved under another version is never resumed from."""
    cfg = BackfillConfig(FIRST, FIRST, str(tmp_path), str(tmp_path / "out"))
    before = cfg.fingerprint()
    monkeypatch.setattr(backfill_config, "CODE_VERSION", backfill_config.CODE_VERSION + 1)
    assert cfg.fingerprint() != before


# ------------------------------------------------------------------ what "done" means, repair
# The clean run replays from Jan 1 in chunks of 4 days: engine state after Jan 4, 8 and 12.
def damaged_copy(clean, tmp_path: Path) -> Path:
    """A copy of the clean run's output, to damage."""
    return Path(shutil.copytree(clean[0], tmp_path / "out"))


def test_a_deleted_partition_is_recomputed_and_reported(history, clean, tmp_path):
    out = damaged_copy(clean, tmp_path)
    day = date(2024, 1, 6)
    table_file(out, "margin_health", day).unlink()
    lines: list[str] = []
    summary = backfill(config(history, out), say=lines.append)
    assert f"{day}: margin_health partition missing; recomputing" in lines
    assert summary["repaired"] == {str(day): "margin_health partition missing"}
    # from the Jan 4 engine state, up to the damaged day: Jan 5 and 6 written again
    assert summary["skipped"] == 9 and summary["written"] == 2
    assert any("replaying from 2024-01-05 (engine state of 2024-01-04)" in m for m in lines)
    same(tables(out), tables(clean[0]))
    again = backfill(config(history, out), say=lambda _m: None)
    assert again["skipped"] == 10 and again["repaired"] == {}


def test_a_truncated_or_rewritten_partition_is_recomputed(history, clean, tmp_path):
    out = damaged_copy(clean, tmp_path)
    cut = table_file(out, "prices", date(2024, 1, 10))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a copy cut in half
    short = table_file(out, "portfolio_var", date(2024, 1, 11))
    var = pq.read_table(short)
    pq.write_table(var.slice(0, var.num_rows // 2), short)  # a valid file, rows missing
    lines: list[str] = []
    summary = backfill(config(history, out), say=lines.append)
    repaired = summary["repaired"]
    assert sorted(repaired) == ["2024-01-10", "2024-01-11"]
    assert repaired["2024-01-10"].startswith("prices partition unreadable (")
    assert repaired["2024-01-11"] == (
        f"portfolio_var partition has {var.num_rows // 2} rows, the marker says {var.num_rows}"
    )
    assert any(m.startswith("2024-01-10: prices partition unreadable") for m in lines)
    assert summary["written"] == 3  # Jan 9-11, from the Jan 8 state
    same(tables(out), tables(clean[0]))


def test_corrupt_markers_are_warnings_and_their_days_are_recomputed(
    history, clean, tmp_path, caplog
):
    out = damaged_copy(clean, tmp_path)
    garbage, truncated = marker_path(out, date(2024, 1, 9)), marker_path(out, date(2024, 1, 10))
    garbage.write_bytes(b"\x00\xff\x13 not a marker")
    truncated.write_text(truncated.read_text()[:40])
    with caplog.at_level(logging.WARNING, logger="runners.backfill"):
        summary = backfill(config(history, out), say=lambda _m: None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("\n" not in m for m in warned)
    assert any(str(garbage) in m and "not UTF-8" in m for m in warned)
    assert any(str(truncated) in m and "not JSON" in m for m in warned)
    assert summary["repaired"] == dict.fromkeys(
        ["2024-01-09", "2024-01-10"], "day marker unreadable"
    )
    assert summary["written"] == 2
    same(tables(out), tables(clean[0]))
    for day in (date(2024, 1, 9), date(2024, 1, 10)):  # rewritten whole
        assert json.loads(marker_path(out, day).read_text())["files"]["prices"]["rows"] == 5760


def test_corrupt_resume_state_is_a_warning_and_the_replay_starts_from_intact_state(
    history, clean, tmp_path, caplog
):
    """The Jan 10 repair would resume from the Jan 8 state; one of its shard files is garbage,
    so the engines are rebuilt from the Jan 4 state (the chunk end before), never from the bad
    file or from new engines."""
    out = damaged_copy(clean, tmp_path)
    cfg = config(history, out)
    fp = cfg.fingerprint()
    bad = state_path(out, fp, date(2024, 1, 8), 0, "var")
    bad.write_bytes(b"garbage, not a pickle")
    table_file(out, "margin_events", date(2024, 1, 10)).unlink()
    lines: list[str] = []
    with caplog.at_level(logging.WARNING, logger="runners.backfill"):
        summary = backfill(cfg, say=lines.append)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(bad) in warned[0] and "checksum" in warned[0]
    assert any("replaying from 2024-01-05 (engine state of 2024-01-04)" in m for m in lines)
    assert summary["written"] == 6  # Jan 5-10
    same(tables(out), tables(clean[0]))


def test_the_resume_point_is_the_latest_intact_state(history, clean, tmp_path, caplog):
    """Without running a pipeline: state files truncated, garbled or without their checksum are
    skipped (a warning each); no intact state means a replay from the first input day."""
    out = damaged_copy(clean, tmp_path)
    cfg = config(history, out)
    fp = cfg.fingerprint()
    first = date(2024, 1, 1)
    assert resume_point(cfg, fp, date(2024, 1, 12), first) == date(2024, 1, 8)
    assert resume_point(cfg, fp, date(2024, 1, 8), first) == date(2024, 1, 4)
    margin = state_path(out, fp, date(2024, 1, 8), 1, "margin")
    margin.write_bytes(margin.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="runners.backfill"):
        assert resume_point(cfg, fp, date(2024, 1, 12), first) == date(2024, 1, 4)
        Path(f"{state_path(out, fp, date(2024, 1, 4), 2, 'var')}.sha256").unlink()
        assert resume_point(cfg, fp, date(2024, 1, 12), first) is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(margin) in m for m in warned)
    assert any("var-shard-2.pkl" in m and "no checksum" in m for m in warned)


def test_a_worker_never_continues_from_bad_state(history, clean, tmp_path):
    """Should state go bad between the driver's check and a worker's restore, the chunk stops:
    it does not continue from a new engine."""
    from runners.backfill.graph import VarShardDaysFn

    out = damaged_copy(clean, tmp_path)
    cfg = config(history, out)
    fp, day = cfg.fingerprint(), date(2024, 1, 8)
    fn = VarShardDaysFn(cfg, fp, [date(2024, 1, 9)], day)
    assert fn.restore(0, lambda: None) is not None
    state_path(out, fp, day, 0, "var").write_bytes(b"\x80\x05garbage")
    with pytest.raises(BackfillError, match="cannot resume from .*var-shard-0.pkl"):
        fn.restore(0, lambda: None)
    state_path(out, fp, day, 1, "var").unlink()
    with pytest.raises(BackfillError, match="var-shard-1.pkl: missing"):
        fn.restore(1, lambda: None)


def test_markers_of_the_previous_format_still_count_and_are_written_whole(
    clean, tmp_path, monkeypatch
):
    out = damaged_copy(clean, tmp_path)
    fp = json.loads(marker_path(out, FIRST).read_text())["fingerprint"]
    days = list(pd.date_range(FIRST, LAST).date)
    for day in days:  # the format before: fingerprint and rows only
        marker = json.loads(marker_path(out, day).read_text())
        marker_path(out, day).write_text(json.dumps({"fingerprint": fp, "rows": marker["rows"]}))
    assert scan_days(out, fp, days) == (set(days), {})
    table_file(out, "dead_letter", FIRST).unlink()
    assert scan_days(out, fp, days) == (set(days[1:]), {FIRST: "dead_letter partition missing"})
    # a marker write cut short leaves the previous marker whole, and no temporary file
    before = marker_path(out, LAST).read_bytes()

    def crash(*_a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_marker(out, LAST, fp, {})
    assert marker_path(out, LAST).read_bytes() == before
    assert not list(marker_path(out, LAST).parent.glob(".*tmp*"))
