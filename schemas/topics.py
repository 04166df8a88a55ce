"""Pub/Sub naming and message conventions: one source of truth for the emulator, the live run,
the production job, the publishers and Terraform (``infra/terraform/modules/pubsub``).

- each topic of ``schemas.registry`` has one subscription, ``<topic>.sub``;
- each input topic has a dead-letter topic, ``<topic>.dead-letter`` (with its own ``.sub``), to
  which the input subscription forwards a message after ``MAX_DELIVERY_ATTEMPTS`` deliveries
  that were not acknowledged;
- every message carries its event time in the ``ts`` attribute (RFC 3339, ``rfc3339``) and its
  id in ``event_id`` (a reader's ``id_label``: redeliveries are dropped by id).
"""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.registry import ALERT_TOPICS, INPUT_TOPICS

SUBSCRIPTION_SUFFIX = ".sub"


DEAD_LETTER_SUFFIX = ".dead-letter"


MAX_DELIVERY_ATTEMPTS = 5


# ----------------------------------------------------------------------------------- names
TIMESTAMP_ATTRIBUTE = "ts"
ID_ATTRIBUTE = "event_id"


def rfc3339(when: datetime) -> str:
    """UTC with a Z, microseconds only when present: what Beam's ``Timestamp.from_rfc3339`` reads."""
    text = when.astimezone(UTC).isoformat(
        timespec="microseconds" if when.microsecond else "seconds"
    )
    return text.replace("+00:00", "Z")


def subscription_name(topic: str) -> str:
    """``settlements.v1`` -> ``settlements.v1.sub``: the one subscription of a topic."""
    return topic + SUBSCRIPTION_SUFFIX


def dead_letter_topic(topic: str) -> str:
    """``settlements.v1`` -> ``settlements.v1.dead-letter``."""
    return topic + DEAD_LETTER_SUFFIX


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, topic: str) -> str:
    """The subscription the live pipeline reads a topic from."""
    return f"projects/{project}/subscriptions/{subscription_name(topic)}"


def all_topics() -> list[str]:
    """Every topic ``start`` creates: input topics, alert topics, then the dead-letter topics."""
    return [*INPUT_TOPICS, *ALERT_TOPICS, *(dead_letter_topic(t) for t in INPUT_TOPICS)]
