"""The live path: the same graph as the file run, streaming from Pub/Sub on the local runner.

    defi-risk emulator start
    export PUBSUB_EMULATOR_HOST=localhost:8085
    defi-risk run risk --source pubsub --streaming --output-dir out/live [--duration-s 120]
    defi-risk publish --input-dir data/demo --rate 100          # in another shell

``build_live`` wires ``pipelines.graph.build`` (the graph every runner runs) between Pub/Sub
sources and streaming sinks; ``run_live`` runs it on the pinned streaming runner
(``runners.direct.local_pipeline_options(streaming=True)``, the BundleBasedDirectRunner).

Sources: one ``ReadFromPubSub`` per input topic of the pipeline, from the subscription
``projects/P/subscriptions/<topic>.sub`` (created by ``defi-risk emulator start``), with
``timestamp_attribute="ts"`` so elements carry their event time, after the replay of the run's
journal (below). ``id_label="event_id"`` is set only off the local runners: Beam's DirectRunner
raises NotImplementedError for it. Locally a copy of a message (same event id, another Pub/Sub
message) therefore reaches the graph, and is dropped there (``DropDuplicates`` after parsing;
CompositePrices and the margin stage for prices and settlements). ``local_pull`` replaces the
DirectRunner's pull (10 messages, a 30 s deadline) with ``--pull-max-messages`` (default 500)
and a ~0.25 s wait on an idle subscription, and its watermark (the wall clock at each pull) with
one that follows a draining backlog (``_BatchedPull.watermark``).

Restarts (``runners.live.journal``): every pulled message is journaled to
``OUTPUT_DIR/journal/<topic>.jsonl`` (fsynced) before Beam acknowledges it, and a redelivery of a
journaled message is acknowledged and dropped by its Pub/Sub message id. A run started into an
existing OUTPUT_DIR resumes it: nothing is deleted, the journal is replayed through the graph
first (so positions, zones, cooldowns and composite carries are rebuilt exactly), the read's
watermark is held behind the journal's last event time until unacknowledged messages come back,
and every sink skips the rows and alerts it already holds (by their deterministic ids).

Sinks, under OUTPUT_DIR (appended to, never replaced):

- ``tables/<table>.jsonl``: every table ``build()`` returns (``prices``, ``dead_letter``, ...),
  one ``schemas.serde.to_json`` line per row, appended by ``AppendJsonLines`` and flushed at the
  end of each bundle: a streaming-safe local sink. Production writes BigQuery;
- ``alerts/<topic>.jsonl`` and the alert topic itself: every alert is published with
  ``WriteToPubSub(topic=projects/P/topics/<topic>, with_attributes=True)`` as schemaless Avro
  (``schemas.serde.to_avro``) with attributes ``ts`` (RFC 3339 event time), ``alert_id`` and
  ``event_id`` (the same id, for a reader's ``id_label``), and appended as JSON too;
- ``parsed/<topic>.jsonl``: event id and event time of every record that parsed. The streaming
  runner's Beam counters were measured to keep only the first bundle's counts (see
  ``runners/local/run.py``), so the books (messages read = parsed + parse dead letters) are
  balanced from these files;
- ``journal/<topic>.jsonl``: every message read (above);
- ``live_report.json``: rows per file when the run ends.

``--duration-s S`` runs for S seconds then cancels; without it the run lasts until Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from pipelines.graph import build, is_table, topics_for
from pipelines.options import RiskPipelineOptions
from runners.direct import local_pipeline_options
from runners.io.files import AppendJsonLines, ids_in
from runners.io.pubsub import is_local_direct_runner, publish_alerts, read_topics
from runners.live.args import DEFAULT_PROJECT, DEFAULT_PULL_MAX_MESSAGES
from runners.live.emulator import EmulatorError, check_pubsub_target
from runners.live.journal import Entry, Journal, read_entries
from schemas.registry import ALERT_TOPICS, TABLES
from schemas.topics import ID_ATTRIBUTE, TIMESTAMP_ATTRIBUTE, rfc3339, subscription_path

log = logging.getLogger(__name__)


class LiveRunError(RuntimeError):
    """The live run cannot start; the message says what to do."""


def parsed_line(record) -> str:
    """What the accounting sink keeps of a parsed record: its id and event time."""
    return json.dumps(
        {"event_id": record.message_id(), "event_time": record.event_timestamp().isoformat()}
    )


class ReplayJournalFn(beam.DoFn):
    """(journal file, bytes to read) -> its messages' bodies at their event times: what a
    restart replays before it reads Pub/Sub on (``runners.live.journal``)."""

    def process(self, element):
        path, upto = element
        for entry in read_entries(Path(path), upto):
            yield TimestampedValue(entry.data, parse_ts(entry.ts))


def _sources(p, project, pipeline, id_label, journal: Journal | None) -> dict[str, PCollection]:
    """Each topic's Pub/Sub read, after the replay of its journal when there is one."""
    reads = read_topics(p, project, pipeline, id_label)
    if journal is None:
        return reads
    sources = {}
    for topic, read in reads.items():
        replay = (
            p
            | f"JournalOf_{topic}"
            >> beam.Create([(str(journal.path(topic)), journal.replay_bytes.get(topic, 0))])
            | f"ReplayJournal_{topic}" >> beam.ParDo(ReplayJournalFn())
        )
        sources[topic] = (replay, read) | f"Sources_{topic}" >> beam.Flatten()
    return sources


