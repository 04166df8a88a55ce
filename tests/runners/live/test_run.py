"""The live Pub/Sub path (runners/live/run.py): graph checks offline, and end to end on the real
emulator.

    pytest -q tests/runners/live/test_run.py                 # everything; the e2e test is marked pubsub
    pytest -q tests/runners/live/test_run.py -m "not pubsub"  # offline only
    pytest -q tests/runners/live/test_run.py -m pubsub -rA    # the end-to-end run (~30 s)

The end-to-end test starts the emulator, runs ``defi-risk run risk --source pubsub --streaming``
in a subprocess, publishes Chainlink and Pyth prices for every registry asset plus settlements
and malformed messages with current event times, and checks the composite prices, the dead
letters, the books (published = parsed + dead letters) and a margin alert pulled as Avro from
``alerts.margin.v1``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub
from apache_beam.pipeline import PipelineVisitor
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines.graph import is_table
from runners.cli import main as cli_main
from runners.direct import local_pipeline_options
from runners.io.files import AppendJsonLines
from runners.io.pubsub import alert_message, is_local_direct_runner
from runners.live.emulator import free_host_port, provision
from runners.live.journal import Entry
from runners.live.publish import publish_records
from runners.live.run import _BatchedPull, build_live, live_options, local_pull, wait_or_cancel
from schemas.events import MarginAlert
from schemas.registry import ALERT_TOPICS, INPUT_TOPICS
from schemas.serde import from_avro
from schemas.topics import rfc3339, subscription_path
from tests.support.factories import settlement
from tests.support.live_scenario import ETH_AFTER_DROP, USD, LiveRun, oracle_scenario
from transforms.prices.oracles import load_registry

PROJECT = "defi-risk-live-test"


# ------------------------------------------------------------------------------ graph, offline
class Steps(PipelineVisitor):
    """Top-level (full label -> transform) of every applied transform."""

    def __init__(self):
        self.by_label = {}

    def visit_transform(self, node):
        self.by_label[node.full_label] = node.transform

    def enter_composite_transform(self, node):
        self.by_label[node.full_label] = node.transform


def build_offline(pipeline: str, runner_args: tuple[str, ...] = (), out: str = "/tmp/unused"):
    """The live graph, built but never run; ``runner_args`` only reach ``build_live``'s options
    (a Pipeline on DataflowRunner validates GCP options and looks up credentials)."""
    local = live_options(pipeline, PROJECT)
    options = live_options(pipeline, PROJECT, list(runner_args)) if runner_args else local
    p = beam.Pipeline(options=local)
    outputs = build_live(p, options, PROJECT, out)
    steps = Steps()
    p.visit(steps)
    return p, outputs, steps.by_label


def pubsub_reads(p) -> dict[str, beam_runner_api_pb2.PubSubReadPayload]:
    proto = p.to_runner_api()
    return {
        t.unique_name: beam_runner_api_pb2.PubSubReadPayload.FromString(t.spec.payload)
        for t in proto.components.transforms.values()
        if t.spec.urn == "beam:transform:pubsub_read:v1"
    }


def test_the_risk_graph_reads_each_input_topic_from_its_subscription_with_event_times():
    p, outputs, steps = build_offline("risk")
    reads = pubsub_reads(p)
    assert set(reads) == {
        "ReadPubSub_market.prices.v1/Read",
        "ReadPubSub_settlements.v1/Read",
    }
    for topic in ("market.prices.v1", "settlements.v1"):
        payload = reads[f"ReadPubSub_{topic}/Read"]
        assert payload.subscription == f"projects/{PROJECT}/subscriptions/{topic}.sub"
        assert payload.timestamp_attribute == "ts"
        assert payload.id_attribute == ""  # the DirectRunner refuses id_label
        assert isinstance(steps[f"ReadPubSub_{topic}"], ReadFromPubSub)
    # the same graph as the file run: parse, validate, composite, VaR (and what stages add)
    for label in ("ParsePrices", "ParseSettlements", "ValidatePrices", "CompositePrices"):
        assert label in steps
    assert {"prices", "dead_letter", "portfolio_var"} <= set(outputs)


def test_id_label_is_set_off_the_local_runners():
    p, _, _ = build_offline(
        "risk", ("--runner=DataflowRunner", "--region=europe-west1", "--temp_location=gs://b/t")
    )
    reads = pubsub_reads(p)
    assert {r.id_attribute for r in reads.values()} == {"event_id"}
    assert {r.timestamp_attribute for r in reads.values()} == {"ts"}


def test_every_input_topic_is_read_in_the_all_pipeline():
    p, _, _ = build_offline("all")
    assert {name.split("/")[0] for name in pubsub_reads(p)} == {
        f"ReadPubSub_{t}" for t in INPUT_TOPICS
    }


def test_tables_go_to_jsonl_sinks_and_alerts_to_their_topic_and_jsonl():
    _, outputs, steps = build_offline("risk")
    tables = [name for name in outputs if is_table(name)]
    assert "dead_letter" in tables and "prices" in tables
    for table in tables:
        assert f"AppendTable_{table}" in steps
    for topic in INPUT_TOPICS:
        if f"parsed:{topic}" in outputs:
            assert f"AppendParsed_{topic}" in steps
    alerts = [t for t in ALERT_TOPICS if t in outputs]
    for topic in alerts:
        write = steps[f"WritePubSub_{topic}"]
        assert isinstance(write, WriteToPubSub)
        assert write.full_topic == f"projects/{PROJECT}/topics/{topic}"
        assert write.with_attributes is True
        assert f"ToAlertMessage_{topic}" in steps and f"AppendAlerts_{topic}" in steps
    assert "alerts.margin.v1" in outputs  # MonitorMargins is in the risk pipeline


def test_is_local_direct_runner():
    for runner in (
        "DirectRunner",
        "BundleBasedDirectRunner",
        "FnApiRunner",
        "SwitchingDirectRunner",
    ):
        assert is_local_direct_runner(local_pipeline_options(extra_args=[f"--runner={runner}"]))
    assert is_local_direct_runner(beam.options.pipeline_options.PipelineOptions([]))
    for runner in ("DataflowRunner", "FlinkRunner"):
        opts = beam.options.pipeline_options.PipelineOptions([f"--runner={runner}"])
        assert not is_local_direct_runner(opts)


def margin_alert() -> MarginAlert:
    return MarginAlert(
        alert_id="a1",
        account_id="acct",
        event_type="margin_call",
        zone="margin_call",
        previous_zone="healthy",
        health_score=Decimal("26.5"),
        collateral_usd=Decimal("19000"),
        borrow_usd=Decimal("15000"),
        price_status="ok",
        event_ts=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )


def test_an_alert_message_is_avro_with_ts_and_id_attributes():
    alert = margin_alert()
    message = alert_message(alert)
    assert isinstance(message, PubsubMessage)
    assert from_avro(MarginAlert, message.data) == alert
    assert message.attributes == {
        "ts": "2026-01-02T03:04:05.678000Z",
        "alert_id": "a1",
        "event_id": "a1",
    }


def test_append_json_lines_appends_whole_bundles(tmp_path):
    path = tmp_path / "tables" / "x.jsonl"
    for run in range(2):
        with beam.Pipeline(options=local_pipeline_options()) as p:
            _ = (
                p
                | beam.Create([f"r{run}-{i}" for i in range(5)])
                | beam.ParDo(AppendJsonLines(path, json.dumps))
            )
    assert sorted(json.loads(line) for line in path.read_text().splitlines()) == sorted(
        f"r{run}-{i}" for run in range(2) for i in range(5)
    )


# ------------------------------------------------------------------------- waiting, pulling
class FakeResult:
    def __init__(self, finish_after: float | None = None, error: Exception | None = None):
        self.finished = threading.Event()
        self.cancelled = False
        self.error = error
        if finish_after is not None:
            threading.Timer(finish_after, self.finished.set).start()

    def wait_until_finish(self, duration=None):
        if duration is not None:
            raise NotImplementedError("DirectRunner does not support duration argument.")
        self.finished.wait()
        if self.error:
            raise self.error
        return "DONE"

    def cancel(self):
        self.cancelled = True
        self.finished.set()


def test_wait_or_cancel_cancels_after_the_duration():
    result = FakeResult()
    started = time.monotonic()
    assert wait_or_cancel(result, 0.3, poll_s=0.05) == "CANCELLED"
    assert result.cancelled and 0.3 <= time.monotonic() - started < 2


def test_wait_or_cancel_returns_when_the_run_ends_and_raises_its_error():
    assert wait_or_cancel(FakeResult(finish_after=0.05), 5, poll_s=0.02) == "DONE"
    with pytest.raises(RuntimeError, match="boom"):
        wait_or_cancel(FakeResult(0.05, RuntimeError("boom")), 5, poll_s=0.02)


def test_wait_or_cancel_uses_a_runner_duration_when_it_has_one():
    class Timed:
        cancelled = False

        def wait_until_finish(self, duration=None):
            assert duration == 1500
            return "RUNNING"

        def cancel(self):
            self.cancelled = True

    result = Timed()
    assert wait_or_cancel(result, 1.5) == "CANCELLED" and result.cancelled


def test_local_pull_batches_and_bounds_the_wait_and_is_undone():
    from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator
    from google.api_core.exceptions import DeadlineExceeded
    from google.pubsub_v1.types import PullResponse

    original = vars(_PubSubReadEvaluator)["_get_subscriber_client"]
    finish = vars(_PubSubReadEvaluator)["finish_bundle"]
    for size in (250, 0):  # 0: Beam's batch and wait, still journaled and watermarked
        with local_pull(size, deadline_s=1.5) as batched:
            assert batched
            assert vars(_PubSubReadEvaluator)["_get_subscriber_client"] is not original
            assert vars(_PubSubReadEvaluator)["finish_bundle"] is not finish
        assert vars(_PubSubReadEvaluator)["_get_subscriber_client"] is original
        assert vars(_PubSubReadEvaluator)["finish_bundle"] is finish

    calls = []

    class Client:
        name = "inner"

        def pull(self, **kwargs):
            calls.append(kwargs)
            if len(calls) == 2:
                raise DeadlineExceeded("idle")
            return PullResponse()

    proxy = _BatchedPull(Client(), 250, 1.5)
    assert proxy.pull(subscription="s", max_messages=10, timeout=30) == PullResponse()
    assert calls[0] == {"subscription": "s", "max_messages": 250, "timeout": 1.5}
    assert len(proxy.pull(subscription="s", max_messages=10, timeout=30).received_messages) == 0
    assert proxy.name == "inner"


def received(i: int, ts: str, data: bytes = b"x"):
    from google.pubsub_v1.types import PubsubMessage as Message
    from google.pubsub_v1.types import ReceivedMessage

    return ReceivedMessage(
        ack_id=f"ack-{i}", message=Message(data=data, message_id=f"m{i}", attributes={"ts": ts})
    )


class FakeSubscriber:
    """Answers each pull with the next list of received messages; records acks."""

    def __init__(self, batches):
        self.batches, self.acked = list(batches), []

    def pull(self, **kwargs):
        from google.pubsub_v1.types import PullResponse

        return PullResponse(received_messages=self.batches.pop(0) if self.batches else [])

    def acknowledge(self, subscription, ack_ids):
        self.acked += ack_ids


def test_each_pull_is_journaled_before_beam_acks_and_redeliveries_are_dropped(tmp_path):
    from apache_beam.utils.timestamp import Timestamp

    from runners.live.journal import Journal, read_entries

    sub = subscription_path(PROJECT, "market.prices.v1")
    journal = Journal(tmp_path / "journal", ("market.prices.v1",))
    ts = "2025-01-06T00:00:00Z"
    client = FakeSubscriber([[received(1, ts, b"a"), received(2, ts, b"b")],
                             [received(2, ts, b"b"), received(3, ts, b"c")]])  # fmt: skip
    proxy = _BatchedPull(client, 2, 1.0, journal, {sub: "market.prices.v1"})
    first = proxy.pull(subscription=sub)
    assert [rm.message.data for rm in first.received_messages] == [b"a", b"b"]
    assert [e.data for e in read_entries(journal.path("market.prices.v1"))] == [b"a", b"b"]
    assert client.acked == []  # Beam acknowledges what the pull returns, after this
    second = proxy.pull(subscription=sub)  # m2 again: journaled, so acked here and dropped
    assert [rm.message.data for rm in second.received_messages] == [b"c"]
    assert client.acked == ["ack-2"]
    assert [e.message_id for e in read_entries(journal.path("market.prices.v1"))] == ["m1", "m2", "m3"]  # fmt: skip
    # a full pull of nothing but redeliveries: all acked and dropped, and it still counts as a
    # full pull for the watermark (the backlog drains on)
    client.batches.append([received(1, ts, b"a"), received(3, ts, b"c")])
    assert proxy.pull(subscription=sub).received_messages == []
    assert client.acked == ["ack-2", "ack-1", "ack-3"]
    assert proxy.watermark() == Timestamp.from_rfc3339(ts)
    # a torn last line (a kill mid-write) is cut when the journal is opened again
    with journal.path("market.prices.v1").open("a") as f:
        f.write('{"id": "m4", "ts": "2025')
    again = Journal(tmp_path / "journal", ("market.prices.v1",))
    assert again.replayed() == {"market.prices.v1": 3}
    assert again.last_ts("market.prices.v1") == ts


def test_the_read_watermark_follows_a_draining_backlog_and_holds_after_a_restart(tmp_path):
    from apache_beam.utils.timestamp import Timestamp

    from runners.live.journal import Journal

    sub = subscription_path(PROJECT, "market.prices.v1")
    old = [f"2025-01-06T00:00:0{i}Z" for i in range(4)]
    full = [[received(1, old[2]), received(2, old[1])], [received(3, old[3])]]
    proxy = _BatchedPull(FakeSubscriber(full), 2, 1.0)
    proxy.pull(subscription=sub)  # a full batch: the backlog goes on; its oldest time
    assert proxy.watermark() == Timestamp.from_rfc3339(old[1])
    before = Timestamp.now()
    proxy.pull(subscription=sub)  # caught up: the wall clock
    assert proxy.watermark() >= before
    # a restart holds every subscription 30 s behind the latest journaled event time
    journal = Journal(tmp_path / "journal", ("market.prices.v1", "settlements.v1"))
    journal.record("market.prices.v1", [Entry("m9", old[3], b"x")])
    restarted = Journal(tmp_path / "journal", ("market.prices.v1", "settlements.v1"))
    proxy = _BatchedPull(FakeSubscriber([]), 2, 1.0, restarted,
                         {subscription_path(PROJECT, "settlements.v1"): "settlements.v1"})  # fmt: skip
    proxy.pull(subscription=subscription_path(PROJECT, "settlements.v1"))
    assert proxy.watermark() == Timestamp.from_rfc3339(old[3]) - 30


# ------------------------------------------------------------------------------------- CLI
def test_run_cli_errors_say_what_to_do(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    assert cli_main(["run", "risk", "--source", "pubsub", "--output-dir", out]) == 2
    assert "add --streaming" in capsys.readouterr().err
    assert cli_main(["run", "risk", "--output-dir", out]) == 2
    assert "--input-dir is required" in capsys.readouterr().err
    assert cli_main(["run", "risk", "--input-dir", out, "--output-dir", out, "--streaming"]) == 2
    assert "--replay stream" in capsys.readouterr().err
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", free_host_port())
    args = ["run", "risk", "--source", "pubsub", "--streaming", "--output-dir", out]
    assert cli_main(args) == 2
    assert "defi-risk emulator start" in capsys.readouterr().err


# ------------------------------------------------------------------------ end to end, emulator
@pytest.mark.pubsub
def test_live_risk_pipeline_on_the_emulator(pubsub_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    provision(PROJECT, emulator_host=pubsub_emulator.host)
    out = tmp_path / "live"
    run = LiveRun(pubsub_emulator.host, PROJECT, out, 15, ["--price_window_seconds=1"])
    try:
        assert run.started.wait(60), run.output()

        # 12 s of scenario time (124 messages) at 25 msg/s: 5 s of wall time, so several 1-s
        # windows close; well below what the local run keeps up with on 2 busy cores.
        start = datetime.now(UTC)
        prices = oracle_scenario(start, seconds=12, drop_at=4)
        deposit = settlement(
            "live-d", "acct-live", "deposit", "ETH", "10", start + timedelta(seconds=1)
        )
        borrow = settlement("live-b", "acct-live", "borrow", "USDC", "15000",
                            start + timedelta(seconds=2), decimals=6)  # fmt: skip
        bad_price = b'{"event_id":"bad-price","asset":"ETH","source":"pyth","pri'  # truncated
        bad_settlement = json.dumps({"event_id": "bad-settlement", "kind": "deposit"}).encode()
        items = prices[:20] + [("settlements.v1", deposit), ("market.prices.v1", bad_price)]
        items += prices[20:30] + [("settlements.v1", borrow), ("settlements.v1", bad_settlement)]
        items += prices[30:]
        report = publish_records(items, 25.0, project=PROJECT)
        assert report.failed == 0 and report.published == len(items)
        assert run.proc.wait(60) == 0, run.output()
    finally:
        run.stop()

    # composite prices for every registry asset
    rows = [json.loads(line) for line in (out / "tables" / "prices.jsonl").read_text().splitlines()]
    priced = {r["asset"] for r in rows if r["price"] is not None and r["status"] == "ok"}
    assert priced == {feed.asset for feed in load_registry().feeds}, rows
    eth = [Decimal(r["price"]) for r in rows if r["asset"] == "ETH" and r["status"] == "ok"]
    assert Decimal(USD["ETH"]) in eth and Decimal(ETH_AFTER_DROP) in eth

    # each malformed message is a dead letter of its parser
    dead = [
        json.loads(line) for line in (out / "tables" / "dead_letter.jsonl").read_text().splitlines()
    ]
    parse_dead = Counter(d["source"] for d in dead if d["stage"].startswith("Parse"))
    assert {
        (d["source"], d["stage"], d["error_reason"]) for d in dead if d["stage"].startswith("Parse")
    } == {
        ("market.prices.v1", "ParsePrices", "invalid_json"),
        ("settlements.v1", "ParseSettlements", "missing_field"),
    }
    # The local watermark is the wall clock at each pull: a price still in flight when a pull
    # crosses its 1-s window's end arrives late. Rare; counted as a dead letter, never dropped.
    late = [d for d in dead if d["error_reason"] == "late_update"]
    assert len(late) <= len(prices) // 10, late

    # the books: published = parsed + parse dead letters, per topic
    for topic in ("market.prices.v1", "settlements.v1"):
        parsed = (out / "parsed" / f"{topic}.jsonl").read_text().splitlines()
        assert report.by_topic[topic] == len(parsed) + parse_dead[topic], topic
        assert len({json.loads(p)["event_id"] for p in parsed}) == len(parsed)
    live_report = json.loads((out / "live_report.json").read_text())
    assert live_report["state"] == "CANCELLED"
    assert live_report["read"] == report.by_topic

    # the margin call, as the Avro message on alerts.margin.v1 and in the alerts file
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    answer = subscriber.pull(
        subscription=subscription_path(PROJECT, "alerts.margin.v1"), max_messages=50, timeout=10
    )
    subscriber.close()
    alerts = [(from_avro(MarginAlert, m.message.data), m.message.attributes)
              for m in answer.received_messages]  # fmt: skip
    calls = [(a, attrs) for a, attrs in alerts if a.account_id == "acct-live"]
    assert [a.event_type for a, _ in calls] == ["margin_call"], alerts
    alert, attrs = calls[0]
    assert alert.borrow_usd == Decimal("15000") and alert.collateral_usd == Decimal("19000")
    assert attrs["ts"] == rfc3339(alert.event_ts) and attrs["alert_id"] == alert.alert_id
    written = (out / "alerts" / "alerts.margin.v1.jsonl").read_text().splitlines()
    assert [json.loads(line)["alert_id"] for line in written] == [alert.alert_id]
