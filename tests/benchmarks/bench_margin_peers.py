"""The margin-health job side by side: ``defi-risk run risk``, plain numpy and Bytewax (issue 17).

    python -m tests.benchmarks.bench_margin_peers [--events 1000000] [--accounts 10000]
        [--seed 7] [--workdir DIR] [--shards 64] [--bytewax-python PYTHON]

Generates the desk's job in our contracts (``margin_job.py``: 10,000 accounts, BTC / ETH / USDC
ticks every second from Chainlink and Pyth, settlements as raw integer amounts; 1M events by
default, ~989k of them settlements) into ``DIR/input`` (a temp dir without ``--workdir``), then
runs, one after the other, each spawned by a small launcher process (``LAUNCHER``) that times it
from spawn to exit and takes its peak RSS from ``wait4`` (spawned from the benchmark itself, the
child's figure would be at least the benchmark's own RSS: Linux carries it over the exec):

- ours: ``defi-risk run risk --input-dir DIR/input --output-dir DIR/ours
  --price_window_seconds=1 --var_methods=`` (1 worker, VaR off, composites every second);
- numpy: ``python -m tests.benchmarks.margin_job reference`` (the same rules, one process,
  vectorised per tick over all accounts);
- Bytewax: ``python -m tests.benchmarks.bytewax_job`` (0.21, one worker, accounts in
  ``--shards`` shards, each a numpy book in ``stateful_flat_map`` state, every composite sent to
  every shard), only when ``bytewax`` imports in ``--bytewax-python`` (default: this
  interpreter); otherwise ``bytewax`` says it is not installed and how to install it
  (``pip install -e '.[bench]'``; or a venv of its own, passed as ``--bytewax-python``).

events/s = job events / wall seconds of the whole command (imports and start-up included); the
generation is timed apart (``generate_s``). Ratios are measured in the same run:
``ours_vs_numpy`` and ``ours_vs_bytewax`` (events/s, ours over theirs), ``rss_ours_vs_numpy``
(peak RSS, ours over numpy's).

The check: ``OUT/run_report.json`` balances (every record in = out + dead letters) with no dead
letter and no refusal, and per account the number of margin_call events and of liquidation
events in ``OUT/tables/margin_events`` equals the numpy reference's (and Bytewax's when it ran):
``same_as_reference``. A mismatch is summarised on stderr and the exit code is 1.
``margin_call_accounts`` / ``liquidation_accounts``: accounts with at least one such event in our
table (the desk's job: 612 and 160).

One JSON line ``bench_margin_peers``; targets (issue 17): ours >= 50,000 events/s with one worker,
peak RSS < 1 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.benchmarks.common import emit, timer
from tests.benchmarks.margin_job import EVENT_TYPES, generate

ROOT = Path(__file__).resolve().parents[2]  # the project: ``-m tests.benchmarks...`` resolves
RISK_ARGS = ["--price_window_seconds=1", "--var_methods="]
BENCH_EXTRA = "pip install -e '.[bench]'"
TARGET_EVENTS_PER_S = 50_000
TARGET_PEAK_RSS_MB = 1_000
CHECKED = ("margin_call", "liquidation")  # the per-account counts that must be equal


# ------------------------------------------------------------------------------ running
# A fresh, small process that starts the command and reports on it: the child's ``ru_maxrss``
# from ``wait4`` is the largest of its own peak and the RSS of the process it was spawned from
# (Linux carries the parent's high-water mark over the exec), so the command is spawned from this
# ~10 MB launcher, never from the benchmark (which holds the generated job: 150 MB at 1M events).
LAUNCHER = """\
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": time.perf_counter() - start, "rc": os.waitstatus_to_exitcode(status),
               "maxrss_kib": usage.ru_maxrss}, f)
