"""The live run's write-ahead journal: a message is on disk before Pub/Sub hears it was received.

``OUT/journal/<topic>.jsonl`` holds one line per message the run pulled: its Pub/Sub message id,
its event time (the ``ts`` attribute, or the publish time) and its body (base64). The local read
(``runners.live.run.local_pull``) writes each pull's new messages here, flushed and fsynced,
before Beam acknowledges them. So:

- an acknowledged message is never lost: a killed run's restart replays the journal through the
  same graph first, which rebuilds every stateful stage (positions, zones, cooldowns, composite
  carries) exactly, and re-derives the outputs still in flight at the kill (the sinks skip rows
  they already hold, by row id);
- a message pulled but not yet journaled was not acknowledged: Pub/Sub redelivers it;
- a redelivery of a journaled message (killed between the journal write and the ack) is
  acknowledged and dropped by its message id, since the journal already holds it.

A line torn by a kill mid-write is cut off when the journal is opened (its message was not
acknowledged either). The journal grows with the run: a restart replays all of it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from runners.io.files import repair_torn_tail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    message_id: str
    ts: str  # RFC 3339 or epoch milliseconds, as Beam's ReadFromPubSub reads the ts attribute
    data: bytes


def read_entries(path: Path, upto: int | None = None) -> list[Entry]:
    """The journal's entries (up to byte ``upto``); a line that does not parse is skipped with a
    warning (its message was never acknowledged)."""
    out: list[Entry] = []
    if not path.exists():
        return out
    with path.open("rb") as f:
        data = f.read() if upto is None else f.read(upto)
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(Entry(row["id"], row["ts"], base64.b64decode(row["data"])))
        except (ValueError, KeyError, TypeError) as err:
            log.warning("%s:%d: unreadable journal line skipped (%s)", path, n, err)
    return out


class Journal:
    """Append-only journal per topic, shared by the read threads of one run."""

    def __init__(self, directory: str | Path, topics: tuple[str, ...]):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.topics = tuple(topics)
        self._lock = threading.Lock()
        self._seen: dict[str, set[str]] = {}
        self._last_ts: dict[str, str] = {}
        self.replay_bytes: dict[str, int] = {}  # what existed at start: the replay's extent
        for topic in topics:
            path = self.path(topic)
            torn = repair_torn_tail(path)
            if torn:
                log.warning("%s: cut a torn last line of %d bytes", path, torn)
            self.replay_bytes[topic] = path.stat().st_size if path.exists() else 0
            entries = read_entries(path)
            self._seen[topic] = {e.message_id for e in entries}
            if entries:
                self._last_ts[topic] = entries[-1].ts

    def path(self, topic: str) -> Path:
        return self.dir / f"{topic}.jsonl"

    def last_ts(self, topic: str) -> str | None:
        """The event time (``ts``) of the topic's last journaled message when the run started:
        None on a first start."""
        return self._last_ts.get(topic)

    def replayed(self) -> dict[str, int]:
        """Messages per topic that a restart replays."""
        return {t: len(ids) for t, ids in self._seen.items()}

    def record(self, topic: str, entries: list[Entry]) -> list[bool]:
        """Appends the entries not yet journaled, durably; returns, per entry, whether it was
        new (False: a redelivery of a journaled message)."""
        with self._lock:
            seen = self._seen.setdefault(topic, set())
            fresh = []
            for e in entries:
                new = e.message_id not in seen
                fresh.append(new)
                if new:
                    seen.add(e.message_id)
            lines = [
                json.dumps(
                    {"id": e.message_id, "ts": e.ts, "data": base64.b64encode(e.data).decode()}
                )
                for e, new in zip(entries, fresh, strict=True)
                if new
            ]
            if lines:
                with self.path(topic).open("a", encoding="utf-8") as f:
                    f.write("".join(line + "\n" for line in lines))
                    f.flush()
                    os.fsync(f.fileno())
            return fresh
