"""Publish generated topic files to Pub/Sub at a steady rate, with current event times.

    defi-risk emulator start
    export PUBSUB_EMULATOR_HOST=localhost:8085
    defi-risk generate --out data/demo --days 1 --accounts 50
    defi-risk publish --input-dir data/demo --rate 100 [--project defi-risk-local]
        [--topics market.prices.v1,settlements.v1] [--limit 5000] [--format json|avro]

The ``<topic>.jsonl`` files that ``defi-risk generate`` writes are merged in event-time order and
published at ``--rate`` messages per second:

- **Current event times.** Every line that parses with its topic's contract has all its datetime
  fields shifted by one delta, so that its event-time field (``Contract.event_time_field``)
  equals the wall-clock time it is published at; times inside one event keep their distances
  (a price's ``observed_at`` stays 2 s after its ``publish_time``). A second line with the same
  event id (a redelivery the generator injects) gets the same delta, so it stays a duplicate.
  The live pipeline's watermark follows the wall clock, so old event times would arrive late.
- **Bad lines pass through.** A line that does not parse (the generator injects them on purpose)
  is published byte for byte, so the live pipeline dead-letters it as the file run does. In the
  event-time merge it travels with the line before it.
- **Attributes.** ``ts``: RFC 3339 event time (the ReadFromPubSub ``timestamp_attribute``; the
  publish time for a bad line) and ``event_id`` (the ``id_label``; for a line without a readable
  id, a hash of its bytes), as the oracle poller sets them.
- **Body.** ``--format json`` (default; the pipeline's default ``--payload_format=json``) sends the
  contract's JSON; ``--format avro`` sends schemaless Avro (``schemas.serde.to_avro``): run the
  pipeline with ``--payload_format=avro`` then.
- **Steady rate.** Message i is due at ``start + i / rate`` (a deadline schedule: no drift from
  per-message sleeps); when the publisher falls more than one second behind, the schedule is
  rebased rather than bursting. Publish futures are awaited in batches; a failed publish is
  retried with backoff, and what still fails is counted and listed, never dropped silently.

``publish_records`` is the Python API (a list of ``(topic, model)`` at a rate, with each message's
publish wall time by event id) that the latency benchmark reuses. ``PUBSUB_EMULATOR_HOST`` is
honoured by the Google client.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from runners.live.args import DEFAULT_PROJECT, PUBLISH_FORMATS
from runners.live.emulator import EmulatorError, check_pubsub_target
from schemas.base import Contract
from schemas.registry import INPUT_TOPICS, TOPICS
from schemas.serde import to_avro, to_json
from schemas.topics import ID_ATTRIBUTE, TIMESTAMP_ATTRIBUTE, rfc3339, topic_path

log = logging.getLogger(__name__)

FORMATS = PUBLISH_FORMATS


class PublishError(RuntimeError):
    """Publishing cannot start; the message says what to do."""


# ------------------------------------------------------------------------------ event times
def shift_times(record: BaseModel, delta: timedelta) -> BaseModel:
    """A copy with every datetime field (also in nested models) moved by ``delta``."""
    update: dict[str, Any] = {}
    for name in type(record).model_fields:
        value = getattr(record, name)
        if isinstance(value, datetime):
            update[name] = value + delta
        elif isinstance(value, BaseModel):
            update[name] = shift_times(value, delta)
    return record.model_copy(update=update) if update else record


def to_current_time(record: Contract, now: datetime) -> tuple[Contract, timedelta]:
    """The record shifted so its event time is ``now``, and the delta that did it."""
    delta = now - record.event_timestamp()
    return shift_times(record, delta), delta


@dataclass(frozen=True)
class Outgoing:
    """One line of a topic file: its parsed record, or only its bytes when it does not parse."""

    topic: str
    raw: bytes
    record: Contract | None  # None: the line does not parse and is published as it is
    order: float  # event time (epoch s) for the merge; a bad line takes the one before it
    line: int  # 1-based line number in its file

    @property
    def event_id(self) -> str:
        if self.record is not None:
            return self.record.message_id()
        return raw_event_id(self.topic, self.raw)


def raw_event_id(topic: str, raw: bytes) -> str:
    """The ``event_id`` of a line that does not parse: its own when readable, else a hash.

    Not a swallowed error: the line itself is still published as it is (the pipeline dead-letters
    it); only its id falls back to a content hash when no ``event_id`` can be read from it.
    """
    with contextlib.suppress(ValueError, AttributeError, UnicodeDecodeError):
        value = json.loads(raw).get("event_id")
        if isinstance(value, str) and value:
            return value
    return "raw-" + hashlib.sha256(topic.encode() + b"\x1f" + raw).hexdigest()[:32]


def read_topic_file(path: str | Path, topic: str) -> Iterator[Outgoing]:
    """The lines of one ``<topic>.jsonl`` file in file order, parsed with the topic's contract."""
    model = TOPICS[topic]
    last = float("-inf")
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                record = model.model_validate_json(raw)
            except (ValidationError, ValueError):
                yield Outgoing(topic, raw, None, last, number)
                continue
            last = record.event_timestamp().timestamp()
            yield Outgoing(topic, raw, record, last, number)


