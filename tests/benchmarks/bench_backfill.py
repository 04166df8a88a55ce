"""``defi-risk backfill`` against the one-process numpy baseline, on the same generated history.

    python -m tests.benchmarks.bench_backfill [DAYS] [ASSETS] [ACCOUNTS] [--full]
        [--var-window 250] [--var-min-scenarios 30] [--workers 2]

Generates DAYS (default 30; ``--full``: 730) days of 1-minute prices for ASSETS (default 20) and
the settlements of ACCOUNTS (default 10,000) into a temp dir, then runs, each as a subprocess
(so each peak memory is its own): the Beam backfill (``defi-risk backfill --workers 2``) and
the baseline (``tests/benchmarks/backfill_baseline.py``), both over every day with a VaR window of
250 daily returns and 30 at least. One JSON line: throughputs in events (price updates +
settlements) per second, their ratio (target >= 0.5), the peak RSS of each run (the sum over the
process and its children, sampled from /proc, and the largest single process from
``/usr/bin/time -v`` when it is installed), the 730-day time the backfill's rate projects
(linear in days; target 900 s), and whether the outputs agree (rows per table and day, and the
largest VaR / ES difference).
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


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("days", nargs="?", type=int, default=30)
    p.add_argument("assets", nargs="?", type=int, default=20)
    p.add_argument("accounts", nargs="?", type=int, default=10_000)
    p.add_argument("--full", action="store_true", help=f"{FULL_DAYS} days")
    p.add_argument("--var-window", type=int, default=250)
    p.add_argument("--var-min-scenarios", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    days = FULL_DAYS if a.full else a.days
    end = START + timedelta(days=days - 1)
    from pipelines.synthetic.bulk import generate_history

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        tmp = Path(tmp)
        data, beam_out, base_out = tmp / "in", tmp / "beam", tmp / "baseline"
        with timer() as gen:
            generate_history(data, start=START, days=days, assets=a.assets,
                             accounts=a.accounts, seed=7)  # fmt: skip
        events = input_events(data)
        span = ["--start", START.isoformat(), "--end", end.isoformat()]
        var = ["--var-window", str(a.var_window), "--var-min-scenarios", str(a.var_min_scenarios)]
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
        for table in ("prices", "portfolio_var"):
            b, s = rows_per_day(beam_out, table), rows_per_day(base_out, table)
            agree &= b == s and len(b) == days
            counts[table] = (sum(b.values()), sum(s.values()))
        diff = var_difference(beam_out, base_out) if counts["portfolio_var"][0] else None
        emit(
            "backfill",
            days=days,
            assets=a.assets,
            accounts=a.accounts,
            events=events,
            var_window=a.var_window,
            var_min_scenarios=a.var_min_scenarios,
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
            outputs_agree=agree,
            rows_beam_vs_baseline={k: list(v) for k, v in counts.items()},
            var_es_max_rel_diff=diff,
        )


if __name__ == "__main__":
    main()
