"""Where the poller's PriceEvents go (``--publish jsonl:PATH | pubsub:projects/P/topics/T``) and
where the readings it refuses go (``--dead-letter-file``, one ``DeadLetterRow`` JSON a line).

Pub/Sub messages carry the event as schemaless Avro (``schemas.serde.to_avro``; ``--pubsub-format
json`` for JSON) with the attributes ``event_id`` (ReadFromPubSub ``id_label``: the poller may
retry a publish whose ack was lost) and ``ts`` (RFC 3339 publish time, ``timestamp_attribute``).
The client honours ``PUBSUB_EMULATOR_HOST``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from schemas.events import PriceEvent
from schemas.serde import to_avro, to_json
from schemas.topics import rfc3339
from transforms.common.dead_letter import make_dead_letter

log = logging.getLogger(__name__)
DEAD_LETTER_STAGE = "OraclePoller"


class Publisher(Protocol):
    def publish(self, events: Sequence[PriceEvent]) -> list[PriceEvent]:
        """Publish in order; return the events that could not be published (after retries)."""

    def close(self) -> None: ...


class JsonlPublisher:
    """Appends one ``schemas.serde.to_json`` line per event and flushes after each batch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def publish(self, events: Sequence[PriceEvent]) -> list[PriceEvent]:
        for i, event in enumerate(events):
            try:
                self._file.write(to_json(event) + "\n")
                self._file.flush()
            except OSError as err:
                log.error("cannot append to %s: %s", self.path, err)
                return list(events[i:])
        return []

    def close(self) -> None:
        self._file.close()


class PubSubPublisher:
    """``PublisherClient.publish`` per event; waits on every future and retries the failed ones."""

    def __init__(
        self,
        topic: str,
        fmt: str = "avro",
        *,
        client: Any = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if fmt not in ("avro", "json"):
            raise ValueError(f"pubsub format must be avro or json, got {fmt!r}")
        if client is None:
            from google.cloud import pubsub_v1  # imported here: the JSONL sink needs no GCP libs

            client = pubsub_v1.PublisherClient()
        self.client = client
        self.topic = topic
        self.fmt = fmt
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.sleep = sleep

    def encode(self, event: PriceEvent) -> bytes:
        return to_avro(event) if self.fmt == "avro" else to_json(event).encode()

    def publish(self, events: Sequence[PriceEvent]) -> list[PriceEvent]:
        pending = list(events)
        for attempt in range(self.max_retries + 1):
            failed: list[PriceEvent] = []
            futures = []
            for event in pending:
                try:
                    futures.append((event, self._send(event)))
                except Exception as err:  # the client refuses before queueing (e.g. closed)
                    log.warning("publish of %s to %s failed: %s", event.event_id, self.topic, err)
                    failed.append(event)
            for event, future in futures:
                try:
                    future.result(timeout=self.timeout_s)
                except Exception as err:
                    log.warning("publish of %s to %s failed: %s", event.event_id, self.topic, err)
                    failed.append(event)
            if not failed:
                return []
            # keep the poller's order for the retry
            order = {id(e): i for i, e in enumerate(pending)}
            pending = sorted(failed, key=lambda e: order[id(e)])
            if attempt < self.max_retries:
                self.sleep(min(0.2 * 2**attempt, 5.0))
        return pending

    def _send(self, event: PriceEvent):
        return self.client.publish(
            self.topic,
            self.encode(event),
            event_id=event.event_id,
            ts=rfc3339(event.publish_time),
        )

    def close(self) -> None:
        stop = getattr(self.client, "stop", None)
        if stop is not None:
            stop()  # flushes queued batches


def open_publisher(target: str, pubsub_format: str = "avro", timeout_s: float = 30.0) -> Publisher:
    """``jsonl:PATH`` or ``pubsub:projects/P/topics/T``."""
    kind, _, rest = target.partition(":")
    if kind == "jsonl" and rest:
        return JsonlPublisher(rest)
    if kind == "pubsub" and rest.startswith("projects/") and "/topics/" in rest:
        return PubSubPublisher(rest, pubsub_format, timeout_s=timeout_s)
    raise ValueError(
        f"--publish must be jsonl:PATH or pubsub:projects/PROJECT/topics/TOPIC, got {target!r}"
    )


class DeadLetterSink:
    """Readings the poller refuses, as ``DeadLetterRow`` JSON lines (the dead_letters table).

    Without a file they are logged; either way they are counted by reason.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.counts: Counter[str] = Counter()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def write(
        self,
        *,
        source: str,
        reason: str,
        error: str,
        raw: Any,
        observed_at: datetime,
        event_time: datetime | None = None,
    ) -> None:
        self.counts[reason] += 1
        row = make_dead_letter(
            source=f"oracle:{source}",
            stage=DEAD_LETTER_STAGE,
            reason=reason,
            error=error,
            raw=raw,
            event_time=event_time,
            processing_time=observed_at,
        )
        if self._file is None:
            log.warning(
                "dead letter %s %s: %s %s", source, reason, error, json.dumps(raw, default=str)
            )
            return
        self._file.write(to_json(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
