"""``defi-risk demo`` (what ``make demo`` runs): generate, run, build the warehouse, summarise.

    defi-risk demo [--out out/demo] [--days 7] [--accounts 200] [--seed 7]

The summary is what a person checks: records in = out + dead letters per topic, rows per table,
composite prices per asset, the margin calls, OFAC hits and AML scenario found against the
generator's ``ground_truth.json``, alerts by type and dead letters by reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from runners.local.run import print_accounting, run_local
from runners.local.warehouse import build_warehouse, run_sql
from runners.synthetic import generate


def compliance_truth_check(output_dir: Path, truth_path: Path) -> dict | None:
    """The injected sanctioned touches and the combined scenario vs the screenings written."""
    import pyarrow.parquet as pq

    table_dir = output_dir / "tables" / "compliance_screenings"
    if not truth_path.exists() or not any(table_dir.glob("*.parquet")):
        return None
    truth = json.loads(truth_path.read_text())
    rows = pq.read_table(table_dir).to_pylist()
    by_type = Counter((r["screening_type"], r["screening_result"]) for r in rows)
    blocked = {
        (r["tx_hash"], r["address"])
        for r in rows
        if r["screening_type"] == "sanctions" and r["screening_result"] == "blocked"
    }
    exposure = {
        (r["address"], r["hop_distance"]): r for r in rows if r["screening_type"] == "exposure"
    }

    def key(addr: str) -> str:
        return addr.lower() if addr.startswith("0x") else addr

    direct = [t for t in truth["sanctioned_transfers"] if t["kind"] == "direct"]
    expected = [t for t in direct if t["expected_result"] == "blocked"]
    found = [t for t in expected if (t["tx_hash"], key(t["listed_address"])) in blocked]
    paths = [t for t in truth["sanctioned_transfers"] if t["kind"] == "exposure_2hop"]
    paths_found = [t for t in paths if (key(t["path"][-1]), 2) in exposure]
    injected = {(t["tx_hash"], key(t["listed_address"])) for t in direct}
    scenario = truth.get("compliance_scenario") or {}
    rules = {}
    for exp in scenario.get("expected_alerts", []):
        if exp["rule_id"].startswith("exposure."):
            row = exposure.get((key(exp["address"]), exp["hop"]))
            ok = row is not None and json.loads(row["evidence"])["path"] == exp["path"]
        else:
            ok = any(
                r["rule_id"] == exp["rule_id"] and r["matched_entity"] == exp["subject"]
                for r in rows
            )
        rules[exp["rule_id"]] = ok
    return {
        "rows": len(rows),
        "by_type": dict(sorted(by_type.items())),
        "direct_expected": len(expected),
        "direct_found": len(found),
        "direct_missed": [t["id"] for t in expected if t not in found],
        "extra_blocked": sorted(blocked - injected),
        "paths_expected": len(paths),
        "paths_found": len(paths_found),
        "scenario": rules,
    }


def print_compliance_check(check: dict) -> None:
    print("compliance screenings (type/result):")
    for (kind, result), n in check["by_type"].items():
        print(f"    {kind:<10} {result:<8} {n:>9,}")
    print(
        f"OFAC hits vs ground_truth.json: {check['direct_expected']} injected listed touches, "
        f"{check['direct_found']} blocked (missed: {check['direct_missed'] or 'none'}), "
        f"{len(check['extra_blocked'])} blocked beyond them; 2-hop exposure paths "
        f"{check['paths_found']}/{check['paths_expected']} found"
    )
    if check["scenario"]:
        marks = ", ".join(
            f"{r} {'found' if ok else 'MISSING'}" for r, ok in check["scenario"].items()
        )
        print(f"combined AML scenario: {marks}")


def alert_counts(output_dir: Path) -> Counter:
    counts: Counter = Counter()
    for path in sorted((output_dir / "alerts").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            alert = json.loads(line)
            kind = (
                alert.get("event_type")
                or alert.get("activity_type")
                or alert.get("rule_id")
                or "alert"
            )
            counts[(path.stem, kind)] += 1
    return counts


def margin_truth_check(output_dir: Path, truth_path: Path) -> dict | None:
    """Accounts the generator drove into margin call vs the accounts with a margin_call or
    liquidation event, and how late the first one came (None without truth or events)."""
    from datetime import datetime

    import pyarrow.parquet as pq

    events_dir = output_dir / "tables" / "margin_events"
    if not truth_path.exists() or not any(events_dir.glob("*.parquet")):
        return None
    truth = {
        m["account_id"]: datetime.fromisoformat(m["first_margin_call"].replace("Z", "+00:00"))
        for m in json.loads(truth_path.read_text()).get("margin_calls", [])
    }
    first: dict[str, datetime] = {}
    for e in sorted(pq.read_table(events_dir).to_pylist(), key=lambda e: e["event_ts"]):
        if e["event_type"] in ("margin_call", "liquidation"):
            first.setdefault(e["account_id"], e["event_ts"])
    both = set(truth) & set(first)
    return {
        "expected": len(truth),
        "detected": len(first),
        "matched": len(both),
        "missed": len(set(truth) - set(first)),
        "extra": len(set(first) - set(truth)),
        "max_delay_s": max(((first[a] - truth[a]).total_seconds() for a in both), default=0.0),
    }


def price_summary(db_path: Path) -> list[tuple]:
    sql = """
        SELECT asset, COUNT(*) AS n, COUNTIF(status = 'ok') AS ok, COUNTIF(status = 'degraded') AS degraded,
               COUNTIF(status = 'price_unavailable') AS unavailable,
               MAX_BY(price, IF(price IS NULL, NULL, event_time)) AS last_price
        FROM risk.prices GROUP BY asset ORDER BY asset"""
    return [tuple(r.values()) for r in run_sql(db_path, sql).to_pylist()]


def demo_command(args) -> int:
    out = Path(args.out)
    data = out / "input"
    t0 = time.perf_counter()
    print(
        f"[1/3] generating {args.days} days x {args.accounts} accounts (seed {args.seed}) into {data}",
        flush=True,
    )
    counts = generate(
        data,
        days=args.days,
        accounts=args.accounts,
        seed=args.seed,
        progress=lambda msg: print(f"      {msg}", flush=True),
    )
    t1 = time.perf_counter()
    print(f"[2/3] running pipeline 'all' on the local runner (FnApiRunner) -> {out}", flush=True)
    # A week holds too few daily returns for a VaR: the demo uses hourly returns (--var_interval).
    report = run_local(
        data,
        out,
        pipeline="all",
        num_workers=args.direct_num_workers,
        extra_args=[f"--var_interval={args.var_interval}"],
    )
    t2 = time.perf_counter()
    print(f"[3/3] building the DuckDB warehouse {out / 'warehouse.duckdb'}", flush=True)
    wh = build_warehouse(out)
    t3 = time.perf_counter()

    print("\n=== demo summary ===")
    print(
        f"input events: {sum(v for k, v in counts.items() if k in report.topics):,} "
        f"({', '.join(f'{k} {v:,}' for k, v in counts.items() if k in report.topics)})"
    )
    print_accounting(report)
    print("rows per table:")
    for table, n in wh.tables.items():
        print(f"    {table:<32} {n:>9,}")
    print("composite prices (per asset: windows by status, last price):")
    for asset, n, ok, degraded, unavailable, last in price_summary(
        wh.db_path or out / "warehouse.duckdb"
    ):
        print(
            f"    {asset:<6} {n:>7,} windows: {ok:>7,} ok {degraded:>6,} degraded {unavailable:>4,} unavailable   last {last}"
        )
    check = margin_truth_check(out, data / "ground_truth.json")
    if check:
        print(
            f"margin calls vs ground_truth.json: {check['expected']} accounts driven into margin "
            f"call, {check['detected']} detected, {check['matched']} matched, "
            f"{check['missed']} missed, {check['extra']} extra; first call at most "
            f"{check['max_delay_s']:.0f} s after the truth minute"
        )

    comp = compliance_truth_check(out, data / "ground_truth.json")
    if comp:
        print_compliance_check(comp)
    print("alerts by type:")
    alerts = alert_counts(out)
    if not alerts:
        print("    (none: no alerting stage in this release yet)")
    for (topic, kind), n in sorted(alerts.items()):
        print(f"    {topic:<24} {kind:<20} {n:>7,}")
    print("dead letters by reason:")
    for reason, n in sorted(report.dead_letter_reasons.items()):
        print(f"    {reason:<40} {n:>7,}")
    print(f"views: {len(wh.views)} ({', '.join(wh.views)})")
    for note in wh.notes:
        print(f"    note: {note}")
    print(
        f"wall time: generate {t1 - t0:.1f} s, run {t2 - t1:.1f} s, warehouse {t3 - t2:.1f} s, "
        f"total {t3 - t0:.1f} s"
    )
    print(f"\nexplore: defi-risk query latest_prices --output-dir {out}")
    return 0 if report.balanced() else 1
