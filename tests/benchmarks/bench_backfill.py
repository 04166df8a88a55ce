"""``defi-risk backfill`` against the one-process numpy baseline, on the same generated history.

    python -m tests.benchmarks.bench_backfill [DAYS] [ASSETS] [ACCOUNTS] [--full]
        [--var-window 250] [--var-min-scenarios 30] [--margin-interval-s 86400] [--workers 2]

Generates DAYS (default 60, so that VaR, which needs 30 daily returns, covers half of them;
``--full``: 730) days of 1-minute prices for ASSETS (default 20) and the settlements of ACCOUNTS
(default 10,000) into a temp dir, then runs, each as a subprocess
(so each peak memory is its own): the Beam backfill (``defi-risk backfill --workers 2``) and
the baseline (``tests/benchmarks/backfill_baseline.py``), both over every day with a VaR window of
250 daily returns and 30 at least, and margin snapshots every ``--margin-interval-s``. Both
compute the same tables: prices, portfolio_var, margin_health and margin_events (the baseline
leaves out dead_letter only, a few rows a day).

One JSON line: throughputs in events (price updates + settlements) per second, their ratio
(target >= 0.5), the peak RSS of each run (the sum over the process and its children, sampled
from /proc, and the largest single process from ``/usr/bin/time -v`` when it is installed), the
730-day time the backfill's rate projects (linear in days; target 900 s), and whether the
outputs agree (``outputs_agree``: the same rows per table and day for the four tables, every
margin_health row matched, zones and price statuses equal, the same margin events), with:
- ``rows_beam_vs_baseline``: rows per table, Beam and baseline;
- ``var_es_max_rel_diff``: the largest relative VaR / ES difference;
- ``margin_health_max_rel_diff``: the largest relative difference of health_score,
  collateral_usd, borrow_usd and the liquidation / margin-call prices on the margin_health rows
  matched by (account_id, event_ts, trigger) and the triggering settlement or priced assets
  (the backfill's row id); ``margin_health_rows_unmatched``: rows only one side has;
- ``margin_events_equal``: the margin events are the same (account, type, time, alerted, zone,
  previous zone).
The baseline computes in float64, the backfill in Decimal rounded to 9 decimals: relative
differences of ~1e-11 are expected; those of liquidation prices are taken beyond one unit of
the 9th decimal (a price of 0.0002 USD is 2e-6 off by the rounding alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tests.benchmarks.common import emit, timer

FULL_DAYS = 730
TARGET_FULL_SECONDS = 900
START = date(2024, 1, 1)
GNU_TIME = "/usr/bin/time"
ROOT = Path(__file__).resolve().parents[2]  # the project: ``-m tests.benchmarks...`` resolves


# ------------------------------------------------------------------------------- memory
def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    """Resident memory of a process and all its descendants (KiB)."""
    kids, total, todo = _children(), 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kib(pid)
        todo += kids.get(pid, [])
    return total


def run_measured(cmd: list[str], log: Path) -> dict:
    """Runs ``cmd``; wall seconds, peak summed RSS of its process tree, peak single RSS."""
    timing = log.with_suffix(".time")
    full = [GNU_TIME, "-v", "-o", str(timing), *cmd] if os.access(GNU_TIME, os.X_OK) else cmd
    peak = [0]
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss_kib(proc.pid))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        seconds = time.perf_counter() - start
        sampler.join()
    if rc != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{cmd[:3]} failed with exit code {rc}")
    single = None
    if timing.exists():
        for line in timing.read_text().splitlines():
            if "Maximum resident set size" in line:
                single = round(int(line.split(":")[1]) / 1024, 1)
    return {"seconds": seconds, "tree_peak_rss_mb": round(peak[0] / 1024, 1),
            "max_single_rss_mb": single}  # fmt: skip


# ------------------------------------------------------------------------------ outputs
def input_events(data: Path) -> int:
    n = 0
    for topic in ("market.prices.v1", "settlements.v1"):
        for f in (data / topic).glob("date=*/*.parquet"):
            n += pq.ParquetFile(f).metadata.num_rows
    return n


def rows_per_day(root: Path, table: str) -> dict[str, int]:
    return {
        p.parent.name: pq.ParquetFile(p).metadata.num_rows
        for p in (root / table).glob("date=*/part-00000.parquet")
    }


def var_difference(beam: Path, base: Path) -> float | None:
    """Largest relative difference of var_usd / es_usd on the rows both have (None: no rows)."""
    keys = ["account_id", "as_of", "method"]

    def read(root: Path, cast: bool):
        files = sorted((root / "portfolio_var").glob("date=*/part-00000.parquet"))
        t = pa.concat_tables(
            [pq.read_table(f, columns=[*keys, "var_usd", "es_usd"]) for f in files]
        )
        df = t.to_pandas()
        if cast:
            df["var_usd"] = df["var_usd"].astype(float)
            df["es_usd"] = df["es_usd"].astype(float)
        return df

    a, b = read(beam, True), read(base, False)
    if a.empty or b.empty:
        return None
    m = a.merge(b, on=keys, suffixes=("_beam", "_base"))
    worst = 0.0
    for col in ("var_usd", "es_usd"):
        x, y = m[f"{col}_beam"].to_numpy(), m[f"{col}_base"].to_numpy()
        rel = np.abs(x - y) / np.maximum(np.abs(x), 1e-6)
        worst = max(worst, float(rel.max()))
    return worst


def _read_all(root: Path, table: str) -> pa.Table | None:
    files = sorted((root / table).glob("date=*/part-00000.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def _floats(col) -> np.ndarray:
    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)


def _rel(x: np.ndarray, y: np.ndarray, allowance: float = 0.0) -> float | None:
    """Largest relative difference, max(|x - y| - allowance, 0) / max(|x|, 1e-6); nulls (nan)
    equal nulls only; None when empty."""
    if len(x) == 0:
        return None
    both = np.isnan(x) & np.isnan(y)
    with np.errstate(invalid="ignore"):
        rel = np.maximum(np.abs(x - y) - allowance, 0.0) / np.maximum(np.abs(x), 1e-6)
    rel = np.where(both, 0.0, rel)
    return float(np.nan_to_num(rel, nan=np.inf).max())


def matched_margin_health(beam: Path, base: Path) -> tuple[pa.Table | None, pa.Table | None, int]:
    """The margin_health rows both outputs have, aligned, and how many rows only one has. Rows
    are matched by (account_id, event_ts, trigger) and the triggering settlement id or priced
    assets, i.e. the backfill's row id (several settlements of an account can share an
    instant), which is computed here for the baseline's rows from its ``ref`` column."""
    from schemas.base import deterministic_id

    a, b = _read_all(beam, "margin_health"), _read_all(base, "margin_health")
    if a is None or b is None:
        n = (a.num_rows if a is not None else 0) + (b.num_rows if b is not None else 0)
        return None, None, n
    t_us = pc.cast(b["event_ts"], pa.int64()).to_pylist()
    ids = [
        deterministic_id("margin_health", acct, t, trig, ref)
        for acct, t, trig, ref in zip(
            b["account_id"].to_pylist(), t_us, b["trigger"].to_pylist(), b["ref"].to_pylist(),
            strict=True,
        )
    ]  # fmt: skip
    where = {rid: i for i, rid in enumerate(a["row_id"].to_pylist())}
    pairs = [(where[rid], j) for j, rid in enumerate(ids) if rid in where]
    ia = pa.array([i for i, _ in pairs], pa.int64())
    ib = pa.array([j for _, j in pairs], pa.int64())
    unmatched = a.num_rows + b.num_rows - 2 * len(pairs)
    return a.take(ia), b.take(ib), unmatched


