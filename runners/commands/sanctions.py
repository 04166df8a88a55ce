"""``defi-risk sanctions load``: parse an OFAC list, store it as a version, record its changes.

    defi-risk sanctions load --xml sdn_advanced.xml [--effective-date 2025-11-19] [--store sanctions]
    defi-risk sanctions load --csv sdn.csv --comments sdn_comments.csv --effective-date 2025-11-19
    defi-risk sanctions load --lists DIR --effective-date 2024-09-27
    defi-risk sanctions load ... [--max-shrink 0.2] [--allow-shrink]

Each load becomes a ``ListVersion`` (``transforms.compliance.lists``) written to
``STORE/versions/<version_id>.json``; its additions and removals against the latest earlier
version (by effective date) go to ``STORE/changes/<version_id>.jsonl``, one change event a line;
``STORE/index.json`` lists the versions. The version id hashes the content and the date, so
loading the same list twice changes nothing. A delisted address is absent from the new version:
``SanctionsJoin`` reads the version in force and stops hitting it.

The diff against the previous version is printed first. A list with unparsable rows, 0
addresses, or more than ``--max-shrink`` of the previous version's addresses gone
(``lists.validate_version``; ``--allow-shrink`` accepts the last) is refused: one line per
problem on stderr, exit 2, nothing written. Every file is written to a temporary file and
renamed into place, ``index.json`` last, so a crash never leaves a half version current.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import asdict
from datetime import date
from pathlib import Path

from transforms.compliance.lists import (
    DEFAULT_MAX_SHRINK,
    ChangeEvent,
    ListParseError,
    ListVersion,
    RowError,
    diff,
    load_csv,
    load_lists,
    load_xml,
    row_error_lines,
    validate_version,
)
from transforms.compliance.store import version_from_dict, version_to_dict

PREVIEW = 5  # addresses shown per side of the diff


def read_index(store: Path) -> list[dict]:
    path = store / "index.json"
    return json.loads(path.read_text()) if path.exists() else []


def previous_version(store: Path, version: ListVersion) -> ListVersion | None:
    """The latest stored version effective on or before ``version``'s date (itself excluded)."""
    earlier = [
        v
        for v in read_index(store)
        if v["version_id"] != version.version_id
        and v["effective_date"] <= version.effective_date.isoformat()
    ]
    if not earlier:
        return None
    latest = max(earlier, key=lambda v: (v["effective_date"], v["version_id"]))
    path = store / "versions" / f"{latest['version_id']}.json"
    return version_from_dict(json.loads(path.read_text()))


def write_atomic(path: Path, text: str) -> None:
    """Temp file beside ``path``, then ``os.replace``: readers and crashes see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_version(store: Path, version: ListVersion) -> tuple[list, ListVersion | None]:
    """Writes the version and its change events; returns (events, the previous version).

    ``index.json`` is replaced last: until then the new files are unreferenced.
    """
    previous = previous_version(store, version)
    events = diff(previous, version)
    write_atomic(
        store / "versions" / f"{version.version_id}.json",
        json.dumps(version_to_dict(version), indent=1) + "\n",
    )
    rows = []
    for e in events:
        row = asdict(e)
        row["effective_date"] = e.effective_date.isoformat()
        rows.append(json.dumps(row, sort_keys=True) + "\n")
    write_atomic(store / "changes" / f"{version.version_id}.jsonl", "".join(rows))
    index = [v for v in read_index(store) if v["version_id"] != version.version_id]
    index.append(
        {
            "version_id": version.version_id,
            "effective_date": version.effective_date.isoformat(),
            "source": version.source,
            "entries": len(version.entries),
        }
    )
    index.sort(key=lambda v: (v["effective_date"], v["version_id"]))
    write_atomic(store / "index.json", json.dumps(index, indent=1) + "\n")
    return events, previous


def diff_lines(
    version: ListVersion, previous: ListVersion | None, events: list[ChangeEvent], target: str
) -> list[str]:
    """The summary line, then the first few addresses added and removed."""
    added = [e.address for e in events if e.change == "added"]
    removed = [e.address for e in events if e.change == "removed"]
    lines = [
        f"{version.version_id}: {len(version.entries)} addresses, {version.pair_count} "
        f"(asset, address) pairs, {len(version.invalid)} invalid listings; "
        f"vs {previous.version_id if previous else 'nothing'}: {len(added)} added, "
        f"{len(removed)} removed -> {target}"
    ]
    for change, keys in (("added", added), ("removed", removed)):
        if keys:
            more = f" and {len(keys) - PREVIEW} more" if len(keys) > PREVIEW else ""
            lines.append(f"  {change}: {', '.join(keys[:PREVIEW])}{more}")
    return lines


def _fail(problems: list[str]) -> int:
    for p in problems:
        print(p, file=sys.stderr)
    return 2


def load_command(args) -> int:
    try:
        eff = date.fromisoformat(args.effective_date) if args.effective_date else None
    except ValueError:
        return _fail([f"--effective-date {args.effective_date!r} is not a YYYY-MM-DD date"])
    if eff is None and not args.xml:
        return _fail(["--effective-date is required with --csv and --lists"])
    store = Path(args.store)
    errors: list[RowError] = []
    try:
        if args.xml:
            version = load_xml(args.xml, eff, errors=errors)
        elif args.csv:
            version = load_csv(args.csv, args.comments, eff, errors=errors)
        else:
            version = load_lists(args.lists, eff, errors=errors)
        previous = previous_version(store, version)
    except ListParseError as e:  # an XML too broken to date: nothing to diff
        print(f"{args.xml}: refused, nothing written to {store}")
        return _fail(row_error_lines(e.errors))
    except (OSError, ValueError) as e:  # unreadable input or store: one line, no traceback
        return _fail([str(e)])
    problems = validate_version(
        version,
        previous,
        max_shrink=args.max_shrink,
        allow_shrink=args.allow_shrink,
        row_errors=errors,
    )
    events = diff(previous, version)
    target = f"refused, nothing written to {store}" if problems else str(store)
    print("\n".join(diff_lines(version, previous, events, target)))
    if problems:
        return _fail(problems)
    save_version(store, version)
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1")
    return value


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
    ld.add_argument(
        "--max-shrink",
        type=_fraction,
        default=DEFAULT_MAX_SHRINK,
        metavar="FRACTION",
        help="Refuse a list missing more than this share of the previous version's addresses "
        f"(default {DEFAULT_MAX_SHRINK}).",
    )
    ld.add_argument(
        "--allow-shrink",
        action="store_true",
        help="Accept a list beyond --max-shrink (a real mass delisting); 0 addresses never is.",
    )
    ld.set_defaults(func=load_command)
