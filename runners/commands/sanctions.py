"""``defi-risk sanctions load``: parse an OFAC list, store it as a version, record its changes.

    defi-risk sanctions load --xml sdn_advanced.xml [--effective-date 2025-11-19] [--store sanctions]
    defi-risk sanctions load --csv sdn.csv --comments sdn_comments.csv --effective-date 2025-11-19
    defi-risk sanctions load --lists DIR --effective-date 2024-09-27

Each load becomes a ``ListVersion`` (``transforms.compliance.lists``) written to
``STORE/versions/<version_id>.json``; its additions and removals against the latest earlier
version (by effective date) go to ``STORE/changes/<version_id>.jsonl``, one change event a line;
``STORE/index.json`` lists the versions. The version id hashes the content and the date, so
loading the same list twice changes nothing. A delisted address is absent from the new version:
``SanctionsJoin`` reads the version in force and stops hitting it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

from transforms.compliance.lists import ListVersion, diff, load_csv, load_lists, load_xml
from transforms.compliance.store import version_from_dict, version_to_dict


def read_index(store: Path) -> list[dict]:
    path = store / "index.json"
    return json.loads(path.read_text()) if path.exists() else []


def save_version(store: Path, version: ListVersion) -> tuple[list, ListVersion | None]:
    """Writes the version and its change events; returns (events, the previous version)."""
    index = [v for v in read_index(store) if v["version_id"] != version.version_id]
    earlier = [v for v in index if v["effective_date"] <= version.effective_date.isoformat()]
    previous = None
    if earlier:
        latest = max(earlier, key=lambda v: (v["effective_date"], v["version_id"]))
        previous = version_from_dict(
            json.loads((store / "versions" / f"{latest['version_id']}.json").read_text())
        )
    events = diff(previous, version)
    (store / "versions").mkdir(parents=True, exist_ok=True)
    (store / "changes").mkdir(parents=True, exist_ok=True)
    (store / "versions" / f"{version.version_id}.json").write_text(
        json.dumps(version_to_dict(version), indent=1) + "\n"
    )
    with (store / "changes" / f"{version.version_id}.jsonl").open("w") as f:
        for e in events:
            row = asdict(e)
            row["effective_date"] = e.effective_date.isoformat()
            f.write(json.dumps(row, sort_keys=True) + "\n")
    index.append(
        {
            "version_id": version.version_id,
            "effective_date": version.effective_date.isoformat(),
            "source": version.source,
            "entries": len(version.entries),
        }
    )
    index.sort(key=lambda v: (v["effective_date"], v["version_id"]))
    (store / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return events, previous


def load_command(args) -> int:
    eff = date.fromisoformat(args.effective_date) if args.effective_date else None
    if args.xml:
        version = load_xml(args.xml, eff)
    elif eff is None:
        print("--effective-date is required with --csv and --lists", file=sys.stderr)
        return 2
    elif args.csv:
        version = load_csv(args.csv, args.comments, eff)
    else:
        version = load_lists(args.lists, eff)
    events, previous = save_version(Path(args.store), version)
    added = sum(e.change == "added" for e in events)
    print(
        f"{version.version_id}: {len(version.entries)} addresses, {version.pair_count} "
        f"(asset, address) pairs, {len(version.invalid)} invalid listings; "
        f"vs {previous.version_id if previous else 'nothing'}: {added} added, "
        f"{len(events) - added} removed -> {args.store}"
    )
    return 0


def add_sanctions_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ld = sub.add_parser("load", help="Parse an OFAC list into a stored version with its changes.")
    src = ld.add_mutually_exclusive_group(required=True)
    src.add_argument("--xml", help="SDN advanced XML (sdn_advanced.xml, .gz accepted).")
    src.add_argument("--csv", help="Legacy sdn.csv (with --comments sdn_comments.csv).")
    src.add_argument("--lists", help="Directory of sanctioned_addresses_<ASSET>.txt files.")
    ld.add_argument("--comments", help="sdn_comments.csv: continuations of long remarks.")
    ld.add_argument("--effective-date", help="YYYY-MM-DD (default for XML: its DateOfIssue).")
    ld.add_argument("--store", default="sanctions", help="Version store directory (sanctions/).")
    ld.set_defaults(func=load_command)