def build_live(
    p: beam.Pipeline,
    options: PipelineOptions,
    project: str,
    output_dir: str | Path,
    journal: Journal | None = None,
) -> dict[str, PCollection]:
    """Pub/Sub sources (after the replay of the ``journal``), the graph, and the live sinks;
    returns ``build()``'s PCollections. Every sink skips rows it already holds (by the row's id),
    so a restart that replays its journal writes each row once.

    Builds offline (no network): reading, writing and subscription checks happen at run time.
    """
    output_dir = Path(output_dir)
    pipeline = options.view_as(RiskPipelineOptions).pipeline
    id_label = None if is_local_direct_runner(options) else ID_ATTRIBUTE
    outputs = build(p, options, _sources(p, project, pipeline, id_label, journal))
    for name, pcoll in outputs.items():
        if name.startswith("parsed:"):
            topic = name.split(":", 1)[1]
            _ = pcoll | f"AppendParsed_{topic}" >> beam.ParDo(
                AppendJsonLines(output_dir / "parsed" / f"{topic}.jsonl", parsed_line, "event_id")
            )
        elif is_table(name):
            _ = pcoll | f"AppendTable_{name}" >> beam.ParDo(
                AppendJsonLines(output_dir / "tables" / f"{name}.jsonl", id_field=table_id(name))
            )
    for topic in ALERT_TOPICS:
        if topic not in outputs:
            continue
        alerts = outputs[topic] | f"NotYetAlerted_{topic}" >> beam.ParDo(
            NotYetWrittenFn(output_dir / "alerts" / f"{topic}.jsonl", "alert_id")
        )
        publish_alerts(alerts, project, topic)
        _ = alerts | f"AppendAlerts_{topic}" >> beam.ParDo(
            AppendJsonLines(output_dir / "alerts" / f"{topic}.jsonl")
        )
    return outputs


def table_id(table: str) -> str:
    """The deterministic id column of a table: its model's first field (``price_id``, ...)."""
    return next(iter(TABLES[table].model_fields))


class NotYetWrittenFn(beam.DoFn):
    """Passes the alerts whose id the alert file does not hold yet: a restart re-derives the
    alerts of its journal, and must neither publish nor write the ones already out."""

    def __init__(self, path: Path, id_field: str):
        self.path, self.id_field = str(path), id_field

    def setup(self):
        self._written = ids_in(Path(self.path), self.id_field)

    def process(self, alert):
        key = getattr(alert, self.id_field)
        if key not in self._written:
            self._written.add(key)
            yield alert