def merged_topic_files(
    input_dir: str | Path, topics: Sequence[str] | None = None
) -> tuple[Iterator[Outgoing], list[str]]:
    """The topic files of ``input_dir`` merged in event-time order (files are read lazily).

    Returns the iterator and the topics that were merged. Raises PublishError when the
    directory or a requested file is missing.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise PublishError(
            f"input directory {input_dir} does not exist; create one with "
            f"`defi-risk generate --out {input_dir}`"
        )
    wanted = list(topics) if topics else [t for t in INPUT_TOPICS]
    unknown = [t for t in wanted if t not in INPUT_TOPICS]
    if unknown:
        raise PublishError(f"unknown topics {unknown}; input topics: {list(INPUT_TOPICS)}")
    found = [t for t in wanted if (input_dir / f"{t}.jsonl").exists()]
    missing = [t for t in wanted if t not in found]
    if topics and missing:
        raise PublishError(f"no file for {missing} in {input_dir} (expected <topic>.jsonl)")
    if not found:
        raise PublishError(
            f"no <topic>.jsonl files in {input_dir}; write them with "
            f"`defi-risk generate --out {input_dir}`"
        )
    streams = [read_topic_file(input_dir / f"{t}.jsonl", t) for t in found]
    rank = {t: i for i, t in enumerate(found)}
    return heapq.merge(*streams, key=lambda o: (o.order, rank[o.topic], o.line)), found


# ----------------------------------------------------------------------------- rate schedule
class RateSchedule:
    """A deadline schedule: message i is due at ``start + i / rate``.

    ``wait()`` sleeps until the next message is due. A late sender catches up without drift, but
    never by more than ``max_lag_s`` worth of messages at once (a token bucket of that depth):
    past that, the schedule is rebased to now (``rebases`` counts it).
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_lag_s: float = 1.0,
    ):
        if not rate > 0:
            raise ValueError(f"rate must be > 0 messages/s, got {rate}")
        self.rate = float(rate)
        self.clock, self.sleep = clock, sleep
        self.max_lag_s = max_lag_s
        self.start: float | None = None
        self.sent = 0
        self.rebases = 0

    def wait(self) -> float:
        """Blocks until the next message is due; returns its due time on ``clock``."""
        now = self.clock()
        if self.start is None:
            self.start = now
        due = self.start + self.sent / self.rate
        if due > now:
            self.sleep(due - now)
        elif now - due > self.max_lag_s:
            self.start = now - self.sent / self.rate
            self.rebases += 1
            due = now
        self.sent += 1
        return due


# ------------------------------------------------------------------------------- publishing
@dataclass
class PublishReport:
    published: int = 0  # acknowledged by Pub/Sub
    failed: int = 0  # still failing after the retries
    unparsed: int = 0  # lines published as they are (they will be dead letters)
    by_topic: dict[str, int] = field(default_factory=dict)  # acknowledged, per topic
    wall_seconds: float = 0.0
    rate_target: float = 0.0
    rebases: int = 0
    retries: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (topic, event_id, error)
    # event_id -> wall time (epoch s) of the publish call; a redelivery keeps its first time
    publish_times: dict[str, float] = field(default_factory=dict)

    @property
    def attempted(self) -> int:
        return self.published + self.failed

    @property
    def rate_achieved(self) -> float:
        return self.attempted / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "failed": self.failed,
            "unparsed": self.unparsed,
            "by_topic": dict(self.by_topic),
            "wall_seconds": round(self.wall_seconds, 3),
            "rate_target": self.rate_target,
            "rate_achieved": round(self.rate_achieved, 2),
            "rebases": self.rebases,
            "retries": self.retries,
        }


@dataclass
class _Message:
    topic: str  # short topic name
    data: bytes
    attributes: dict[str, str]
    event_id: str
    attempts: int = 0
    error: str = ""


