"""OFAC digital-currency address lists: parsing, per-chain normalisation, versions and matching.

Pure Python (no Beam). Three sources are read:

- the SDN **advanced XML** (``parse_advanced_xml``): the ``Digital Currency Address - *`` feature
  types are resolved by their text in ``ReferenceValueSets/FeatureTypeValues``, never by id;
- the legacy **CSV pair** ``sdn.csv`` + ``sdn_comments.csv`` (``parse_sdn_csv``): the Remarks
  field is cut at 1,000 characters and continues in the comments file, so the two are joined
  (no separator) before the addresses are extracted, and a trailing ``.`` is stripped;
- the simple per-asset lists ``sanctioned_addresses_<ASSET>.txt`` (``parse_address_lists``).

Every load becomes a ``ListVersion`` (version id, effective date, frozen set of normalised
entries); ``diff(old, new)`` gives the additions and removals as change events, and
``SanctionsIndex(version).lookup(chain_id, address)`` is the matcher.

Unparsable rows are never skipped silently: each is a ``RowError`` (file, line, what is wrong).
The parsers and loaders append them to ``errors=`` when given, and raise ``ListParseError``
otherwise. ``validate_version(new, previous, ...)`` says why a version must not become current
(row errors, 0 addresses, or more than ``max_shrink`` of the previous version's addresses gone).

Normalisation (``normalise_address``), keyed on the address alone, whatever asset OFAC filed it
under:

- EVM (``0x`` + 40 hex): lower-cased, so EIP-55 and lower-case spellings meet, and one listing
  hits on every EVM chain (an address listed only under USDT hits an ETH transfer on Arbitrum);
- bech32 (``bc1``, ``ltc1``, ``bnb1``, ``tb1``) and CashAddr (``q``/``p`` with or without the
  ``bitcoincash:`` prefix): case-insensitive, but a mixed-case string is invalid and never
  matches;
- everything else (base58 Bitcoin, Tron ``T...``, Solana, XRP, Monero, ...): case-sensitive,
  kept as published. Values that fit no known format are kept and flagged, never dropped.

Files ending in ``.gz`` are read transparently.

Tests: ``.venv/bin/pytest tests/transforms/compliance/test_lists.py -q``
Benchmark: ``.venv/bin/python -m tests.benchmarks.bench_sanctions``
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from schemas.base import deterministic_id

FEATURE_PREFIX = "Digital Currency Address - "

EVM = "evm"
BECH32 = "bech32"
CASHADDR = "cashaddr"
CASE_SENSITIVE = "case_sensitive"

_EVM_RE = re.compile(r"^0[xX][0-9a-fA-F]{40}$")
_BECH32_CHARS = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_RE = re.compile(r"^(bc|tb|bcrt|ltc|tltc|bnb)1[" + _BECH32_CHARS + r"]{6,}$")
_CASHADDR_RE = re.compile(r"^(bitcoincash:)?[qp][" + _BECH32_CHARS + r"]{41}$")
_CSV_ADDRESS_RE = re.compile(r"Digital Currency Address - ([A-Za-z0-9]+)\s+([^\s;]+)")
_CASE_INSENSITIVE_CHAINS = ("eip155:",)
_CASE_SENSITIVE_CHAINS = ("tron:", "solana:")
# Every published address format is alphanumeric (plus the ``bitcoincash:`` prefix).
_ADDRESS_CHARS_RE = re.compile(r"[A-Za-z0-9:]+")
_XML_POSITION_RE = re.compile(r": line \d+, column \d+$")
SDN_FIELDS = 12  # ent_num, SDN_Name, ..., Remarks
COMMENTS_FIELDS = 2  # ent_num, Remarks continuation
REMARKS_CUT = 1000  # sdn.csv cuts Remarks here; sdn_comments.csv holds the rest
DEFAULT_MAX_SHRINK = 0.2
MAX_ROW_ERRORS_SHOWN = 10


# ---------------------------------------------------------------- normalisation


def address_kind(address: str) -> str:
    """The comparison family of an address, from its format alone."""
    if _EVM_RE.match(address):
        return EVM
    low = address.lower()
    if _BECH32_RE.match(low):
        return BECH32
    if _CASHADDR_RE.match(low):
        return CASHADDR
    return CASE_SENSITIVE


def normalise_address(address: str, kind: str | None = None) -> str | None:
    """The comparison key of an address, or None when it can never match (mixed-case bech32)."""
    address = address.strip()
    kind = kind or address_kind(address)
    if kind == EVM:
        return address.lower()
    if kind in (BECH32, CASHADDR):
        if address != address.lower() and address != address.upper():
            return None  # bech32/CashAddr forbid mixed case (BIP-173)
        key = address.lower()
        return key.removeprefix("bitcoincash:")
    return address


# ---------------------------------------------------------------- row errors


@dataclass(frozen=True, slots=True)
class RowError:
    """One unparsable row of a list file: the file, its 1-based line and what is wrong."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def row_error_lines(errors: Iterable[RowError], shown: int = MAX_ROW_ERRORS_SHOWN) -> list[str]:
    """One line per row error, the first ``shown`` of them, then "and N more"."""
    errors = list(errors)
    lines = [str(e) for e in errors[:shown]]
    if len(errors) > shown:
        lines.append(f"and {len(errors) - shown} more unparsable rows")
    return lines