# ------------------------------------------------------------------- the local Pub/Sub read
# The emulator answers an empty pull about 1 s before the RPC deadline: 1.25 s waits ~0.25 s.
LOCAL_PULL_DEADLINE_S = 1.25


# A restarted run holds its read's watermark this far behind the last journaled event time
# until the ack deadline has passed: messages the killed run pulled but never journaled come back
# then, and must not be late.
RESTART_HOLD_S = 30.0
RESTART_HOLD_WALL_S = 15.0  # > the subscriptions' 10 s ack deadline


def message_ts(message) -> str:
    """The event time Beam's ReadFromPubSub gives ``message``: its ``ts`` attribute, else its
    publish time (RFC 3339)."""
    ts = message.attributes.get(TIMESTAMP_ATTRIBUTE) if message.attributes else None
    if ts:
        return ts
    return rfc3339(message.publish_time)


def parse_ts(ts: str) -> Timestamp:
    """``ts`` as Beam's ReadFromPubSub parses it: epoch milliseconds or RFC 3339."""
    try:
        return Timestamp(micros=int(ts) * 1000)
    except ValueError:
        return Timestamp.from_rfc3339(ts)


class _BatchedPull:
    """The SubscriberClient Beam's DirectRunner pulls with: ``max_messages`` per pull with a
    short deadline instead of Beam's 10 messages and 30 s deadline; with a ``journal``, each
    pull's new messages are journaled before Beam acknowledges them (``runners.live.journal``),
    and journaled redeliveries are acknowledged here and dropped.

    ``watermark()`` is the read's watermark after the latest pull (Beam's is the wall clock at
    each pull, which turns a backlog into late data): while pulls come back full (a backlog
    draining) it follows the oldest event time of the batch, once caught up the wall clock; a
    restarted run holds it behind the journal's last event time for ``RESTART_HOLD_WALL_S``.
    It never moves backwards.
    """

    def __init__(
        self,
        client: Any,
        max_messages: int,
        deadline_s: float,
        journal: Journal | None = None,
        topics_by_subscription: dict[str, str] | None = None,
    ):
        self._client, self._max, self._deadline = client, max_messages, deadline_s
        self._journal, self._by_sub = journal, topics_by_subscription or {}
        self._topic: str | None = None
        self._wm = MIN_TIMESTAMP
        self._hold: tuple[float, Timestamp] | None = None
        self._started = False

    def _start(self, subscription: str) -> None:
        self._started = True
        self._topic = self._by_sub.get(subscription)
        if self._journal is None or self._topic is None:
            self._journal = None  # a subscription the journal does not know: not journaled
            return
        # a restart: hold every subscription behind the latest event time journaled, whether
        # or not its own topic had messages yet (its backlog may be older than that)
        lasts = [parse_ts(ts) for ts in map(self._journal.last_ts, self._journal.topics) if ts]
        if lasts:
            self._hold = (time.monotonic() + RESTART_HOLD_WALL_S, max(lasts) - RESTART_HOLD_S)

    def pull(self, *, subscription, max_messages=None, timeout=None, **kwargs):
        from google.api_core.exceptions import DeadlineExceeded
        from google.pubsub_v1.types import PullResponse

        if not self._started:
            self._start(subscription)
        try:
            response = self._client.pull(
                subscription=subscription, max_messages=self._max, timeout=self._deadline, **kwargs
            )
        except DeadlineExceeded:  # nothing to read within the deadline
            response = PullResponse()
        received = list(response.received_messages)
        # the watermark reads the whole pull, redeliveries included: they say as much about the
        # backlog (and a pull of nothing but redeliveries is still a full one)
        self._advance(received, full=len(received) >= self._max)
        if self._journal is not None and received:
            fresh = self._journal.record(
                self._topic,
                [Entry(rm.message.message_id, message_ts(rm.message), rm.message.data)
                 for rm in received],
            )  # fmt: skip
            again = [rm.ack_id for rm, new in zip(received, fresh, strict=True) if not new]
            if again:  # journaled before a kill: already on its way through the graph
                self._client.acknowledge(subscription=subscription, ack_ids=again)
                kept = [rm for rm, new in zip(received, fresh, strict=True) if new]
                response = PullResponse(received_messages=kept)
        return response

    def _advance(self, received, full: bool) -> None:
        if full:
            candidate = min(parse_ts(message_ts(rm.message)) for rm in received)
        else:
            candidate = Timestamp.of(time.time())
        if self._hold is not None:
            until, hold = self._hold
            if time.monotonic() < until:
                candidate = min(candidate, hold)
            else:
                self._hold = None
        self._wm = max(self._wm, candidate)

    def watermark(self) -> Timestamp:
        return self._wm

    def __getattr__(self, name):
        return getattr(self._client, name)