"""


def run_measured(cmd: list[str], log: Path) -> dict:
    """Runs ``cmd`` (cwd: the project) from ``LAUNCHER``: its wall seconds from spawn to exit,
    its exit code and its peak RSS (``wait4``'s ``ru_maxrss``, KiB on Linux)."""
    measured = log.with_suffix(".rusage.json")
    with open(log, "wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(measured), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    if done.returncode != 0 or not measured.exists():
        raise SystemExit(f"bench_margin_peers: could not run {cmd[:3]} (log {log})")
    m = json.loads(measured.read_text())
    return {"wall_s": m["wall_s"], "peak_rss_mb": round(m["maxrss_kib"] / 1024, 1), "rc": m["rc"]}


def _failed(what: str, run: dict, log: Path) -> None:
    sys.stderr.write(log.read_text(errors="replace")[-4000:])
    raise SystemExit(f"bench_margin_peers: {what} failed with exit code {run['rc']} (log {log})")


def bytewax_version(python: str) -> str | None:
    """The bytewax version importable by ``python``, None when it is not installed."""
    probe = "import bytewax.dataflow, importlib.metadata as m; print(m.version('bytewax'))"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# ------------------------------------------------------------------------------ reading
def our_counts(out_dir: Path) -> dict[str, list[int]]:
    """account -> [margin calls, liquidations, recoveries] in ``OUT/tables/margin_events``."""
    files = sorted((out_dir / "tables" / "margin_events").glob("**/*.parquet"))
    counts: dict[str, list[int]] = {}
    if not files:
        return counts
    t = pa.concat_tables([pq.read_table(f, columns=["account_id", "event_type"]) for f in files])
    grouped = t.group_by(["account_id", "event_type"]).aggregate([([], "count_all")])
    index = {e: i for i, e in enumerate(EVENT_TYPES)}
    for account, event, n in zip(
        grouped["account_id"].to_pylist(),
        grouped["event_type"].to_pylist(),
        grouped["count_all"].to_pylist(),
        strict=True,
    ):
        counts.setdefault(account, [0, 0, 0])[index[event]] += n
    return counts


def report_problems(report: dict, expected: dict[str, int]) -> list[str]:
    """What is wrong with a run report: books that do not balance, dead letters, refusals, or
    other record counts than the job's."""
    problems = []
    for topic, n in expected.items():
        got = report.get("topics", {}).get(topic)
        if got is None:
            problems.append(f"{topic}: not in the run report")
            continue
        if got["in"] != got["out"] + got["dead_letter"]:
            problems.append(
                f"{topic}: in {got['in']} != out {got['out']} + dead {got['dead_letter']}"
            )
        if got["in"] != n:
            problems.append(f"{topic}: {got['in']} records in, the job has {n}")
        if got["dead_letter"]:
            problems.append(f"{topic}: {got['dead_letter']} dead letters")
    for key in ("dead_letter_reasons", "rejected_downstream"):
        if report.get(key):
            problems.append(f"{key}: {report[key]}")
    return problems


def mismatches(ours: dict[str, list[int]], theirs: dict[str, list[int]]) -> list[str]:
    """One line per account whose margin_call or liquidation count differs."""
    out = []
    for account in sorted(set(ours) | set(theirs)):
        a, b = ours.get(account, [0, 0, 0]), theirs.get(account, [0, 0, 0])
        diff = [
            f"{e} {a[i]} vs {b[i]}"
            for i, e in enumerate(EVENT_TYPES)
            if e in CHECKED and a[i] != b[i]
        ]
        if diff:
            out.append(f"{account}: {', '.join(diff)}")
    return out


def _accounts_with(counts: dict[str, list[int]], event: str) -> int:
    i = EVENT_TYPES.index(event)
    return sum(1 for c in counts.values() if c[i])


def _events(counts: dict[str, list[int]], event: str) -> int:
    i = EVENT_TYPES.index(event)
    return sum(c[i] for c in counts.values())


def _summary(name: str, lines: list[str]) -> None:
    if lines:
        sys.stderr.write(
            f"bench_margin_peers: {len(lines)} account(s) differ between ours and {name} "
            f"(ours vs {name}):\n" + "".join(f"  {x}\n" for x in lines[:20])
        )
        if len(lines) > 20:
            sys.stderr.write(f"  ... and {len(lines) - 20} more\n")


# --------------------------------------------------------------------------------- main
def run(a: argparse.Namespace, work: Path) -> int:
    data, ours_out = work / "input", work / "ours"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(ours_out, ignore_errors=True)
    with timer() as gen:
        job = generate(data, a.events, a.accounts, a.seed)
    print(
        f"# generated {job['events']:,} events ({job['price_events']:,} prices, "
        f"{job['settlements']:,} settlements) in {gen['seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    cli = shutil.which("defi-risk", path=str(Path(sys.executable).parent)) or "defi-risk"
    ours = run_measured(
        [cli, "run", "risk", "--input-dir", str(data), "--output-dir", str(ours_out), *RISK_ARGS],
        work / "ours.log",
    )
    report_path = ours_out / "run_report.json"
    if ours["rc"] not in (0, 1) or not report_path.exists():  # 1: ran, the books do not balance
        _failed("defi-risk run risk", ours, work / "ours.log")
    report = json.loads(report_path.read_text())
    expected = {"market.prices.v1": job["price_events"], "settlements.v1": job["settlements"]}
    problems = report_problems(report, expected)

    ref_json = work / "numpy.json"
    numpy_run = run_measured(
        [sys.executable, "-m", "tests.benchmarks.margin_job", "reference",
         "--input-dir", str(data), "--out", str(ref_json)],
        work / "numpy.log",
    )  # fmt: skip
    if numpy_run["rc"] != 0:
        _failed("the numpy reference", numpy_run, work / "numpy.log")
    ref = json.loads(ref_json.read_text())
    if ref["refused"]:
        problems.append(f"the reference refused {ref['refused']} settlement(s)")

    python = a.bytewax_python or sys.executable
    version = bytewax_version(python)
    bw_run, bw_counts = None, None
    if version is not None:
        bw_json = work / "bytewax.json"
        bw_run = run_measured(
            [python, "-m", "tests.benchmarks.bytewax_job", "--input-dir", str(data),
             "--out", str(bw_json), "--shards", str(a.shards)],
            work / "bytewax.log",
        )  # fmt: skip
        if bw_run["rc"] != 0:
            _failed("the Bytewax job", bw_run, work / "bytewax.log")
        bw_counts = json.loads(bw_json.read_text())["accounts"]

    counts = our_counts(ours_out)
    vs_ref = mismatches(counts, ref["accounts"])
    vs_bw = None if bw_counts is None else mismatches(counts, bw_counts)
    same = not vs_ref and not vs_bw

    def rate(r: dict | None) -> float | None:
        return None if r is None else job["events"] / r["wall_s"]

    ours_rate, np_rate, bw_rate = rate(ours), rate(numpy_run), rate(bw_run)
    emit(
        "bench_margin_peers",
        events=job["events"],
        accounts=job["accounts"],
        seed=job["seed"],
        price_events=job["price_events"],
        settlements=job["settlements"],
        tick_seconds=job["seconds"],
        generate_s=round(gen["seconds"], 2),
        ours_events_per_s=round(ours_rate),
        ours_wall_s=round(ours["wall_s"], 2),
        ours_peak_rss_mb=ours["peak_rss_mb"],
        numpy_events_per_s=round(np_rate),
        numpy_wall_s=round(numpy_run["wall_s"], 2),
        numpy_peak_rss_mb=numpy_run["peak_rss_mb"],
        bytewax=version or f"not installed: {BENCH_EXTRA}",
        bytewax_shards=a.shards if bw_run else None,
        bytewax_events_per_s=None if bw_rate is None else round(bw_rate),
        bytewax_wall_s=None if bw_run is None else round(bw_run["wall_s"], 2),
        bytewax_peak_rss_mb=None if bw_run is None else bw_run["peak_rss_mb"],
        ours_vs_numpy=round(ours_rate / np_rate, 4),
        ours_vs_bytewax=None if bw_rate is None else round(ours_rate / bw_rate, 4),
        rss_ours_vs_numpy=round(ours["peak_rss_mb"] / numpy_run["peak_rss_mb"], 1),
        margin_call_accounts=_accounts_with(counts, "margin_call"),
        liquidation_accounts=_accounts_with(counts, "liquidation"),
        margin_call_events=_events(counts, "margin_call"),
        liquidation_events=_events(counts, "liquidation"),
        recovered_events=_events(counts, "recovered"),
        books_balance=not problems,
        dead_letters=sum(t["dead_letter"] for t in report.get("topics", {}).values()),
        same_as_reference=same,
        accounts_differing=len({line.split(":")[0] for line in vs_ref + (vs_bw or [])}),
        target_events_per_s=TARGET_EVENTS_PER_S,
        target_peak_rss_mb=TARGET_PEAK_RSS_MB,
    )
    for p in problems:
        sys.stderr.write(f"bench_margin_peers: our run: {p}\n")
    _summary("numpy", vs_ref)
    _summary("bytewax", vs_bw or [])
    return 0 if same and not problems else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="price events + settlements")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", help="keep the input, outputs and logs here (default: a temp dir)")
    p.add_argument("--shards", type=int, default=64, help="Bytewax: account shards (default 64)")
    p.add_argument(
        "--bytewax-python",
        help="the interpreter that runs the Bytewax job (default: this one); e.g. a venv of "
        "its own with bytewax==0.21.1, numpy and pyarrow",
    )
    a = p.parse_args(argv)
    if a.workdir:
        work = Path(a.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        return run(a, work)
    with tempfile.TemporaryDirectory(prefix="bench-margin-peers-") as tmp:
        return run(a, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
