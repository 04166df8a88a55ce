"""The sanctions list store's format and the bundled OFAC snapshots (pure, no Beam).

A store is what ``defi-risk sanctions load`` writes (``runners/commands/sanctions.py``):
``STORE/index.json`` (the versions, oldest first), ``STORE/versions/<version_id>.json`` (one
``ListVersion`` each, in the format of ``version_to_dict``) and ``STORE/changes/<version_id>.jsonl``
(its additions and removals). ``ReadSanctionsVersions`` (``transform.py``) reads it, locally or on
GCS.

Without ``--sanctions_store`` the pipeline screens against the two real list snapshots bundled in
``data/ofac`` beside this module (effective 2024-09-27 and 2025-11-19, see its SOURCE.md): fine for
local runs and replays of those dates, stale for anything live.

``check_versions`` refuses a store with no version or with a version of 0 addresses: screening
against it would clear every transfer, so the pipeline stops instead.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from pathlib import Path

from transforms.compliance.lists import Entry, InvalidListing, ListVersion, load_lists

BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "ofac"
BUNDLED_LISTS = {  # directory -> effective date (the date each snapshot was published)
    "0xB10C-lists-2024-09-27": date(2024, 9, 27),
    "brave-intl-lists-2025-11-19": date(2025, 11, 19),
}


class SanctionsStoreError(ValueError):
    pass


def check_versions(versions: list[ListVersion], store: str) -> list[ListVersion]:
    """``versions`` when the pipeline may screen against them, else a one-line
    ``SanctionsStoreError``: no version, or any version with 0 addresses (in force, it would
    screen every transfer of its period clear)."""
    if not versions:
        raise SanctionsStoreError(
            f"the sanctions list store {store!r} holds no version; "
            "load one with `defi-risk sanctions load`"
        )
    for v in versions:
        if not v.entries:
            raise SanctionsStoreError(
                f"the sanctions list store {store!r}: version {v.version_id} (effective "
                f"{v.effective_date}) holds 0 addresses and would screen every transfer clear; "
                "remove it from index.json and reload the list"
            )
    return versions


def bundled_versions() -> list[ListVersion]:
    versions = [load_lists(BUNDLED_DIR / d, eff) for d, eff in BUNDLED_LISTS.items()]
    return check_versions(versions, str(BUNDLED_DIR))


def version_to_dict(v: ListVersion) -> dict:
    return {
        "version_id": v.version_id,
        "effective_date": v.effective_date.isoformat(),
        "source": v.source,
        "entries": [
            {
                "key": e.key,
                "kind": e.kind,
                "assets": sorted(e.assets),
                "published": sorted(e.published),
                "entities": sorted([list(x) for x in e.entities]),
                "format_ok": e.format_ok,
            }
            for e in sorted(v.entries, key=lambda e: e.key)
        ],
        "invalid": [asdict(i) for i in v.invalid],
    }


def version_from_dict(d: dict) -> ListVersion:
    entries = frozenset(
        Entry(
            e["key"],
            e["kind"],
            frozenset(e["assets"]),
            frozenset(e["published"]),
            frozenset(tuple(x) for x in e["entities"]),
            e["format_ok"],
        )
        for e in d["entries"]
    )
    invalid = tuple(InvalidListing(**i) for i in d["invalid"])
    return ListVersion(
        d["version_id"], date.fromisoformat(d["effective_date"]), d["source"], entries, invalid
    )