@contextmanager
def local_pull(
    max_messages: int,
    deadline_s: float = LOCAL_PULL_DEADLINE_S,
    journal: Journal | None = None,
    project: str | None = None,
) -> Iterator[bool]:
    """While open, the DirectRunner's Pub/Sub read pulls through ``_BatchedPull``:
    ``max_messages`` per pull (0: Beam's 10, with its 30 s deadline), at most ``deadline_s`` of
    waiting on an idle subscription, messages journaled before they are acknowledged when a
    ``journal`` is given, and the read's watermark from ``_BatchedPull.watermark``. Yields whether
    the change is in place.

    Beam 2.77's ``_PubSubReadEvaluator`` pulls 10 messages with a 30 s deadline on the runner's
    single worker thread, so an idle subscription (settlements between two trades) stalls every
    other step for up to 30 s, and a backlog drains at about 100 messages/s. This swaps the
    client its private ``_get_subscriber_client`` returns, and sets the watermark hold its
    ``finish_bundle`` returns; a Beam without those keeps its own read (and no journal).
    """
    from apache_beam.runners.direct import transform_evaluator

    evaluator = getattr(transform_evaluator, "_PubSubReadEvaluator", None)
    original = vars(evaluator).get("_get_subscriber_client") if evaluator else None
    finish = vars(evaluator).get("finish_bundle") if evaluator else None
    if not isinstance(original, classmethod) or finish is None:
        log.warning("this Beam has no _PubSubReadEvaluator._get_subscriber_client: Beam's pull")
        yield False
        return
    by_sub = {}
    if project is not None and journal is not None:
        by_sub = {subscription_path(project, t): t for t in journal.topics}
    size, wait = (max_messages, deadline_s) if max_messages else (10, 30.0)  # 0: Beam's own
    clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one per read step
    clients_lock = threading.Lock()

    def batched(cls, transform):
        with clients_lock:
            client = clients.get(transform)
            if client is None:
                raw = original.__func__(cls, transform)
                client = clients[transform] = _BatchedPull(raw, size, wait, journal, by_sub)
            return client

    def finish_bundle(self):
        result = finish(self)
        client = self._get_subscriber_client(self._applied_ptransform)
        if isinstance(client, _BatchedPull):
            result.keyed_watermark_holds[None] = client.watermark()
        return result

    evaluator._get_subscriber_client = classmethod(batched)
    evaluator.finish_bundle = finish_bundle
    try:
        yield True
    finally:
        evaluator._get_subscriber_client = original
        evaluator.finish_bundle = finish


def live_options(
    pipeline: str, project: str, extra_args: list[str] | None = None
) -> PipelineOptions:
    return local_pipeline_options(
        streaming=True,
        extra_args=[f"--pipeline={pipeline}", f"--project={project}", *(extra_args or [])],
    )


