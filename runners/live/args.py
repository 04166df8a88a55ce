"""The arguments of ``defi-risk emulator`` and ``defi-risk publish`` (argparse only, so building
the CLI stays cheap; the commands live in ``runners/live/emulator.py`` and ``runners/live/publish.py``)."""

from __future__ import annotations

import argparse

DEFAULT_HOST_PORT = "localhost:8085"
DEFAULT_PROJECT = "defi-risk-local"
DEFAULT_STATE_DIR = ".defi-risk"
START_TIMEOUT_S = 60.0
PUBLISH_FORMATS = ("json", "avro")
DEFAULT_PULL_MAX_MESSAGES = 500  # defi-risk run --source pubsub: messages per local pull


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = sub.add_parser(
        "start",
        help="Start the emulator in the background and create every topic and subscription.",
    )
    start.add_argument(
        "--host-port",
        default=DEFAULT_HOST_PORT,
        help=f"Where it listens (default {DEFAULT_HOST_PORT}).",
    )
    start.add_argument(
        "--project",
        default=DEFAULT_PROJECT,
        help=f"Project of the topics and subscriptions (default {DEFAULT_PROJECT}).",
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=START_TIMEOUT_S,
        help=f"Seconds to wait for it to answer (default {START_TIMEOUT_S:.0f}).",
    )
    sub.add_parser("stop", help="Stop the emulator (SIGTERM, then SIGKILL, to its process group).")
    sub.add_parser("status", help="Say whether the emulator runs, where, and the export line.")
    for p in sub.choices.values():
        p.add_argument(
            "--state-dir",
            default=DEFAULT_STATE_DIR,
            help=f"Where emulator.json and emulator.log live (default ./{DEFAULT_STATE_DIR}).",
        )


def add_publish_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input-dir",
        required=True,
        help="Directory with <topic>.jsonl files (defi-risk generate).",
    )
    p.add_argument(
        "--rate", type=float, required=True, help="Messages per second, over all topics."
    )
    p.add_argument(
        "--project",
        default=DEFAULT_PROJECT,
        help=f"Project of the topics (default {DEFAULT_PROJECT}).",
    )
    p.add_argument(
        "--topics",
        default=None,
        help="Comma-separated topics to publish (default: every input topic with a file).",
    )
    p.add_argument("--limit", type=int, default=None, help="Publish at most this many messages.")
    p.add_argument(
        "--format",
        choices=PUBLISH_FORMATS,
        default="json",
        help="Message body: json (default) or avro (then run the pipeline with "
        "--payload_format=avro).",
    )
