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
    return gzip.decompress(data) if path.suffix == ".gz" else data


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


def parse_advanced_xml(path: str | Path) -> tuple[date | None, list[ListedAddress]]:
    """(DateOfIssue, every digital-currency address feature) of an SDN advanced XML file."""
    root = ET.fromstring(_read_bytes(path))
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


def _csv_rows(path: str | Path) -> list[list[str]]:
    text = _read_bytes(path).decode("utf-8", errors="replace").rstrip("\x1a")
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


def _field(value: str) -> str:
    value = value.strip()
    return "" if value == "-0-" else value


def parse_sdn_csv(
    sdn_csv: str | Path, comments_csv: str | Path | None = None
) -> list[ListedAddress]:
    """Addresses in the legacy ``sdn.csv`` Remarks, joined with their ``sdn_comments.csv`` tail.

    Without the comments file the Remarks cut at 1,000 characters leaves address fragments.
    """
    extended: dict[str, str] = {}
    if comments_csv is not None:
        for row in _csv_rows(comments_csv):
            if len(row) >= 2:
                extended[row[0].strip()] = extended.get(row[0].strip(), "") + row[1]
    out: list[ListedAddress] = []
    for row in _csv_rows(sdn_csv):
        if len(row) < 12:
            continue
        ent_num = row[0].strip()
        remarks = (row[11] if _field(row[11]) else "") + extended.get(ent_num, "")
        name = _field(row[1]) or None
        for asset, address in _CSV_ADDRESS_RE.findall(remarks):
            address = address.rstrip(".")
            if address:
                out.append(ListedAddress(asset, address, ent_num, name))
    return out


def parse_address_lists(directory: str | Path) -> list[ListedAddress]:
    """The ``sanctioned_addresses_<ASSET>.txt`` files of a directory (one address a line)."""
    out: list[ListedAddress] = []
    for path in sorted(Path(directory).glob("sanctioned_addresses_*.txt*")):
        asset = path.name.removeprefix("sanctioned_addresses_").split(".", 1)[0]
        for line in _read_bytes(path).decode().splitlines():
            if line.strip():
                out.append(ListedAddress(asset, line.strip()))
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


def load_xml(path: str | Path, effective_date: date | None = None) -> ListVersion:
    issued, items = parse_advanced_xml(path)
    eff = effective_date or issued
    if eff is None:
        raise ValueError(f"{path}: no DateOfIssue; pass effective_date")
    return build_version(items, eff, source=f"xml:{Path(path).name}")


def load_csv(
    sdn_csv: str | Path, comments_csv: str | Path | None, effective_date: date
) -> ListVersion:
    return build_version(
        parse_sdn_csv(sdn_csv, comments_csv), effective_date, source=f"csv:{Path(sdn_csv).name}"
    )


def load_lists(directory: str | Path, effective_date: date) -> ListVersion:
    return build_version(
        parse_address_lists(directory), effective_date, source=f"lists:{Path(directory).name}"
    )


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