def check_subscriptions(project: str, topics: tuple[str, ...]) -> None:
    """Every subscription the run reads exists; raises LiveRunError naming the missing ones."""
    from google.api_core.exceptions import NotFound
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    missing = []
    try:
        for topic in topics:
            try:
                subscriber.get_subscription(
                    subscription=subscription_path(project, topic), timeout=10
                )
            except NotFound:
                missing.append(subscription_path(project, topic))
    finally:
        subscriber.close()
    if missing:
        raise LiveRunError(
            f"missing subscriptions {missing}: create them with "
            f"`defi-risk emulator start --project {project}`"
        )


@dataclass
class LiveReport:
    pipeline: str
    project: str
    output_dir: str
    wall_seconds: float
    state: str  # how the run ended: CANCELLED (duration or Ctrl-C), DONE or FAILED
    subscriptions: list[str] = field(default_factory=list)
    parsed: dict[str, int] = field(default_factory=dict)  # topic -> records that parsed
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows
    alerts: dict[str, int] = field(default_factory=dict)  # alert topic -> alerts
    dead_letters: dict[str, int] = field(default_factory=dict)  # "source Stage.reason" -> n
    # Messages read per topic: parsed + parse dead letters (what the books balance on).
    read: dict[str, int] = field(default_factory=dict)


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def live_report_from_files(report: LiveReport, output_dir: Path, topics: tuple[str, ...]) -> None:
    for topic in topics:
        path = output_dir / "parsed" / f"{topic}.jsonl"
        report.parsed[topic] = _count_lines(path) if path.exists() else 0
    for path in sorted((output_dir / "tables").glob("*.jsonl")):
        report.tables[path.stem] = _count_lines(path)
    for path in sorted((output_dir / "alerts").glob("*.jsonl")):
        report.alerts[path.stem] = _count_lines(path)
    reasons: Counter[str] = Counter()
    parse_dead: Counter[str] = Counter()
    dead = output_dir / "tables" / "dead_letter.jsonl"
    if dead.exists():
        for line in dead.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            reasons[f"{row['source']} {row['stage']}.{row['error_reason']}"] += 1
            if row["stage"].startswith("Parse"):
                parse_dead[row["source"]] += 1
    report.dead_letters = dict(sorted(reasons.items()))
    report.read = {t: report.parsed[t] + parse_dead.get(t, 0) for t in topics}


def wait_or_cancel(result, duration_s: float | None, poll_s: float = 0.5) -> str:
    """Waits for the run; after ``duration_s`` (or on Ctrl-C) cancels it. Returns the end state.

    Tries ``wait_until_finish(duration=ms)`` first; Beam's DirectRunner refuses a duration
    (NotImplementedError), so there the wait runs in a thread and the main thread keeps the clock.
    An error of the pipeline is raised here.
    """
    if duration_s is not None:
        try:
            state = result.wait_until_finish(duration=int(duration_s * 1000))
        except NotImplementedError:
            pass
        else:
            if not str(state).endswith("DONE") and not str(state).endswith("FAILED"):
                result.cancel()
                return "CANCELLED"
            return str(state)
    errors: list[BaseException] = []
    done = threading.Event()

    def waiter():
        try:
            result.wait_until_finish()
        except BaseException as err:  # reraised in the main thread
            errors.append(err)
        finally:
            done.set()

    threading.Thread(target=waiter, name="LiveRunWaiter", daemon=True).start()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not done.wait(poll_s):
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        log.warning("Ctrl-C: cancelling the live run")
    if done.is_set():
        if errors:
            raise errors[0]
        return "DONE"
    result.cancel()
    return "CANCELLED"