def margin_comparison(beam: Path, base: Path) -> dict:
    """margin_health: rows only one side has, the largest relative differences of the values
    on the rows both have, whether zones and price statuses agree; margin_events: whether the
    events are the same (account, type, time, alerted, zone, previous zone)."""
    a, b, unmatched = matched_margin_health(beam, base)
    out: dict = {"health_rows_matched": 0 if a is None else a.num_rows,
                 "health_rows_unmatched": unmatched}  # fmt: skip
    if a is not None:
        diffs = {
            c: _rel(_floats(a[c]), _floats(b[c]))
            for c in ("health_score", "collateral_usd", "borrow_usd")
        }
        # the (asset, liquidation price, margin-call price) lists, row by row; prices can be
        # tiny (other collateral nearly covers the debt): beyond the 9th decimal
        la, lb = a["liquidation_prices"], b["liquidation_prices"]
        fa, fb = (pc.list_flatten(x).combine_chunks() for x in (la, lb))
        same = pc.list_value_length(la).equals(pc.list_value_length(lb)) and fa.field(
            "asset"
        ).equals(fb.field("asset"))
        diffs["liquidation_prices"] = (
            max(
                _rel(_floats(fa.field(f)), _floats(fb.field(f)), allowance=1e-9) or 0.0
                for f in ("liquidation_price", "margin_call_price")
            )
            if same
            else None  # not the same assets: no comparison
        )
        out["health_max_rel_diff"] = diffs
        out["zones_equal"] = a["zone"].equals(b["zone"])
        out["price_status_equal"] = a["price_status"].equals(b["price_status"])
    keys = ["account_id", "event_type", "event_ts", "alerted", "zone", "previous_zone"]
    events = []
    for root in (beam, base):
        t = _read_all(root, "margin_events")
        rows = [] if t is None else t.select(keys).to_pylist()
        events.append(sorted(tuple(r[k] for k in keys) for r in rows))
    out["events"] = [len(events[0]), len(events[1])]
    out["events_equal"] = events[0] == events[1]
    return out


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("days", nargs="?", type=int, default=60)
    p.add_argument("assets", nargs="?", type=int, default=20)
    p.add_argument("accounts", nargs="?", type=int, default=10_000)
    p.add_argument("--full", action="store_true", help=f"{FULL_DAYS} days")
    p.add_argument("--var-window", type=int, default=250)
    p.add_argument("--var-min-scenarios", type=int, default=30)
    p.add_argument("--margin-interval-s", type=int, default=86_400)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    days = FULL_DAYS if a.full else a.days
    end = START + timedelta(days=days - 1)
    from runners.synthetic.bulk import generate_history

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        tmp = Path(tmp)
        data, beam_out, base_out = tmp / "in", tmp / "beam", tmp / "baseline"
        with timer() as gen:
            generate_history(data, start=START, days=days, assets=a.assets,
                             accounts=a.accounts, seed=7)  # fmt: skip
        events = input_events(data)
        span = ["--start", START.isoformat(), "--end", end.isoformat()]
        var = ["--var-window", str(a.var_window), "--var-min-scenarios", str(a.var_min_scenarios),
               "--margin-interval-s", str(a.margin_interval_s)]  # fmt: skip
        cli = shutil.which("defi-risk", path=str(Path(sys.executable).parent)) or "defi-risk"
        beam = run_measured(
            [
                cli,
                "backfill",
                *span,
                "--input",
                str(data),
                "--output",
                str(beam_out),
                "--workers",
                str(a.workers),
                *var,
            ],  # fmt: skip
            tmp / "beam.log",
        )
        base = run_measured(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.backfill_baseline",
                *span,
                "--input",
                str(data),
                "--output",
                str(base_out),
                *var,
            ],  # fmt: skip
            tmp / "baseline.log",
        )
        base_summary = json.loads((tmp / "baseline.log").read_text().strip().splitlines()[-1])
        counts = {}
        agree = True
        for table in ("prices", "portfolio_var", "margin_health", "margin_events"):
            b, s = rows_per_day(beam_out, table), rows_per_day(base_out, table)
            agree &= b == s and len(b) == days
            counts[table] = (sum(b.values()), sum(s.values()))
        diff = var_difference(beam_out, base_out) if counts["portfolio_var"][0] else None
        margin = margin_comparison(beam_out, base_out)
        agree &= (
            margin["health_rows_unmatched"] == 0
            and margin.get("zones_equal", True)
            and margin.get("price_status_equal", True)
            and margin["events_equal"]
        )
        emit(
            "backfill",
            days=days,
            assets=a.assets,
            accounts=a.accounts,
            events=events,
            var_window=a.var_window,
            var_min_scenarios=a.var_min_scenarios,
            margin_interval_s=a.margin_interval_s,
            workers=a.workers,
            generate_seconds=round(gen["seconds"], 2),
            beam_seconds=round(beam["seconds"], 2),
            baseline_seconds=round(base["seconds"], 2),
            baseline_inner_seconds=base_summary["seconds"],
            beam_events_per_s=round(events / beam["seconds"]),
            baseline_events_per_s=round(events / base["seconds"]),
            ratio_beam_over_baseline_throughput=round(base["seconds"] / beam["seconds"], 3),
            target_ratio=0.5,
            beam_peak_rss_mb=beam["tree_peak_rss_mb"],
            beam_max_single_process_rss_mb=beam["max_single_rss_mb"],
            baseline_peak_rss_mb=base["tree_peak_rss_mb"],
            baseline_max_single_process_rss_mb=base["max_single_rss_mb"],
            extrapolated_730_day_beam_seconds=round(beam["seconds"] / days * FULL_DAYS),
            target_full_seconds=TARGET_FULL_SECONDS,
            price_rows=counts["prices"][0],
            var_rows=counts["portfolio_var"][0],
            margin_health_rows=counts["margin_health"][0],
            margin_event_rows=counts["margin_events"][0],
            outputs_agree=agree,
            rows_beam_vs_baseline={k: list(v) for k, v in counts.items()},
            var_es_max_rel_diff=diff,
            margin_health_max_rel_diff=margin.get("health_max_rel_diff"),
            margin_health_rows_unmatched=margin["health_rows_unmatched"],
            margin_zones_equal=margin.get("zones_equal"),
            margin_price_status_equal=margin.get("price_status_equal"),
            margin_events_equal=margin["events_equal"],
        )


if __name__ == "__main__":
    main()
