"""Where the sanctions list versions come from: a version store, read once or polled.

    defi-risk sanctions load --lists DIR --effective-date 2024-09-27 --store sanctions
    defi-risk run compliance --input-dir out/demo/data --sanctions_store sanctions

The store is what ``defi-risk sanctions load`` writes (``index.json`` plus ``versions/*.json``), on
a local disk or on GCS (read through Beam's ``FileSystems``). ``ReadSanctionsVersions`` gives the
versions as a PCollection that ``SanctionsJoin`` and the exposure screen apply in event time:

- ``poll_minutes == 0`` (the local default, and batch): the store is read when the pipeline is
  built, and its versions enter through ``Create``.
- ``poll_minutes > 0`` (streaming on Dataflow): a ``PeriodicImpulse`` re-reads the store every N
  minutes and emits every version; ``ScreenShardFn`` keeps a version once, by id. This is the
  "slowly updating side input" of the Beam docs, done as a broadcast stream so that a version
  applies from its effective date in event time, not from when the poll saw it. The
  DirectRunner cannot run ``PeriodicImpulse`` in streaming (BEAM-FACTS), so the tests build this
  branch offline and feed the refresh logic through a TestStream instead.

Without ``--sanctions_store`` the pipeline uses the two real list snapshots bundled in
``pipelines/data/ofac`` (effective 2024-09-27 and 2025-11-19) and logs a warning: they are fine
for local runs and replays of those dates, and stale for anything live.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.sanctions_list import ListVersion, load_lists

LOG = logging.getLogger(__name__)
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "pipelines" / "data" / "ofac"
BUNDLED_LISTS = {  # directory -> effective date (the date each snapshot was published)
    "0xB10C-lists-2024-09-27": date(2024, 9, 27),
    "brave-intl-lists-2025-11-19": date(2025, 11, 19),
}


class SanctionsStoreError(ValueError):
    pass


def bundled_versions() -> list[ListVersion]:
    return [load_lists(BUNDLED_DIR / d, eff) for d, eff in BUNDLED_LISTS.items()]


def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def read_store(store: str) -> list[ListVersion]:
    """Every version in a store (local path or gs://), oldest first; a clear error otherwise."""
    from pipelines.sanctions_store import version_from_dict  # the store's own format

    root = store.rstrip("/")
    index_path = FileSystems.join(root, "index.json")
    if not FileSystems.exists(index_path):
        raise SanctionsStoreError(
            f"no sanctions list store at {store!r} (missing index.json); create one with "
            "`defi-risk sanctions load --xml sdn_advanced.xml --store DIR`"
        )
    index = _read_json(index_path)
    if not index:
        raise SanctionsStoreError(f"the sanctions list store {store!r} holds no version")
    return [
        version_from_dict(_read_json(FileSystems.join(root, "versions", f"{v['version_id']}.json")))
        for v in index
    ]


class ReadStoreFn(beam.DoFn):
    """On each impulse, every version in the store (the screen keeps each version id once)."""

    def __init__(self, store: str):
        self.store = store

    def process(self, _tick):
        try:
            yield from read_store(self.store)
        except (OSError, SanctionsStoreError) as e:
            # Transient (GCS hiccup, a load in progress): keep the versions already applied and
            # retry at the next poll, rather than failing a streaming job.
            beam.metrics.Metrics.counter("compliance", "ReadSanctionsVersions.poll_errors").inc()
            LOG.warning("sanctions store poll failed, keeping the current versions: %s", e)


class ReadSanctionsVersions(beam.PTransform):
    def __init__(self, store: str | None, poll_minutes: float = 0.0):
        super().__init__()
        if poll_minutes < 0:
            raise ValueError(f"poll_minutes must be >= 0, got {poll_minutes}")
        self.store, self.poll_minutes = store, poll_minutes

    def expand(self, pbegin):
        if self.poll_minutes > 0:
            if not self.store:
                raise SanctionsStoreError("--sanctions_poll_minutes needs --sanctions_store")
            from apache_beam.transforms.periodicsequence import PeriodicImpulse

            return (
                pbegin
                | "PollStore" >> PeriodicImpulse(fire_interval=self.poll_minutes * 60)
                | "ReadStore" >> beam.ParDo(ReadStoreFn(self.store))
            )
        if self.store:
            versions = read_store(self.store)
        else:
            versions = bundled_versions()
            LOG.warning(
                "no --sanctions_store: screening against the bundled OFAC list snapshots of %s; "
                "load current lists with `defi-risk sanctions load` for live use",
                ", ".join(str(v.effective_date) for v in versions),
            )
        return pbegin | "ReadStore" >> beam.Create(versions)