class ListParseError(ValueError):
    """A list file with unparsable rows, raised when the caller does not collect them."""

    def __init__(self, errors: Iterable[RowError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(row_error_lines(self.errors)))


def _report(found: list[RowError], errors: list[RowError] | None) -> None:
    found.sort(key=lambda e: (e.file, e.line))  # CSV read errors are found before shape errors
    if errors is not None:
        errors.extend(found)
    elif found:
        raise ListParseError(found)


# ---------------------------------------------------------------- raw pairs


@dataclass(frozen=True, slots=True)
class ListedAddress:
    """One (asset, address) item as published, with its SDN entity when the source names it."""

    asset: str
    address: str
    entity_id: str | None = None
    entity_name: str | None = None


def _read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as e:  # gzip's own errors do not name the file
        raise ValueError(f"{path}: not a readable gzip file ({e})") from e


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def address_feature_types(root: ET.Element) -> dict[str, str]:
    """FeatureType ID -> asset, for every ``Digital Currency Address - *`` type (by text)."""
    out: dict[str, str] = {}
    for el in root.iter():
        if _local(el.tag) == "FeatureType":
            text = (el.text or "").strip()
            if text.startswith(FEATURE_PREFIX):
                out[el.attrib["ID"]] = text[len(FEATURE_PREFIX) :].strip()
    return out


def _date_of_issue(root: ET.Element) -> date | None:
    for el in root:
        if _local(el.tag) == "DateOfIssue":
            parts = {_local(c.tag): int((c.text or "0").strip()) for c in el}
            return date(parts["Year"], parts["Month"], parts["Day"])
    return None


def _primary_name(profile: ET.Element) -> str | None:
    for alias in profile.iter():
        if _local(alias.tag) == "Alias" and alias.attrib.get("Primary") == "true":
            parts = [
                (v.text or "").strip()
                for v in alias.iter()
                if _local(v.tag) == "NamePartValue" and v.text
            ]
            if parts:
                return " ".join(parts)
    return None


def parse_advanced_xml(
    path: str | Path, *, errors: list[RowError] | None = None
) -> tuple[date | None, list[ListedAddress]]:
    """(DateOfIssue, every digital-currency address feature) of an SDN advanced XML file.

    A file that is not well-formed XML is one ``RowError`` at the parser's line, and no items.
    """
    try:
        root = ET.fromstring(_read_bytes(path))
    except ET.ParseError as e:
        line, column = e.position
        message = _XML_POSITION_RE.sub("", str(e))
        _report(
            [RowError(str(path), line, f"XML parse error: {message} (column {column})")], errors
        )
        return None, []
    types = address_feature_types(root)
    out: list[ListedAddress] = []
    for party in root.iter():
        if _local(party.tag) != "DistinctParty":
            continue
        entity_id = party.attrib.get("FixedRef")
        for profile in party:
            if _local(profile.tag) != "Profile":
                continue
            name = _primary_name(profile)
            for feature in profile:
                if _local(feature.tag) != "Feature":
                    continue
                asset = types.get(feature.attrib.get("FeatureTypeID", ""))
                if asset is None:
                    continue
                for detail in feature.iter():
                    if _local(detail.tag) == "VersionDetail" and (detail.text or "").strip():
                        out.append(ListedAddress(asset, detail.text.strip(), entity_id, name))
    return _date_of_issue(root), out


def _csv_rows(path: str | Path, found: list[RowError]) -> list[tuple[int, list[str]]]:
    """(line where the row starts, fields) of each non-blank row; unreadable rows go to
    ``found``. Strict, so a stray quote is an error rather than a silently merged field."""
    text = _read_bytes(path).decode("utf-8", errors="replace").rstrip("\x1a")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as e:
            found.append(RowError(str(path), start, f"unreadable CSV row: {e}"))
        else:
            if any(f.strip() for f in row):
                rows.append((start, row))
        start = reader.line_num + 1


def _shape_problem(row: list[str], width: int) -> str | None:
    if len(row) != width:
        return f"expected {width} fields, got {len(row)}"
    if not row[0].strip().isdigit():
        return f"ent_num {row[0].strip()[:40]!r} is not a number"
    return None


def _field(value: str) -> str:
    value = value.strip()
    return "" if value == "-0-" else value


def parse_sdn_csv(
    sdn_csv: str | Path,
    comments_csv: str | Path | None = None,
    *,
    errors: list[RowError] | None = None,
) -> list[ListedAddress]:
    """Addresses in the legacy ``sdn.csv`` Remarks, joined with their ``sdn_comments.csv`` tail.

    Without the comments file the Remarks cut at 1,000 characters leaves address fragments.
    Row errors: a row that is not 12 fields (2 in the comments file) with a numeric ent_num, an
    extracted value that is not an address, or an address feature with no address after it.
    """
    found: list[RowError] = []
    extended: dict[str, str] = {}
    if comments_csv is not None:
        for line, row in _csv_rows(comments_csv, found):
            problem = _shape_problem(row, COMMENTS_FIELDS)
            if problem:
                found.append(RowError(str(comments_csv), line, problem))
                continue
            extended[row[0].strip()] = extended.get(row[0].strip(), "") + row[1]
    out: list[ListedAddress] = []
    for line, row in _csv_rows(sdn_csv, found):
        problem = _shape_problem(row, SDN_FIELDS)
        if problem:
            found.append(RowError(str(sdn_csv), line, problem))
            continue
        ent_num = row[0].strip()
        remarks = (row[11] if _field(row[11]) else "") + extended.get(ent_num, "")
        name = _field(row[1]) or None
        matches = _CSV_ADDRESS_RE.findall(remarks)
        for asset, address in matches:
            address = address.rstrip(".")
            if not _ADDRESS_CHARS_RE.fullmatch(address):
                found.append(
                    RowError(
                        str(sdn_csv), line, f"{asset} value {address[:60]!r} is not an address"
                    )
                )
                continue
            out.append(ListedAddress(asset, address, ent_num, name))
        # A Remarks cut at 1,000 characters with no comments file may end mid-feature: that is
        # the documented fragment case, not a row error.
        cut = comments_csv is None and len(row[11]) >= REMARKS_CUT
        missing = remarks.count(FEATURE_PREFIX) - len(matches)
        if missing > 0 and not cut:
            found.append(
                RowError(str(sdn_csv), line, f"{missing} '{FEATURE_PREFIX}...' without an address")
            )
    _report(found, errors)
    return out


def parse_address_lists(
    directory: str | Path, *, errors: list[RowError] | None = None
) -> list[ListedAddress]:
    """The ``sanctioned_addresses_<ASSET>.txt`` files of a directory (one address a line).

    A missing directory raises ``FileNotFoundError``; a line that is not one alphanumeric value
    (spaces, commas, markup, bytes that are not UTF-8) is a row error.
    """
    if not Path(directory).is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such lists directory", str(directory))
    found: list[RowError] = []
    out: list[ListedAddress] = []
    for path in sorted(Path(directory).glob("sanctioned_addresses_*.txt*")):
        asset = path.name.removeprefix("sanctioned_addresses_").split(".", 1)[0]
        text = _read_bytes(path).decode("utf-8", errors="replace")
        # split("\n"), not splitlines(): line numbers as an editor counts them
        for n, line in enumerate(text.split("\n"), 1):
            value = line.strip()
            if not value:
                continue
            if not _ADDRESS_CHARS_RE.fullmatch(value):
                found.append(RowError(str(path), n, f"{value[:60]!r} is not an address"))
                continue
            out.append(ListedAddress(asset, value))
    _report(found, errors)
    return out


def pairs(items: Iterable[ListedAddress]) -> set[tuple[str, str]]:
    """The distinct (asset, address) pairs, as published."""
    return {(i.asset, i.address) for i in items}


# ---------------------------------------------------------------- versions


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed address after normalisation, with every asset it was filed under."""

    key: str
    kind: str
    assets: frozenset[str]
    published: frozenset[str]
    entities: frozenset[tuple[str, str]] = frozenset()
    format_ok: bool = True


@dataclass(frozen=True, slots=True)
class InvalidListing:
    """A listed value that can never match (a mixed-case bech32 string)."""

    asset: str
    address: str
    reason: str


def _format_ok(kind: str, key: str) -> bool:
    if kind != CASE_SENSITIVE:
        return True
    # base58 (BTC/LTC/Tron/Solana/XRP...) or Monero: alphanumeric, 25-106 characters
    return key.isalnum() and 25 <= len(key) <= 106 and not re.fullmatch(r"[0-9a-f]{64}", key)


@dataclass(frozen=True)
class ListVersion:
    version_id: str
    effective_date: date
    source: str
    entries: frozenset[Entry]
    invalid: tuple[InvalidListing, ...] = ()
    by_key: dict[str, Entry] = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {e.key: e for e in self.entries})

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.by_key)

    @property
    def pair_count(self) -> int:
        return sum(len(e.assets) for e in self.entries)


def build_version(
    items: Iterable[ListedAddress], effective_date: date, source: str = ""
) -> ListVersion:
    """Normalise and group the items by address key. The version id is a hash of the content
    and the date, so the same load always gets the same id."""
    grouped: dict[str, dict] = {}
    invalid: list[InvalidListing] = []
    for item in items:
        kind = address_kind(item.address)
        key = normalise_address(item.address, kind)
        if key is None:
            invalid.append(InvalidListing(item.asset, item.address, "mixed-case bech32"))
            continue
        g = grouped.setdefault(key, {"kind": kind, "assets": set(), "pub": set(), "ent": set()})
        g["assets"].add(item.asset)
        g["pub"].add(item.address)
        if item.entity_id is not None:
            g["ent"].add((item.entity_id, item.entity_name or ""))
    entries = frozenset(
        Entry(
            key,
            g["kind"],
            frozenset(g["assets"]),
            frozenset(g["pub"]),
            frozenset(g["ent"]),
            _format_ok(g["kind"], key),
        )
        for key, g in grouped.items()
    )
    content = sorted((e.key, ",".join(sorted(e.assets))) for e in entries)
    version_id = "ofac-" + effective_date.isoformat() + "-" + deterministic_id(*content)[:12]
    return ListVersion(version_id, effective_date, source, entries, tuple(invalid))


def load_xml(
    path: str | Path,
    effective_date: date | None = None,
    *,
    errors: list[RowError] | None = None,
) -> ListVersion:
    found: list[RowError] = []
    issued, items = parse_advanced_xml(path, errors=found)
    eff = effective_date or issued
    if found and (errors is None or eff is None):
        raise ListParseError(found)  # not collected, or nothing to date a version by
    if eff is None:
        raise ValueError(f"{path}: no DateOfIssue; pass effective_date")
    _report(found, errors)
    return build_version(items, eff, source=f"xml:{Path(path).name}")


def load_csv(
    sdn_csv: str | Path,
    comments_csv: str | Path | None,
    effective_date: date,
    *,
    errors: list[RowError] | None = None,
) -> ListVersion:
    return build_version(
        parse_sdn_csv(sdn_csv, comments_csv, errors=errors),
        effective_date,
        source=f"csv:{Path(sdn_csv).name}",
    )


def load_lists(
    directory: str | Path, effective_date: date, *, errors: list[RowError] | None = None
) -> ListVersion:
    return build_version(
        parse_address_lists(directory, errors=errors),
        effective_date,
        source=f"lists:{Path(directory).name}",
    )


# ---------------------------------------------------------------- validation


def validate_version(
    new: ListVersion,
    previous: ListVersion | None,
    *,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    allow_shrink: bool = False,
    row_errors: Iterable[RowError] = (),
) -> list[str]:
    """Why ``new`` must not become the current list, one line each (empty: it may).

    - any unparsable row (the first ten, then "and N more");
    - 0 addresses, always: an empty list screens every transfer clear (``allow_shrink`` does
      not override it);
    - more than ``max_shrink`` (a fraction) of ``previous``'s addresses absent from ``new``,
      unless ``allow_shrink`` (a real mass delisting).
    """
    if not 0 <= max_shrink <= 1:
        raise ValueError(f"max_shrink must be a fraction in [0, 1], got {max_shrink}")
    problems = row_error_lines(row_errors)
    name = new.source or new.version_id
    if not new.entries:
        problems.append(f"{name}: 0 addresses; an empty list would screen every transfer clear")
    elif previous is not None and previous.entries and not allow_shrink:
        lost = len(previous.keys - new.keys)
        share = lost / len(previous.keys)
        if share > max_shrink:
            problems.append(
                f"{name}: {lost} of the {len(previous.keys)} addresses of "
                f"{previous.version_id} are gone ({share:.1%} > max shrink {max_shrink:.1%}); "
                "--allow-shrink accepts a real mass delisting"
            )
    return problems


# ---------------------------------------------------------------- change events


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    change: str  # "added" | "removed"
    address: str  # normalised key
    assets: tuple[str, ...]
    old_version_id: str | None
    new_version_id: str
    effective_date: date
    event_id: str


def diff(old: ListVersion | None, new: ListVersion) -> list[ChangeEvent]:
    """Additions and removals from ``old`` to ``new`` (all additions when ``old`` is None),
    sorted by (change, address); event ids are deterministic."""
    old_keys = old.keys if old is not None else frozenset()
    old_id = old.version_id if old is not None else None
    events = []
    for change, keys, source in (
        ("added", new.keys - old_keys, new),
        ("removed", old_keys - new.keys, old),
    ):
        for key in sorted(keys):
            events.append(
                ChangeEvent(
                    change,
                    key,
                    tuple(sorted(source.by_key[key].assets)),
                    old_id,
                    new.version_id,
                    new.effective_date,
                    deterministic_id("sanctions-change", change, key, old_id, new.version_id),
                )
            )
    return events


# ---------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class Hit:
    chain_id: str
    address: str  # as queried
    key: str
    assets: frozenset[str]
    version_id: str
    entry: Entry


class SanctionsIndex:
    """Set lookup over one list version; the chain id only fixes the comparison family."""

    __slots__ = ("version", "_by_key")

    def __init__(self, version: ListVersion) -> None:
        self.version = version
        self._by_key = version.by_key

    def key_for(self, chain_id: str, address: str) -> str | None:
        if chain_id.startswith(_CASE_INSENSITIVE_CHAINS):
            return address.lower() if _EVM_RE.match(address) else None
        if chain_id.startswith(_CASE_SENSITIVE_CHAINS):
            return address
        return normalise_address(address)

    def lookup(self, chain_id: str, address: str) -> Hit | None:
        key = self.key_for(chain_id, address.strip())
        if key is None:
            return None
        entry = self._by_key.get(key)
        if entry is None:
            return None
        return Hit(chain_id, address, key, entry.assets, self.version.version_id, entry)

    def __contains__(self, item: tuple[str, str]) -> bool:
        return self.lookup(*item) is not None


def iter_hits(
    index: SanctionsIndex, queries: Iterable[tuple[str, str]]
) -> Iterator[tuple[tuple[str, str], Hit]]:
    for q in queries:
        hit = index.lookup(*q)
        if hit is not None:
            yield q, hit
