"""``defi-risk publish`` (runners/live/publish.py) with a fake Pub/Sub client: no emulator needed.

    pytest -q tests/runners/live/test_publish.py

Covers the event-time merge of generated files, the shift to current event times, bad lines
passed through byte for byte, the deadline rate schedule, and retries that end up counted.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from runners.cli import main as cli_main
from runners.live.emulator import free_host_port
from runners.live.publish import (
    PublishError,
    RateSchedule,
    merged_topic_files,
    publish_records,
    shift_times,
    to_current_time,
)
from runners.synthetic import generate
from schemas.events import PriceEvent
from schemas.registry import INPUT_TOPICS, TOPICS
from schemas.serde import from_avro, from_json
from schemas.topics import rfc3339
from tests.support.factories import settlement

T0 = datetime(2025, 1, 6, 12, tzinfo=UTC)


class FakeFuture:
    def __init__(self, error: Exception | None = None):
        self.error = error

    def result(self, timeout=None):
        if self.error is not None:
            raise self.error
        return "message-id"


class FakeClient:
    """Records every publish; ``fail(event_id, attempt)`` may return an error for the future."""

    def __init__(self, fail=lambda event_id, attempt: None):
        self.sent: list[tuple[str, bytes, dict]] = []
        self.attempts: Counter[str] = Counter()
        self.fail = fail
        self.stopped = False

    def publish(self, topic, data, **attributes):
        event_id = attributes["event_id"]
        self.attempts[event_id] += 1
        self.sent.append((topic, data, attributes))
        return FakeFuture(self.fail(event_id, self.attempts[event_id]))

    def stop(self):
        self.stopped = True


class FakeTime:
    """A monotonic clock whose sleep advances it, and a wall clock tied to it."""

    def __init__(self):
        self.t = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.t += seconds

    def now(self) -> datetime:
        return T0 + timedelta(days=400, seconds=self.t)


def no_wait_schedule(fake: FakeTime) -> RateSchedule:
    return RateSchedule(1_000.0, clock=fake.clock, sleep=fake.sleep)


def price(event_id: str, when: datetime, value: str = "3000") -> PriceEvent:
    return PriceEvent(
        event_id=event_id,
        asset="ETH",
        source="chainlink",
        price=Decimal(value),
        publish_time=when,
        started_at=when - timedelta(seconds=5),
        observed_at=when + timedelta(seconds=2),
        feed_id="0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419",
        round_id="7",
        answered_in_round="7",
    )


# ----------------------------------------------------------------------------- event times
def test_shift_moves_every_datetime_field_by_one_delta():
    event = price("p1", T0)
    now = datetime(2026, 11, 22, 5, 0, 0, 123456, tzinfo=UTC)
    shifted, delta = to_current_time(event, now)
    assert shifted.publish_time == now  # the event-time field is the publish wall time
    assert shifted.started_at == now - timedelta(seconds=5)  # distances inside the event kept
    assert shifted.observed_at == now + timedelta(seconds=2)
    assert delta == now - T0
    same = {k: v for k, v in shifted.model_dump().items() if not isinstance(v, datetime)}
    assert same == {k: v for k, v in event.model_dump().items() if not isinstance(v, datetime)}
    assert shift_times(shifted, -delta) == event


# --------------------------------------------------------------------- generated topic files
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    generate(out, days=1, accounts=5, seed=3)
    return out


@pytest.fixture(scope="module")
def published(generated):
    """Every line of the generated files through publish_outgoing with a fake client and clock."""
    from runners.live.publish import publish_outgoing

    fake = FakeTime()
    client = FakeClient()
    items, topics = merged_topic_files(generated)
    report = publish_outgoing(
        items,
        1_000.0,
        project="p-test",
        client=client,
        schedule=no_wait_schedule(fake),
        now=fake.now,
    )
    return generated, topics, client, report, fake


def test_every_line_is_published_once_in_event_time_order(published):
    generated, topics, client, report, fake = published
    assert topics == list(INPUT_TOPICS)
    lines = {t: (generated / f"{t}.jsonl").read_bytes().splitlines() for t in topics}
    assert report.published == sum(len(v) for v in lines.values()) == len(client.sent)
    assert report.failed == 0 and report.by_topic == {t: len(v) for t, v in lines.items()}
    assert all(topic.startswith("projects/p-test/topics/") for topic, _, _ in client.sent)
    # The original event times of the valid lines, in publishing order, never go backwards.
    original = {}
    for t, raw_lines in lines.items():
        for raw in raw_lines:
            try:
                record = TOPICS[t].model_validate_json(raw)
            except ValueError:
                continue
            original.setdefault(record.message_id(), record.event_timestamp())
    order = [original[a["event_id"]] for _, _, a in client.sent if a["event_id"] in original]
    assert order == sorted(order)
    # 1,000 msg/s on the fake clock: the last message was due (n - 1) / 1000 s after the first
    assert fake.t == pytest.approx((report.published - 1) / 1_000.0)


def test_valid_events_carry_their_publish_time_and_bad_lines_go_out_as_they_are(published):
    generated, _, client, report, _ = published
    truth = json.loads((generated / "ground_truth.json").read_text())
    by_topic: dict[str, list[tuple[bytes, dict]]] = {}
    for topic, data, attrs in client.sent:
        by_topic.setdefault(topic.rsplit("/", 1)[1], []).append((data, attrs))
    n_bad = 0
    for topic, bad_lines in truth["bad_record_lines"].items():
        raw_lines = (generated / f"{topic}.jsonl").read_bytes().splitlines()
        sent = {data for data, _ in by_topic[topic]}
        for line_no, _reason in bad_lines:
            raw = raw_lines[line_no - 1]
            try:
                TOPICS[topic].model_validate_json(raw)
            except ValueError:
                assert raw in sent, (topic, line_no)  # byte for byte
                n_bad += 1
    assert report.unparsed == n_bad > 0
    # a valid message: its ts attribute and event-time field are the same, current, time
    checked = 0
    for topic, messages in by_topic.items():
        for data, attrs in messages[:50]:
            try:
                record = from_json(TOPICS[topic], data)
            except ValueError:
                continue  # a bad line
            checked += 1
            assert attrs["ts"] == rfc3339(record.event_timestamp())
            # A profile has no event_id: its id hashes its original (unshifted) time.
            own = getattr(record, "event_id", None)
            assert attrs["event_id"] == own if own else len(attrs["event_id"]) == 32
            assert record.event_timestamp() > T0 + timedelta(days=399)
    assert checked > 100


def test_a_redelivered_line_keeps_the_shift_of_its_first_copy(published):
    generated, _, client, _, _ = published
    truth = json.loads((generated / "ground_truth.json").read_text())
    raw_lines = (generated / "market.prices.v1.jsonl").read_bytes().splitlines()
    duplicated = [
        json.loads(raw_lines[n - 1])["event_id"]
        for n, reason in truth["rejected_update_lines"]["market.prices.v1"]
        if reason == "duplicate_update"
    ]
    assert duplicated
    for event_id in duplicated:
        copies = [data for _, data, attrs in client.sent if attrs["event_id"] == event_id]
        assert len(copies) == 2 and copies[0] == copies[1]  # still the same message


# ---------------------------------------------------------------------------- rate schedule
def test_the_deadline_schedule_does_not_drift_when_sending_takes_time():
    fake = FakeTime()
    schedule = RateSchedule(100.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(1_000):
        schedule.wait()
        fake.t += 0.003  # each publish call costs 3 ms
    # message 999 was due at 9.99 s; sleeping 10 ms per message would have taken 13 s
    assert fake.t == pytest.approx(9.99 + 0.003)
    assert schedule.rebases == 0


def test_after_a_stall_the_schedule_rebases_instead_of_bursting():
    fake = FakeTime()
    schedule = RateSchedule(10.0, clock=fake.clock, sleep=fake.sleep, max_lag_s=1.0)
    dues = []
    for i in range(30):
        if i == 10:
            fake.t += 5.0  # the publisher was stuck for 5 s
        dues.append(schedule.wait())
    assert schedule.rebases == 1
    gaps = [b - a for a, b in zip(dues[10:], dues[11:], strict=False)]
    assert gaps == pytest.approx([0.1] * len(gaps))  # back to 10/s at once, no catch-up burst


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateSchedule(0)


# -------------------------------------------------------------------------------- failures
def test_failed_publishes_are_retried_then_counted_never_dropped():
    fake = FakeTime()
    records = [("market.prices.v1", price(f"p{i}", T0 + timedelta(seconds=i))) for i in range(20)]

    def fail(event_id, attempt):
        if event_id == "p3":
            return RuntimeError("always refused")
        if event_id == "p7" and attempt == 1:
            return TimeoutError("lost ack")
        return None

    client = FakeClient(fail)
    report = publish_records(
        records,
        100.0,
        client=client,
        schedule=RateSchedule(100.0, clock=fake.clock, sleep=fake.sleep),
        now=fake.now,
        sleep=fake.sleep,
        max_retries=3,
        batch_size=8,
    )
    assert report.published == 19 and report.failed == 1
    assert report.failures == [("market.prices.v1", "p3", "RuntimeError: always refused")]
    assert client.attempts["p3"] == 4 and client.attempts["p7"] == 2
    assert report.retries == 3 + 1
    assert report.attempted == len(records)


def test_publish_records_keeps_each_publish_wall_time_and_avro_bodies():
    fake = FakeTime()
    client = FakeClient()
    walls = iter(range(1_000, 2_000))
    records = [("market.prices.v1", price(f"p{i}", T0 + timedelta(seconds=i))) for i in range(3)]
    records.append(("settlements.v1", settlement("s1", "acct", "deposit", "ETH", "1", T0)))
    records.append(("settlements.v1", b'{"event_id": "broken", "kind": "deposit"}'))
    report = publish_records(
        records,
        50.0,
        fmt="avro",
        client=client,
        schedule=RateSchedule(50.0, clock=fake.clock, sleep=fake.sleep),
        now=fake.now,
        wall_clock=lambda: float(next(walls)),
    )
    assert report.publish_times == {"p0": 1000.0, "p1": 1001.0, "p2": 1002.0, "s1": 1003.0,
                                    "broken": 1004.0}  # fmt: skip
    for (topic, data, attrs), (short, item) in zip(client.sent, records, strict=True):
        assert topic == f"projects/defi-risk-local/topics/{short}"
        if isinstance(item, bytes):
            assert data == item and attrs["event_id"] == "broken"
            continue
        decoded = from_avro(TOPICS[short], data)
        assert decoded == shift_times(item, decoded.event_timestamp() - item.event_timestamp())
        assert attrs == {"ts": rfc3339(decoded.event_timestamp()), "event_id": item.event_id}
    assert report.unparsed == 1


# ------------------------------------------------------------------------------------- CLI
def test_cli_errors_say_what_to_do(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    assert cli_main(["publish", "--input-dir", str(missing), "--rate", "10"]) == 2
    assert "defi-risk generate --out" in capsys.readouterr().err
    tmp_path.joinpath("settlements.v1.jsonl").write_text("{}\n")
    assert cli_main(["publish", "--input-dir", str(tmp_path), "--rate", "10",
                     "--topics", "market.prices.v1"]) == 2  # fmt: skip
    assert "no file for ['market.prices.v1']" in capsys.readouterr().err
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", free_host_port())
    assert cli_main(["publish", "--input-dir", str(tmp_path), "--rate", "10"]) == 2
    assert "defi-risk emulator start" in capsys.readouterr().err
    with pytest.raises(PublishError, match="unknown topics"):
        merged_topic_files(tmp_path, ["alerts.margin.v1"])
