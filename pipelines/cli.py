"""``defi-risk``: the command line of the project.

defi-risk generate --out data/demo --days 7 --accounts 200 --seed 7
defi-risk run all --input-dir data/demo --output-dir out/demo
defi-risk warehouse --output-dir out/demo
defi-risk demo                      # all three, then a summary
defi-risk schemas generate|check
defi-risk sql "SELECT * FROM risk.latest_prices" --output-dir out/demo
defi-risk query latest_prices --output-dir out/demo
defi-risk oracle poll --rpc-url URL --hermes-url URL --interval 10 --publish jsonl:prices.jsonl
defi-risk backtest var --prices FILE --asset BTC --level 0.99 --window 250 --method historical
defi-risk emulator start|status|stop        # the local Pub/Sub emulator, topics and subscriptions
defi-risk run risk --source pubsub --streaming --output-dir out/live --duration-s 120
defi-risk publish --input-dir data/demo --rate 100
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from pipelines.live_args import DEFAULT_PROJECT, DEFAULT_PULL_MAX_MESSAGES
from pipelines.options import PIPELINES


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cmd_generate(args) -> int:
    from pipelines.synthetic import generate

    started = time.perf_counter()
    summary = generate(
        args.out,
        days=args.days,
        accounts=args.accounts,
        seed=args.seed,
        start=args.start,
        fmt=args.format,
        progress=lambda msg: print(f"  generate: {msg}", flush=True),
    )
    print(
        f"generated {args.days} days x {args.accounts} accounts (seed {args.seed}) in {args.out} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    for topic, n in summary.items():
        print(f"  {topic:<24} {n:>10,}")
    return 0


def cmd_generate_history(args) -> int:
    """`generate --history`: years of 1-minute prices and settlements, Parquet by day."""
    from pipelines.synthetic.bulk import generate_history

    try:
        manifest = generate_history(
            args.out,
            start=args.start,
            days=args.days,
            assets=args.assets,
            accounts=args.accounts,
            seed=args.seed,
            progress=lambda msg: print(f"  generate --history: {msg}", flush=True),
        )
    except ValueError as err:
        print(f"defi-risk: {err}", file=sys.stderr)
        return 2
    print(
        f"generated {args.days} days x {args.assets} assets x {args.accounts} accounts "
        f"(seed {args.seed}) in {args.out} in {manifest['wall_time_s']:.1f} s"
    )
    for topic, n in manifest["rows"].items():
        print(f"  {topic:<24} {n:>12,}")
    return 0


def cmd_run(args) -> int:
    if args.source == "pubsub":
        return cmd_run_live(args)
    if args.streaming:
        print(
            "defi-risk run: --streaming is for --source pubsub; replay files in streaming mode "
            "with --replay stream",
            file=sys.stderr,
        )
        return 2
    if not args.input_dir:
        print("defi-risk run: --input-dir is required with --source files", file=sys.stderr)
        return 2
    from pipelines.local import run_local

    report = run_local(
        args.input_dir,
        args.output_dir,
        pipeline=args.pipeline,
        input_format=args.input_format,
        num_workers=args.direct_num_workers,
        replay=args.replay,
        extra_args=args.pipeline_options,
    )
    print(
        f"ran pipeline '{report.pipeline}' on {report.input_dir} -> {report.output_dir} "
        f"in {report.wall_seconds:.1f} s"
    )
    _print_accounting(report)
    return 0 if report.balanced() else 1


def cmd_run_live(args) -> int:
    if not args.streaming:
        print(
            "defi-risk run: Pub/Sub is an unbounded source: add --streaming "
            "(defi-risk run PIPELINE --source pubsub --streaming ...)",
            file=sys.stderr,
        )
        return 2
    if args.duration_s is not None and args.duration_s <= 0:
        print(
            "defi-risk run: --duration-s must be > 0 (leave it out to run until Ctrl-C)",
            file=sys.stderr,
        )
        return 2
    from pipelines.live import LiveRunError, print_live_report, run_live

    try:
        report = run_live(
            args.pipeline,
            args.project,
            args.output_dir,
            duration_s=args.duration_s,
            extra_args=args.pipeline_options,
            pull_max_messages=args.pull_max_messages,
        )
    except LiveRunError as err:
        print(f"defi-risk run: {err}", file=sys.stderr)
        return 2
    print_live_report(report)
    return 0 if report.state in ("CANCELLED", "DONE") else 1


def cmd_publish(args) -> int:
    from pipelines.publish import publish_command

    return publish_command(args)


def cmd_emulator(args) -> int:
    from pipelines.emulator import emulator_command

    return emulator_command(args)


def _print_accounting(report) -> None:
    print("  records in = out + dead letters, per topic:")
    for topic, c in report.topics.items():
        ok = "ok" if c["in"] == c["out"] + c["dead_letter"] else "MISMATCH"
        print(f"    {topic:<20} {c['in']:>9,} = {c['out']:>9,} + {c['dead_letter']:>5,}  {ok}")
    if report.missing_topics:
        print(f"  topics with no input file (skipped): {', '.join(report.missing_topics)}")


def cmd_warehouse(args) -> int:
    from pipelines.warehouse import build_warehouse

    report = build_warehouse(args.output_dir)
    print(
        f"warehouse {Path(args.output_dir) / 'warehouse.duckdb'}: {len(report.tables)} tables, {len(report.views)} views"
    )
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def cmd_schemas(args) -> int:
    from schemas.codegen import stale_files, write_files

    if args.action == "generate":
        for path in write_files():
            print(f"wrote {path}")
        return 0
    stale = stale_files()
    for path in stale:
        print(f"stale: {path} (run `defi-risk schemas generate`)", file=sys.stderr)
    if not stale:
        print("generated schemas are up to date")
    return 1 if stale else 0


def _print_frame(frame, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        import pandas as pd

        with pd.option_context(
            "display.max_rows", 200, "display.max_columns", 50, "display.width", 200
        ):
            print(frame.to_string(index=False))


def cmd_sql(args) -> int:
    from pipelines.warehouse import run_sql

    frame = run_sql(Path(args.output_dir) / "warehouse.duckdb", args.query)
    _print_frame(frame if hasattr(frame, "to_csv") else frame.to_pandas(), args.format)
    return 0


def cmd_query(args) -> int:
    args.query = f"SELECT * FROM risk.{args.view}" + (f" LIMIT {args.limit}" if args.limit else "")
    return cmd_sql(args)


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


def _price_summary(db_path: Path) -> list[tuple]:
    from pipelines.warehouse import run_sql

    sql = """
        SELECT asset, COUNT(*) AS n, COUNTIF(status = 'ok') AS ok, COUNTIF(status = 'degraded') AS degraded,
               COUNTIF(status = 'price_unavailable') AS unavailable,
               MAX_BY(price, IF(price IS NULL, NULL, event_time)) AS last_price
        FROM risk.prices GROUP BY asset ORDER BY asset"""
    return [tuple(r.values()) for r in run_sql(db_path, sql).to_pylist()]


def cmd_demo(args) -> int:
    from pipelines.local import run_local
    from pipelines.synthetic import generate
    from pipelines.warehouse import build_warehouse

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
    _print_accounting(report)
    print("rows per table:")
    for table, n in wh.tables.items():
        print(f"    {table:<32} {n:>9,}")
    print("composite prices (per asset: windows by status, last price):")
    for asset, n, ok, degraded, unavailable, last in _price_summary(
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
    from pipelines.compliance_report import compliance_truth_check, print_compliance_check

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


def cmd_oracle(args) -> int:
    from pipelines.oracle.poller import poll_command

    return poll_command(args)


def cmd_backtest(args) -> int:
    from pipelines.backtest import backtest_command

    return backtest_command(args)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defi-risk",
        description="DeFi risk pipelines: generate data, run the graph locally, query the warehouse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log Beam's INFO messages.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate",
        help="Write a deterministic synthetic market: one file per topic plus ground_truth.json.",
    )
    g.add_argument("--out", required=True, help="Output directory.")
    g.add_argument(
        "--days", type=int, default=7, help="Days of per-minute market data (default 7)."
    )
    g.add_argument(
        "--accounts", type=int, default=200, help="Number of margin accounts (default 200)."
    )
    g.add_argument(
        "--seed",
        type=int,
        default=7,
        help="Random seed; the output is identical for a seed (default 7).",
    )
    g.add_argument(
        "--start",
        type=_date,
        default=datetime(2025, 1, 6, tzinfo=UTC),
        help="First day, YYYY-MM-DD (UTC; default 2025-01-06).",
    )
    g.add_argument(
        "--format",
        choices=("jsonl", "parquet", "both"),
        default="jsonl",
        help="File format of the topic files (default jsonl).",
    )
    g.add_argument(
        "--history",
        action="store_const",
        dest="func",
        const=cmd_generate_history,
        help="Bulk history instead: 1-minute prices and settlements as Parquet partitioned by "
        "day (pipelines/synthetic/bulk.py), e.g. --start 2024-01-01 --days 730 --assets 20 "
        "--accounts 10000; --format is ignored.",
    )
    g.add_argument(
        "--assets",
        type=int,
        default=20,
        help="With --history: number of assets, 1..20 (default 20).",
    )
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser(
        "run",
        help="Run a pipeline over topic files on the local pinned runner; write Parquet tables and JSONL alerts.",
    )
    r.add_argument(
        "pipeline",
        nargs="?",
        default="all",
        choices=PIPELINES,
        help="Which pipeline (default all: every stage in one graph).",
    )
    r.add_argument(
        "--input-dir",
        help="Directory with <topic>.jsonl or <topic>.parquet files (required with --source files).",
    )
    r.add_argument(
        "--output-dir",
        required=True,
        help="Where OUT/tables/<table>/ and OUT/alerts/<topic>.jsonl go (replaced).",
    )
    r.add_argument(
        "--source",
        choices=("files", "pubsub"),
        default="files",
        help="files: the topic files of --input-dir (default); pubsub: the <topic>.sub "
        "subscriptions of --project, live (needs --streaming; see pipelines/live.py).",
    )
    r.add_argument(
        "--streaming",
        action="store_true",
        help="Run as a streaming job (required with --source pubsub).",
    )
    r.add_argument(
        "--project",
        default=DEFAULT_PROJECT,
        help=f"--source pubsub: project of the subscriptions and alert topics (default {DEFAULT_PROJECT}).",
    )
    r.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="--source pubsub: cancel the run after this many seconds (default: until Ctrl-C).",
    )
    r.add_argument(
        "--pull-max-messages",
        type=int,
        default=DEFAULT_PULL_MAX_MESSAGES,
        help=f"--source pubsub: messages per pull on the local runner (default "
        f"{DEFAULT_PULL_MAX_MESSAGES}; 0 keeps "
        "Beam's own pull: 10 messages, and up to 30 s wait on an idle subscription).",
    )
    r.add_argument(
        "--input-format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="Topic file format (default jsonl).",
    )
    r.add_argument(
        "--direct-num-workers",
        type=int,
        default=1,
        help="Local worker processes (default 1; 2 uses multi-processing).",
    )
    r.add_argument(
        "--replay",
        choices=("batch", "stream"),
        default="batch",
        help="batch: read the files on the FnApiRunner (default, fast); stream: replay them through a "
        "TestStream on the streaming runner, minute by minute in event time (small inputs).",
    )
    r.set_defaults(func=cmd_run)

    w = sub.add_parser(
        "warehouse", help="Load OUT/tables into OUT/warehouse.duckdb and create the views in sql/."
    )
    w.add_argument("--output-dir", required=True, help="The output directory of `defi-risk run`.")
    w.set_defaults(func=cmd_warehouse)

    s = sub.add_parser(
        "schemas",
        help="Generate or check the Avro and BigQuery schemas from the pydantic contracts.",
    )
    s.add_argument(
        "action",
        choices=("generate", "check"),
        help="generate: write schemas/avro and schemas/bigquery; check: fail when stale.",
    )
    s.set_defaults(func=cmd_schemas)

    d = sub.add_parser(
        "demo", help="generate + run + warehouse, then print a summary (what `make demo` runs)."
    )
    d.add_argument("--out", default="out/demo", help="Output directory (default out/demo).")
    d.add_argument("--days", type=int, default=7, help="Days of market data (default 7).")
    d.add_argument("--accounts", type=int, default=200, help="Accounts (default 200).")
    d.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")
    d.add_argument(
        "--direct-num-workers", type=int, default=1, help="Local worker processes (default 1)."
    )
    d.add_argument(
        "--var-interval",
        choices=("daily", "hourly"),
        default="hourly",
        help="VaR return interval (default hourly: a week holds too few daily returns).",
    )
    d.set_defaults(func=cmd_demo)

    q = sub.add_parser(
        "sql", help="Run BigQuery SQL against the local DuckDB warehouse (transpiled with sqlglot)."
    )
    q.add_argument("query", help='BigQuery SQL, e.g. "SELECT * FROM risk.latest_prices".')
    q.add_argument(
        "--output-dir",
        default="out/demo",
        help="Directory holding warehouse.duckdb (default out/demo).",
    )
    q.add_argument(
        "--format", choices=("table", "csv"), default="table", help="Print a table or CSV."
    )
    q.set_defaults(func=cmd_sql)

    v = sub.add_parser("query", help="Print a view of the local warehouse.")
    v.add_argument("view", help="View name, e.g. latest_prices.")
    v.add_argument(
        "--output-dir",
        default="out/demo",
        help="Directory holding warehouse.duckdb (default out/demo).",
    )
    v.add_argument(
        "--format", choices=("table", "csv"), default="table", help="Print a table or CSV."
    )
    v.add_argument("--limit", type=int, default=0, help="At most this many rows (0: all).")
    v.set_defaults(func=cmd_query)

    o = sub.add_parser(
        "oracle", help="Oracle services: poll Chainlink (JSON-RPC) and Pyth (Hermes) prices."
    )
    o_sub = o.add_subparsers(dest="action", required=True, metavar="ACTION")
    op = o_sub.add_parser(
        "poll",
        help="Poll every registry feed each interval and publish market.prices.v1 events.",
    )
    from pipelines.oracle.args import add_poll_arguments

    add_poll_arguments(op)
    op.set_defaults(func=cmd_oracle)

    bt = sub.add_parser("backtest", help="Backtest a risk model on a price history.")
    bt_sub = bt.add_subparsers(dest="action", required=True, metavar="ACTION")
    btv = bt_sub.add_parser(
        "var", help="Rolling VaR of one asset vs realised returns: Kupiec, Christoffersen, Basel."
    )
    from pipelines.backtest import add_backtest_arguments

    add_backtest_arguments(btv)
    btv.set_defaults(func=cmd_backtest)

    sn = sub.add_parser("sanctions", help="Load OFAC lists into versions with change events.")
    from pipelines.sanctions_store import add_sanctions_arguments

    add_sanctions_arguments(sn)

    dp = sub.add_parser(
        "deploy", help="Build and launch (or update, or drain) the Dataflow flex template."
    )
    from runners.deploy import add_deploy_arguments

    add_deploy_arguments(dp)

    bf = sub.add_parser(
        "backfill",
        help="Recompute a date range of history (prices, VaR/ES, margin health and events, dead "
        "letters) into day partitions or BigQuery; idempotent and resumable.",
    )
    from pipelines.backfill import add_backfill_arguments

    add_backfill_arguments(bf)

    po = sub.add_parser("policy", help="Validate a compliance policy file.")
    from pipelines.compliance_report import add_policy_arguments

    add_policy_arguments(po)

    lb = sub.add_parser("label", help="After-the-fact labels over topic files (batch).")
    from pipelines.labels import add_label_arguments

    add_label_arguments(lb)

    pb = sub.add_parser(
        "publish",
        help="Publish generated topic files to Pub/Sub at a steady rate, with current event times.",
    )
    from pipelines.live_args import add_publish_arguments

    add_publish_arguments(pb)
    pb.set_defaults(func=cmd_publish)

    em = sub.add_parser(
        "emulator",
        help="Start, stop or check the local Pub/Sub emulator (creates every topic and subscription).",
    )
    from pipelines.live_args import add_emulator_arguments

    add_emulator_arguments(em)
    em.set_defaults(func=cmd_emulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    # `run` passes any further --option=value to the pipeline options (see pipelines/options.py).
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = [a for a in extra if not a.startswith("--")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.pipeline_options = extra
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from pipelines.local import InputError

    try:
        return args.func(args)
    except InputError as err:
        print(f"defi-risk: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
