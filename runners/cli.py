"""``defi-risk``: the command line of the project. It parses and dispatches; each command's work
lives beside its run mode (``runners/<mode>/``) or in ``runners/commands/``.

    defi-risk generate --out data/demo --days 7 --accounts 200 --seed 7
    defi-risk run all --input-dir data/demo --output-dir out/demo
    defi-risk warehouse --output-dir out/demo
    defi-risk demo                      # all three, then a summary
    defi-risk schemas generate|check
    defi-risk sql "SELECT * FROM risk.latest_prices" --output-dir out/demo
    defi-risk query latest_prices --output-dir out/demo
    defi-risk oracle poll --rpc-url URL --hermes-url URL --interval 10 --publish jsonl:prices.jsonl
    defi-risk backtest var --prices FILE --asset BTC --level 0.99 --window 250 --method historical
    defi-risk emulator start|status|stop        # the local Pub/Sub emulator, topics, subscriptions
    defi-risk run risk --source pubsub --streaming --output-dir out/live --duration-s 120
    defi-risk publish --input-dir data/demo --rate 100
    defi-risk backfill --start D --end D --input DIR --output DIR|bq://PROJECT.DATASET
    defi-risk deploy --project P --region R --template-bucket B --dry-run
    defi-risk sanctions load | policy check FILE | label rugpulls

A command whose work needs Beam's runners, the GCP clients, DuckDB or pandas imports its module
when it runs, so that building the parser (and ``--help``) stays light.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from datetime import UTC, datetime

from pipelines.options import PIPELINES, OptionsError
from runners.backfill.driver import add_backfill_arguments
from runners.commands.backtest import add_backtest_arguments
from runners.commands.labels import add_label_arguments
from runners.commands.policy import add_policy_arguments
from runners.commands.sanctions import add_sanctions_arguments
from runners.dataflow.deploy import add_deploy_arguments
from runners.io.files import InputError
from runners.live.args import (
    DEFAULT_PROJECT,
    DEFAULT_PULL_MAX_MESSAGES,
    add_emulator_arguments,
    add_publish_arguments,
)
from runners.oracle.args import add_poll_arguments
from transforms.compliance.policy import PolicyError
from transforms.compliance.store import SanctionsStoreError
from transforms.prices.oracles import RegistryError

EXIT_CODES = """exit codes:
  0  success
  1  the command ran but its check failed: `run` and `demo`, the books do not balance
     (records in != out + dead letters, see OUT/run_report.json); `schemas check`, a schema
     is stale; `policy check`, the policy is invalid; `publish`, messages failed
  2  usage or input error, in one line: a bad argument or pipeline option (naming the
     option, the value and the allowed range), a missing or unreadable input or path, an
     output directory that is a file, a topic file a stage needs is missing (see `run
     --allow-missing-topics`); found before the run starts, they leave OUT as it was
  3  internal error: one line `defi-risk: internal error: <Type>: <message>`; --verbose
     prints the traceback"""

# Errors of the user's input, not of the program: exit code 2, one line.
USAGE_ERRORS = (
    InputError,  # the input directory does not hold what the run needs
    OptionsError,  # a pipeline option out of range or of the wrong type
    RegistryError,  # --feed_registry names an invalid file
    PolicyError,  # --policy names an invalid file
    SanctionsStoreError,  # --sanctions_store is missing or unusable
    OSError,  # a path: FileNotFoundError, NotADirectoryError, PermissionError, ...
)


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ------------------------------------------------------------------------------- dispatch
def cmd_generate(args) -> int:
    from runners.synthetic.command import generate_command  # lazy: numpy, pandas

    return generate_command(args)


def cmd_generate_history(args) -> int:
    from runners.synthetic.command import generate_history_command  # lazy: numpy, pyarrow

    return generate_history_command(args)


def cmd_run(args) -> int:
    if args.source == "pubsub":
        from runners.live.run import live_command  # lazy: Beam's runners, the Pub/Sub client

        return live_command(args)
    from runners.local.run import run_command  # lazy: Beam's runners

    return run_command(args)


def cmd_demo(args) -> int:
    from runners.local.demo import demo_command  # lazy: Beam's runners, DuckDB

    return demo_command(args)


def cmd_warehouse(args) -> int:
    from runners.local.warehouse import warehouse_command  # lazy: DuckDB, sqlglot

    return warehouse_command(args)


def cmd_sql(args) -> int:
    from runners.local.warehouse import sql_command  # lazy: DuckDB, sqlglot

    return sql_command(args)


def cmd_query(args) -> int:
    from runners.local.warehouse import query_command  # lazy: DuckDB, sqlglot

    return query_command(args)


def cmd_schemas(args) -> int:
    from runners.commands.schemas import schemas_command  # lazy: fastavro, pyarrow

    return schemas_command(args)


def cmd_publish(args) -> int:
    from runners.live.publish import publish_command  # lazy: the Pub/Sub client

    return publish_command(args)


def cmd_emulator(args) -> int:
    from runners.live.emulator import emulator_command  # lazy: the Pub/Sub client

    return emulator_command(args)


def cmd_oracle(args) -> int:
    from runners.oracle.poller import poll_command  # lazy: the Pub/Sub client

    return poll_command(args)


def cmd_backtest(args) -> int:
    from runners.commands.backtest import backtest_command  # lazy: scipy, pandas

    return backtest_command(args)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defi-risk",
        description="DeFi risk pipelines: generate data, run the graph locally, query the warehouse.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Log Beam's INFO messages; print the traceback of an internal error.",
    )
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
        "day (runners/synthetic/bulk.py), e.g. --start 2024-01-01 --days 730 --assets 20 "
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
        "subscriptions of --project, live (needs --streaming; see runners/live/run.py).",
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
    r.add_argument(
        "--allow-missing-topics",
        action="store_true",
        help="Run even when a topic file that a stage needs is missing: those stages are skipped "
        "(and listed). Without it, such a run fails with exit code 2.",
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
    add_poll_arguments(op)
    op.set_defaults(func=cmd_oracle)

    bt = sub.add_parser("backtest", help="Backtest a risk model on a price history.")
    bt_sub = bt.add_subparsers(dest="action", required=True, metavar="ACTION")
    btv = bt_sub.add_parser(
        "var", help="Rolling VaR of one asset vs realised returns: Kupiec, Christoffersen, Basel."
    )
    add_backtest_arguments(btv)
    btv.set_defaults(func=cmd_backtest)

    sn = sub.add_parser("sanctions", help="Load OFAC lists into versions with change events.")
    add_sanctions_arguments(sn)

    dp = sub.add_parser(
        "deploy", help="Build and launch (or update, or drain) the Dataflow flex template."
    )
    add_deploy_arguments(dp)

    bf = sub.add_parser(
        "backfill",
        help="Recompute a date range of history (prices, VaR/ES, margin health and events, dead "
        "letters) into day partitions or BigQuery; idempotent and resumable.",
    )
    add_backfill_arguments(bf)

    po = sub.add_parser("policy", help="Validate a compliance policy file.")
    add_policy_arguments(po)

    lb = sub.add_parser("label", help="After-the-fact labels over topic files (batch).")
    add_label_arguments(lb)

    pb = sub.add_parser(
        "publish",
        help="Publish generated topic files to Pub/Sub at a steady rate, with current event times.",
    )
    add_publish_arguments(pb)
    pb.set_defaults(func=cmd_publish)

    em = sub.add_parser(
        "emulator",
        help="Start, stop or check the local Pub/Sub emulator (creates every topic and subscription).",
    )
    add_emulator_arguments(em)
    em.set_defaults(func=cmd_emulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parses, dispatches, and turns every failure into its exit code (``EXIT_CODES``): the one
    place that decides them. A command returns 0, or 1 when its check fails."""
    parser = make_parser()
    # `run` passes any further --option=value to the pipeline options (see pipelines/options.py).
    args, extra = parser.parse_known_args(argv)
    if any(a in ("-v", "--verbose") for a in extra):  # also accepted after the command
        args.verbose = True
        extra = [a for a in extra if a not in ("-v", "--verbose")]
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
    try:
        return args.func(args)
    except USAGE_ERRORS as err:
        print(f"defi-risk: {_one_line(err)}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return 2
    except Exception as err:
        print(
            f"defi-risk: internal error: {type(err).__name__}: {_one_line(err)} "
            "(run with --verbose for the traceback)",
            file=sys.stderr,
        )
        if args.verbose:
            traceback.print_exc()
        return 3


def _one_line(err: BaseException) -> str:
    """The message of an exception on one line: its lines joined (Beam appends the step
    stack to a message; an OSError reads "strerror: filename")."""
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines)[:2000]


if __name__ == "__main__":
    sys.exit(main())