class Publisher:
    """Sends messages with a ``PublisherClient``-like client and settles the futures in batches.

    ``settle()`` waits on every pending future; failures are published again (up to
    ``max_retries`` times, with backoff) and what still fails is counted in the report.
    """

    def __init__(
        self,
        client: Any,
        project: str,
        report: PublishReport,
        *,
        batch_size: int = 100,
        max_pending_s: float = 0.5,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.client, self.project, self.report = client, project, report
        self.batch_size, self.max_pending_s = batch_size, max_pending_s
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.sleep, self.clock, self.wall_clock = sleep, clock, wall_clock
        self._pending: list[tuple[_Message, Any]] = []
        self._oldest: float | None = None

    def send(self, message: _Message) -> None:
        self.report.publish_times.setdefault(message.event_id, self.wall_clock())
        self._pending.append((message, self._publish(message)))
        if self._oldest is None:
            self._oldest = self.clock()
        if (
            len(self._pending) >= self.batch_size
            or self.clock() - self._oldest >= self.max_pending_s
        ):
            self.settle()

    def _publish(self, message: _Message):
        message.attempts += 1
        try:
            return self.client.publish(
                topic_path(self.project, message.topic), message.data, **message.attributes
            )
        except Exception as err:  # refused before queueing (closed client, bad argument)
            return _Failed(err)

    def settle(self) -> None:
        pending, self._pending, self._oldest = self._pending, [], None
        retry_round = 0
        while pending:
            failed: list[_Message] = []
            for message, future in pending:
                try:
                    future.result(timeout=self.timeout_s)
                except Exception as err:
                    message.error = f"{type(err).__name__}: {err}"
                    failed.append(message)
                    continue
                self.report.published += 1
                self.report.by_topic[message.topic] = self.report.by_topic.get(message.topic, 0) + 1
            if not failed:
                return
            if retry_round >= self.max_retries:
                for message in failed:
                    self.report.failed += 1
                    self.report.failures.append((message.topic, message.event_id, message.error))
                    log.error(
                        "gave up publishing %s to %s after %d attempts: %s",
                        message.event_id,
                        message.topic,
                        message.attempts,
                        message.error,
                    )
                return
            self.sleep(min(0.1 * 2**retry_round, 5.0))
            retry_round += 1
            self.report.retries += len(failed)
            log.warning("retrying %d failed publishes (round %d)", len(failed), retry_round)
            pending = [(m, self._publish(m)) for m in failed]


class _Failed:
    """A publish that failed before it was queued, shaped like a future."""

    def __init__(self, err: Exception):
        self.err = err

    def result(self, timeout: float | None = None):
        raise self.err


def encode(record: Contract, fmt: str) -> bytes:
    if fmt == "json":
        return to_json(record).encode()
    if fmt == "avro":
        return to_avro(record)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def prepare(
    item: Outgoing,
    now: datetime,
    fmt: str,
    deltas: dict[str, timedelta] | None = None,
    current_times: bool = True,
) -> _Message:
    """The message for one line: shifted to ``now`` (or by the delta its event id got before)."""
    if item.record is None:
        return _Message(
            item.topic,
            item.raw,
            {TIMESTAMP_ATTRIBUTE: rfc3339(now), ID_ATTRIBUTE: item.event_id},
            item.event_id,
        )
    record = item.record
    mid = item.event_id  # before any time shift: a profile's id hashes its time
    if current_times:
        delta = None if deltas is None else deltas.get(mid)
        if delta is None:
            record, delta = to_current_time(record, now)
            if deltas is not None:
                deltas[mid] = delta
        else:
            record = shift_times(record, delta)
    return _Message(
        item.topic,
        encode(record, fmt),
        {TIMESTAMP_ATTRIBUTE: rfc3339(record.event_timestamp()), ID_ATTRIBUTE: mid},
        mid,
    )


def publish_outgoing(
    items: Iterable[Outgoing],
    rate: float,
    *,
    project: str = DEFAULT_PROJECT,
    fmt: str = "json",
    client: Any = None,
    limit: int | None = None,
    current_times: bool = True,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 5.0,
    schedule: RateSchedule | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    **publisher_options: Any,
) -> PublishReport:
    """Publishes ``items`` in order at ``rate`` messages/s; returns the counts.

    ``client`` defaults to a ``google.cloud.pubsub_v1.PublisherClient`` (which honours
    ``PUBSUB_EMULATOR_HOST``); tests pass a fake with ``publish(topic, data, **attrs) -> future``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    own_client = client is None
    if own_client:
        client = publisher_client()
    report = PublishReport(rate_target=rate)
    schedule = schedule or RateSchedule(rate)
    publisher = Publisher(client, project, report, **publisher_options)
    deltas: dict[str, timedelta] = {}
    started = time.perf_counter()
    last_progress = started
    n = 0
    try:
        for item in items:
            if limit is not None and n >= limit:
                break
            schedule.wait()
            message = prepare(item, now(), fmt, deltas, current_times)
            report.unparsed += item.record is None
            publisher.send(message)
            n += 1
            if progress and time.perf_counter() - last_progress >= progress_every_s:
                last_progress = time.perf_counter()
                elapsed = last_progress - started
                progress(
                    f"published {report.published:,} of {n:,} sent in {elapsed:.1f} s "
                    f"({n / elapsed:.1f} msg/s, target {rate:g}); failed {report.failed}"
                )
    finally:
        publisher.settle()
        report.wall_seconds = time.perf_counter() - started
        report.rebases = schedule.rebases
        if own_client:
            client.stop()
    return report


def publish_records(
    items: Iterable[tuple[str, Contract | bytes]],
    rate: float,
    *,
    project: str = DEFAULT_PROJECT,
    fmt: str = "json",
    client: Any = None,
    current_times: bool = True,
    **options: Any,
) -> PublishReport:
    """Publishes ``(topic, record)`` pairs in the order given at ``rate`` messages/s.

    With ``current_times`` each record is shifted so its event time is its publish time. A
    ``bytes`` item is published as it is (a malformed message). The report's ``publish_times``
    maps each event id to the wall time (epoch s) it was published; ``options`` go to
    ``publish_outgoing`` (``limit``, ``progress``, ``schedule``, ``batch_size``, ...).
    """

    def outgoing() -> Iterator[Outgoing]:
        last = float("-inf")
        for i, (topic, item) in enumerate(items, start=1):
            if topic not in TOPICS:
                raise ValueError(f"unknown topic {topic!r}; known: {sorted(TOPICS)}")
            if isinstance(item, bytes | bytearray):
                yield Outgoing(topic, bytes(item), None, last, i)
                continue
            last = item.event_timestamp().timestamp()
            yield Outgoing(topic, b"", item, last, i)

    return publish_outgoing(
        outgoing(),
        rate,
        project=project,
        fmt=fmt,
        client=client,
        current_times=current_times,
        **options,
    )


def publisher_client():
    """A PublisherClient for the emulator (``PUBSUB_EMULATOR_HOST``) or real Pub/Sub; raises
    PublishError saying what to do when neither is reachable."""
    try:
        check_pubsub_target()
    except EmulatorError as err:
        raise PublishError(str(err)) from err
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005)
    )


def check_topics(project: str, topics: Iterable[str], client: Any) -> None:
    """Every topic exists; raises PublishError naming the missing ones and what to run."""
    from google.api_core.exceptions import NotFound

    missing = []
    for topic in topics:
        try:
            client.get_topic(topic=topic_path(project, topic), timeout=10)
        except NotFound:
            missing.append(topic)
    if missing:
        raise PublishError(
            f"topics {missing} do not exist in project {project}: create them with "
            f"`defi-risk emulator start --project {project}`"
        )


def publish_files(
    input_dir: str | Path,
    rate: float,
    *,
    project: str = DEFAULT_PROJECT,
    topics: Sequence[str] | None = None,
    limit: int | None = None,
    fmt: str = "json",
    client: Any = None,
    progress: Callable[[str], None] | None = None,
) -> PublishReport:
    """``defi-risk publish``: the topic files of ``input_dir`` merged in event-time order."""
    items, found = merged_topic_files(input_dir, topics)
    own_client = client is None
    if own_client:
        client = publisher_client()
    try:
        check_topics(project, found, client)
        if progress:
            progress(
                f"publishing {', '.join(found)} from {input_dir} to project {project} at "
                f"{rate:g} msg/s ({fmt}){f', at most {limit:,}' if limit else ''}"
            )
        return publish_outgoing(
            items, rate, project=project, fmt=fmt, client=client, limit=limit, progress=progress
        )
    finally:
        if own_client:
            client.stop()


# -------------------------------------------------------------------------------------- CLI
def publish_command(args) -> int:
    topics = [t.strip() for t in args.topics.split(",") if t.strip()] if args.topics else None
    try:
        report = publish_files(
            args.input_dir,
            args.rate,
            project=args.project,
            topics=topics,
            limit=args.limit,
            fmt=args.format,
            progress=lambda msg: print(f"  {msg}", flush=True),
        )
    except PublishError as err:
        print(f"defi-risk publish: {err}", file=sys.stderr)
        return 2
    print_publish_report(report)
    return 0 if report.failed == 0 else 1


def print_publish_report(report: PublishReport) -> None:
    print(
        f"published {report.published:,} messages in {report.wall_seconds:.1f} s "
        f"({report.rate_achieved:.1f} msg/s achieved, target {report.rate_target:g}); "
        f"{report.failed} failed, {report.retries} retried, {report.unparsed} bad lines passed "
        "through as they are"
    )
    for topic, n in sorted(report.by_topic.items()):
        print(f"  {topic:<20} {n:>9,}")
    if report.rebases:
        print(f"  fell behind the schedule {report.rebases} times (rebased, no burst)")
    failures = Counter(error for _, _, error in report.failures)
    for error, n in failures.most_common(5):
        print(f"  FAILED {n:>6,}: {error}")
