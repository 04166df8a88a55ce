"""The arguments of ``defi-risk oracle poll`` (argparse only, so building the CLI stays cheap)."""

from __future__ import annotations

import argparse


def add_poll_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rpc-url", metavar="URL", help="Ethereum JSON-RPC URL for the Chainlink feeds (eth_call)."
    )
    p.add_argument(
        "--hermes-url",
        metavar="URL",
        help="Pyth Hermes base URL, e.g. https://hermes.pyth.network.",
    )
    p.add_argument(
        "--interval",
        metavar="S",
        type=float,
        default=10.0,
        help="Seconds between cycles (default 10).",
    )
    p.add_argument(
        "--publish",
        metavar="TARGET",
        required=True,
        help="jsonl:PATH (append one JSON line per event) or pubsub:projects/P/topics/T.",
    )
    p.add_argument(
        "--pubsub-format",
        choices=("avro", "json"),
        default="avro",
        help="Pub/Sub message body: schemaless Avro (default) or JSON.",
    )
    p.add_argument(
        "--feeds-registry",
        metavar="PATH",
        help="Feed registry TOML (default transforms/prices/config/feeds.toml).",
    )
    stop = p.add_mutually_exclusive_group()
    stop.add_argument(
        "--iterations",
        metavar="N",
        type=int,
        help="Stop after N cycles (default: run until Ctrl-C).",
    )
    stop.add_argument(
        "--duration", metavar="S", type=float, help="Stop after S seconds (default: until Ctrl-C)."
    )
    p.add_argument(
        "--status-file", metavar="F", help="Write the source status as JSON here after each cycle."
    )
    p.add_argument(
        "--dead-letter-file",
        metavar="F",
        help="Append refused readings (stale, decode errors) as dead-letter JSON lines "
        "(default: log them).",
    )
    p.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=5.0,
        help="Per-request timeout in seconds (default 5).",
    )
    p.add_argument(
        "--max-retries",
        metavar="N",
        type=int,
        default=3,
        help="Retries per request within a cycle (default 3).",
    )
    p.add_argument(
        "--breaker-threshold",
        metavar="N",
        type=int,
        default=5,
        help="Consecutive failed requests that open a source's circuit breaker (default 5).",
    )
    p.add_argument(
        "--breaker-cooldown",
        metavar="S",
        type=float,
        default=30.0,
        help="Seconds an open breaker waits before a trial request (default 30).",
    )