def run_live(
    pipeline: str = "risk",
    project: str = DEFAULT_PROJECT,
    output_dir: str | Path = "out/live",
    duration_s: float | None = None,
    extra_args: list[str] | None = None,
    say: Callable[[str], None] = lambda msg: print(msg, flush=True),
    pull_max_messages: int = DEFAULT_PULL_MAX_MESSAGES,
) -> LiveReport:
    """Runs ``pipeline`` on Pub/Sub until ``duration_s`` passes or Ctrl-C; returns the report.

    Raises LiveRunError (with what to do) when Pub/Sub is not reachable, a subscription is
    missing or the runner is not a local one. ``pull_max_messages``: see ``local_pull``.
    """
    output_dir = Path(output_dir)
    options = live_options(pipeline, project, extra_args)
    if not is_local_direct_runner(options):
        raise LiveRunError(
            "--source pubsub runs on the local streaming runner; its sinks are local files. "
            "Dataflow deployment (BigQuery sinks) is issue 8"
        )
    try:
        host = check_pubsub_target()
    except EmulatorError as err:
        raise LiveRunError(str(err)) from err
    topics = topics_for(options.view_as(RiskPipelineOptions).pipeline)
    check_subscriptions(project, topics)
    # Never deletes: a run into an existing OUTPUT_DIR resumes it (replays its journal, appends).
    for sub in ("tables", "alerts", "parsed"):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)
    (output_dir / "live_report.json").unlink(missing_ok=True)
    journal = Journal(output_dir / "journal", topics)
    replayed = journal.replayed()

    p = beam.Pipeline(options=options)
    build_live(p, options, project, output_dir, journal)
    subscriptions = [subscription_path(project, t) for t in topics]
    say(
        f"live pipeline '{pipeline}' on {'the emulator at ' + host if host else 'Pub/Sub'}, "
        f"project {project}, runner {options.view_as(StandardOptions).runner}"
    )
    for s in subscriptions:
        say(f"  reading {s}")
    say(f"  tables -> {output_dir / 'tables'}/<table>.jsonl")
    say(
        f"  alerts -> projects/{project}/topics/<alert topic> and {output_dir / 'alerts'}/<topic>.jsonl"
    )
    say(f"  parsed ids -> {output_dir / 'parsed'}/<topic>.jsonl")
    say(f"  journal -> {journal.dir}/<topic>.jsonl (every message before it is acknowledged)")
    if any(replayed.values()):
        say(
            f"  resuming {output_dir}: replaying {sum(replayed.values()):,} journaled messages "
            "first (rows already written are not written again)"
        )
    say(f"  running {'for ' + format(duration_s, 'g') + ' s' if duration_s else 'until Ctrl-C'}")
    started = time.perf_counter()
    state = "FAILED"
    try:
        with local_pull(pull_max_messages, journal=journal, project=project) as batched:
            say(
                f"  local read: {pull_max_messages} messages per pull, idle wait "
                f"~{LOCAL_PULL_DEADLINE_S - 1:g} s"
                if batched
                else "  local read: Beam's pull (10 messages, up to 30 s on an idle subscription)"
            )
            result = p.run()
            say(f"  started: reading {len(subscriptions)} subscriptions")
            state = wait_or_cancel(result, duration_s)
    finally:
        report = LiveReport(
            pipeline, project, str(output_dir), time.perf_counter() - started, state, subscriptions
        )
        live_report_from_files(report, output_dir, topics)
        (output_dir / "live_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def print_live_report(report: LiveReport, say: Callable[[str], None] = print) -> None:
    say(
        f"live run '{report.pipeline}' {report.state} after {report.wall_seconds:.1f} s "
        f"-> {report.output_dir}"
    )
    say("  messages read = parsed + parse dead letters, per topic:")
    for topic, n in report.read.items():
        say(
            f"    {topic:<20} {n:>9,} = {report.parsed[topic]:>9,} + {n - report.parsed[topic]:>5,}"
        )
    for kind, counts in (("table", report.tables), ("alerts", report.alerts)):
        for name, n in counts.items():
            say(f"  {kind} {name:<28} {n:>9,} rows")
    for reason, n in report.dead_letters.items():
        say(f"  dead letter {reason:<48} {n:>7,}")


def live_command(args) -> int:
    """``defi-risk run PIPELINE --source pubsub --streaming --output-dir OUT``."""
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
