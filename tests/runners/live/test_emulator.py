"""``defi-risk emulator`` (runners/live/emulator.py): names, availability, start/status/stop.

pytest -q tests/runners/live/test_emulator.py              # offline parts; -m pubsub for the real emulator
"""

from __future__ import annotations

import json
import os

import pytest

from runners.cli import main as cli_main
from runners.live.emulator import (
    EmulatorError,
    _group_members,
    answers_ok,
    check_pubsub_target,
    emulator_unavailable_reason,
    free_host_port,
    provision,
    start_emulator,
)
from schemas.registry import ALERT_TOPICS, INPUT_TOPICS
from schemas.topics import (
    MAX_DELIVERY_ATTEMPTS,
    all_topics,
    dead_letter_topic,
    subscription_name,
    subscription_path,
    topic_path,
)


def test_names_of_topics_subscriptions_and_dead_letter_topics():
    assert subscription_name("settlements.v1") == "settlements.v1.sub"
    assert dead_letter_topic("settlements.v1") == "settlements.v1.dead-letter"
    assert subscription_path("p-local", "market.prices.v1") == (
        "projects/p-local/subscriptions/market.prices.v1.sub"
    )
    topics = all_topics()
    assert set(INPUT_TOPICS) | set(ALERT_TOPICS) <= set(topics)
    assert {f"{t}.dead-letter" for t in INPUT_TOPICS} <= set(topics)
    assert len(topics) == len(set(topics)) == 2 * len(INPUT_TOPICS) + len(ALERT_TOPICS)


def test_unavailable_reason_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud, no java
    assert "gcloud is not on PATH" in emulator_unavailable_reason()
    sdk = tmp_path / "sdk"
    (sdk / "bin").mkdir(parents=True)
    gcloud = sdk / "bin" / "gcloud"
    gcloud.write_text("#!/bin/sh\n")
    gcloud.chmod(0o755)
    monkeypatch.setenv("PATH", str(sdk / "bin"))
    reason = emulator_unavailable_reason()
    assert "emulator component is not installed" in reason and "pubsub-emulator" in reason


def test_start_refuses_when_the_emulator_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmulatorError, match="gcloud is not on PATH"):
        start_emulator(free_host_port(), "p-local", tmp_path / "log")


def test_pubsub_target_errors_say_what_to_do(monkeypatch):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args, **kwargs):
        raise DefaultCredentialsError("no credentials")

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(EmulatorError) as err:
        check_pubsub_target()
    text = str(err.value)
    assert "PUBSUB_EMULATOR_HOST is not set" in text and "defi-risk emulator start" in text
    dead = free_host_port()  # nothing listens there
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", dead)
    with pytest.raises(EmulatorError, match=f"nothing answers at http://{dead}/"):
        check_pubsub_target()


def test_status_and_stop_without_a_state_file(tmp_path, capsys):
    state = str(tmp_path / "state")
    assert cli_main(["emulator", "status", "--state-dir", state]) == 1
    assert "not running" in capsys.readouterr().out
    assert cli_main(["emulator", "stop", "--state-dir", state]) == 0
    assert "nothing to stop" in capsys.readouterr().out


@pytest.mark.pubsub
def test_start_provision_status_stop_through_the_cli(tmp_path, capsys, monkeypatch):
    reason = emulator_unavailable_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    state, host = str(tmp_path / "state"), free_host_port()
    start = ["emulator", "start", "--host-port", host, "--project", "defi-risk-cli", "--state-dir"]
    try:
        assert cli_main([*start, state]) == 0
        out = capsys.readouterr().out
        assert f"export PUBSUB_EMULATOR_HOST={host}" in out
        n = len(all_topics())
        assert f"{2 * n} topics/subscriptions created, 0 already there" in out
        recorded = json.loads((tmp_path / "state" / "emulator.json").read_text())
        assert recorded["host"] == host and recorded["project"] == "defi-risk-cli"
        pid = recorded["pid"]
        assert os.getpgid(pid) == pid  # its own process group

        assert cli_main([*start, state]) == 0  # idempotent: the same emulator, nothing created
        assert f"0 topics/subscriptions created, {2 * n} already there" in capsys.readouterr().out

        from google.cloud import pubsub_v1

        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
        subscriber = pubsub_v1.SubscriberClient()
        sub = subscriber.get_subscription(
            subscription=subscription_path("defi-risk-cli", "settlements.v1")
        )
        subscriber.close()
        assert sub.topic == "projects/defi-risk-cli/topics/settlements.v1"
        assert sub.dead_letter_policy.dead_letter_topic == (
            "projects/defi-risk-cli/topics/settlements.v1.dead-letter"
        )

        assert cli_main(["emulator", "status", "--state-dir", state]) == 0
        assert capsys.readouterr().out.startswith(f"running: {host}")
    finally:
        stopped = cli_main(["emulator", "stop", "--state-dir", state])
    assert stopped == 0
    assert ": terminated" in capsys.readouterr().out
    assert not (tmp_path / "state" / "emulator.json").exists()
    assert not answers_ok(host)
    assert _group_members(pid) == []  # the java child is gone too


@pytest.mark.pubsub
def test_a_message_nacked_five_times_goes_to_the_dead_letter_topic(pubsub_emulator, monkeypatch):
    from google.cloud import pubsub_v1

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    project = "defi-risk-dead-letter"
    provision(project, topics=["settlements.v1", "settlements.v1.dead-letter"])
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.publish(topic_path(project, "settlements.v1"), b"poison").result(timeout=30)
    source = subscription_path(project, "settlements.v1")
    attempts = []
    for _ in range(MAX_DELIVERY_ATTEMPTS + 2):
        answer = subscriber.pull(subscription=source, max_messages=10, timeout=3)
        attempts += [m.delivery_attempt for m in answer.received_messages]
        if answer.received_messages:  # nack: deliver again at once
            subscriber.modify_ack_deadline(
                subscription=source,
                ack_ids=[m.ack_id for m in answer.received_messages],
                ack_deadline_seconds=0,
            )
    dead = subscriber.pull(
        subscription=subscription_path(project, "settlements.v1.dead-letter"),
        max_messages=10,
        timeout=5,
    )
    subscriber.close()
    publisher.stop()
    assert attempts == [1, 2, 3, 4, 5]
    assert [m.message.data for m in dead.received_messages] == [b"poison"]
    attrs = dead.received_messages[0].message.attributes
    assert attrs["CloudPubSubDeadLetterSourceSubscription"] == "settlements.v1.sub"
