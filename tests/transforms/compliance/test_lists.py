"""Sanctions list ingestion on the real OFAC data (lists: transforms/compliance/data/ofac; formats: tests/data/ofac-addresses) (issue 7, part 2).

.venv/bin/pytest tests/transforms/compliance/test_lists.py -q
"""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest

from tests.support.paths import DATA
from transforms.compliance.lists import (
    ListedAddress,
    ListParseError,
    RowError,
    SanctionsIndex,
    build_version,
    diff,
    load_csv,
    load_lists,
    load_xml,
    normalise_address,
    pairs,
    parse_address_lists,
    parse_advanced_xml,
    parse_sdn_csv,
    validate_version,
)
from transforms.compliance.store import BUNDLED_DIR

OFAC_DATA = DATA / "ofac-addresses"
XML = OFAC_DATA / "sdn-format-excerpts" / "sdn_advanced_digital_currency_excerpt.xml.gz"
SDN_CSV = OFAC_DATA / "sdn-format-excerpts" / "sdn_csv_digital_currency_excerpt_2024-05-03.csv.gz"
COMMENTS = OFAC_DATA / "sdn-format-excerpts" / "sdn_comments_csv_watchman_testdata.csv.gz"
LISTS_2025 = BUNDLED_DIR / "brave-intl-lists-2025-11-19"
LISTS_2024 = BUNDLED_DIR / "0xB10C-lists-2024-09-27"

ETHEREUM = "eip155:1"
ARBITRUM = "eip155:42161"
BSC = "eip155:56"
TRON = "tron:mainnet"
BITCOIN = "bip122:000000000019d6689c085ae165831e93"

TORNADO_USDC_POOL = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
USDT_ONLY_EVM = "0x175d44451403edf28469df03a9280c1197adb92c"
MULTI_ASSET_EVM = "0x4f47bc496083c727c5fbe3ce9cdf2b0f6496270c"
VALERIAN_LABS = "0x983a81ca6FB1e441266D2FbcB7D8E530AC2E05A2"


def raw_list(directory: Path, asset: str) -> list[str]:
    text = (directory / f"sanctioned_addresses_{asset}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def raw_address_set(directory: Path) -> set[str]:
    """Independent of the module: every listed string, 0x addresses lower-cased."""
    out = set()
    for path in directory.glob("sanctioned_addresses_*.txt"):
        for line in path.read_text().splitlines():
            a = line.strip()
            if a:
                out.add(a.lower() if a.startswith("0x") else a)
    return out


@pytest.fixture(scope="module")
def xml_parsed():
    return parse_advanced_xml(XML)


@pytest.fixture(scope="module")
def v2025():
    return load_xml(XML)


@pytest.fixture(scope="module")
def v2024():
    return load_lists(LISTS_2024, date(2024, 9, 27))


@pytest.fixture(scope="module")
def v2025_lists():
    return load_lists(LISTS_2025, date(2025, 11, 19))


# ---------------------------------------------------------------- the advanced XML


def test_xml_excerpt_yields_exactly_758_pairs(xml_parsed):
    issued, items = xml_parsed
    assert issued == date(2025, 11, 19)
    assert len(pairs(items)) == 758
    # 761 features: three (asset, address) pairs are filed twice (measured)
    assert len(items) == 761


def test_xml_pairs_equal_the_brave_intl_lists_built_from_the_same_xml(xml_parsed):
    _, items = xml_parsed
    assert pairs(items) == pairs(parse_address_lists(LISTS_2025))


def test_xml_feature_types_resolved_by_text_not_id(xml_parsed, tmp_path):
    # the XML's own reference values, patched: a new id for the ETH type still resolves
    raw = gzip.decompress(XML.read_bytes()).decode()
    patched = raw.replace('FeatureType ID="345"', 'FeatureType ID="99345"').replace(
        'FeatureTypeID="345"', 'FeatureTypeID="99345"'
    )
    assert patched != raw
    path = tmp_path / "patched_sdn.xml"
    path.write_text(patched)
    _, items = parse_advanced_xml(path)
    assert pairs(items) == pairs(xml_parsed[1])
    assert sum(1 for a, _ in pairs(items) if a == "ETH") == 77


def test_xml_carries_the_sdn_entity(v2025):
    entry = v2025.by_key[VALERIAN_LABS.lower()]
    assert entry.assets == {"ETH", "USDT", "USDC"}
    assert VALERIAN_LABS in entry.published
    assert any(eid == "45314" for eid, _ in entry.entities)


# ---------------------------------------------------------------- the legacy CSV pair


def test_csv_with_comments_joins_the_cut_remarks():
    addresses = {a for _, a in pairs(parse_sdn_csv(SDN_CSV, COMMENTS))}
    assert "1GqChmWqGtsaLrGbHfgdrV5Nkvahtjjuxr" in addresses
    assert "1Gq" not in addresses
    assert not any(a.endswith(".") for a in addresses)


def test_csv_alone_leaves_the_fragment_the_join_removes():
    without = {a for _, a in pairs(parse_sdn_csv(SDN_CSV))}
    assert "1Gq" in without
    assert "1GqChmWqGtsaLrGbHfgdrV5Nkvahtjjuxr" not in without


def test_csv_pair_counts_match_source_md():
    # SOURCE.md: 293 pairs from sdn.csv alone, 599 with the comments continuation
    assert len(pairs(parse_sdn_csv(SDN_CSV))) == 293
    assert len(pairs(parse_sdn_csv(SDN_CSV, COMMENTS))) == 599


def test_csv_alone_has_six_fragments_each_a_prefix_of_a_joined_address():
    alone, joined = pairs(parse_sdn_csv(SDN_CSV)), pairs(parse_sdn_csv(SDN_CSV, COMMENTS))
    fragments = alone - joined
    assert len(fragments) == 6  # SOURCE.md: 6 fragments such as 1Gq, 3, 1B64QRxf
    for asset, frag in fragments:
        assert any(a == asset and full.startswith(frag) for a, full in joined)


# ---------------------------------------------------------------- matching


def test_upper_cased_listed_evm_address_hits(v2025):
    index = SanctionsIndex(v2025)
    upper = "0x" + VALERIAN_LABS[2:].upper()
    hit = index.lookup(ETHEREUM, upper)
    assert hit is not None and hit.key == VALERIAN_LABS.lower()
    assert hit.version_id == v2025.version_id
    assert index.lookup(ETHEREUM, VALERIAN_LABS.lower()) is not None


def test_evm_address_listed_only_under_usdt_hits_on_an_eth_transfer(v2025):
    assert USDT_ONLY_EVM in [a.lower() for a in raw_list(LISTS_2025, "USDT")]
    assert USDT_ONLY_EVM not in [a.lower() for a in raw_list(LISTS_2025, "ETH")]
    hit = SanctionsIndex(v2025).lookup(ETHEREUM, USDT_ONLY_EVM)
    assert hit is not None and hit.assets == {"USDT"}


def test_multi_asset_address_hits_on_arbitrum_and_bsc(v2025):
    index = SanctionsIndex(v2025)
    for asset in ("ETH", "ARB", "BSC"):
        assert MULTI_ASSET_EVM in [a.lower() for a in raw_list(LISTS_2025, asset)]
    for chain in (ARBITRUM, BSC):
        hit = index.lookup(chain, MULTI_ASSET_EVM)
        assert hit is not None and hit.assets == {"ETH", "ARB", "BSC"}


def test_one_character_variant_does_not_hit(v2025):
    index = SanctionsIndex(v2025)
    listed = sorted(e.key for e in v2025.entries if e.kind == "evm")
    assert len(listed) == 81  # SOURCE.md: 81 distinct EVM addresses
    for key in listed:
        last = key[-1]
        variant = key[:-1] + ("0" if last != "0" else "1")
        assert index.lookup(ETHEREUM, key) is not None
        assert index.lookup(ETHEREUM, variant) is None
    tron = raw_list(LISTS_2025, "TRX")[0]
    assert index.lookup(TRON, tron[:-1] + ("A" if tron[-1] != "A" else "B")) is None


def test_listed_tron_address_hits_and_its_lower_cased_form_does_not(v2025):
    index = SanctionsIndex(v2025)
    tron = raw_list(LISTS_2025, "TRX")[0]
    assert tron.startswith("T")
    assert index.lookup(TRON, tron) is not None
    assert index.lookup(TRON, tron.lower()) is None
    # a Tron address OFAC filed under XBT still hits on Tron: the address, not the label
    hit = index.lookup(TRON, "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq")
    assert hit is not None and "XBT" in hit.assets


def test_solana_is_case_sensitive(v2025):
    index = SanctionsIndex(v2025)
    sol = raw_list(LISTS_2025, "SOL")[0]
    assert index.lookup("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", sol) is not None
    assert index.lookup("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", sol.swapcase()) is None


def test_bech32_case_insensitive_but_never_mixed_case(v2025):
    index = SanctionsIndex(v2025)
    bc1 = next(a for a in raw_list(LISTS_2025, "XBT") if a.startswith("bc1"))
    assert index.lookup(BITCOIN, bc1) is not None
    assert index.lookup(BITCOIN, bc1.upper()) is not None
    mixed = bc1[:-1] + bc1[-1].upper() if bc1[-1].isalpha() else bc1.upper()[:-1] + bc1[-1]
    assert mixed != mixed.lower() and mixed != mixed.upper()
    assert index.lookup(BITCOIN, mixed) is None
    assert normalise_address(mixed) is None
    # a mixed-case bech32 listing is invalid: recorded, never matched
    v = build_version([ListedAddress("XBT", mixed)], date(2025, 1, 1))
    assert not v.entries and len(v.invalid) == 1
    # base58 Bitcoin stays case-sensitive
    b58 = next(a for a in raw_list(LISTS_2025, "XBT") if a.startswith("1"))
    assert index.lookup(BITCOIN, b58) is not None
    assert index.lookup(BITCOIN, b58.swapcase()) is None


def test_values_failing_format_checks_are_kept_and_flagged(v2025):
    odd = "5be5543ff73456ab9f2d207887e2af87322c651ea1a873c5b25b7ffae456c320"
    entry = v2025.by_key[odd]
    assert entry.assets == {"XMR"} and not entry.format_ok


# ---------------------------------------------------------------- versions and delisting


def test_tornado_usdc_pool_flagged_2024_not_2025(v2024, v2025, v2025_lists):
    assert SanctionsIndex(v2024).lookup(ETHEREUM, TORNADO_USDC_POOL) is not None
    assert SanctionsIndex(v2025).lookup(ETHEREUM, TORNADO_USDC_POOL) is None
    assert SanctionsIndex(v2025_lists).lookup(ETHEREUM, TORNADO_USDC_POOL) is None


def test_change_events_count_the_2025_removals_and_additions(v2024, v2025):
    old, new = raw_address_set(LISTS_2024), raw_address_set(LISTS_2025)
    events = diff(v2024, v2025)
    added = {e.address for e in events if e.change == "added"}
    removed = {e.address for e in events if e.change == "removed"}
    assert added == new - old
    assert removed == old - new
    # measured on the data (and pinned): 194 additions, 90 removals over all assets
    assert (len(added), len(removed)) == (194, 90)
    # SOURCE.md for the ETH list alone: 90 removed and 15 added
    eth_old = {a.lower() for a in raw_list(LISTS_2024, "ETH")}
    eth_new = {a.lower() for a in raw_list(LISTS_2025, "ETH")}
    assert (len(eth_old), len(eth_new)) == (152, 77)
    assert (len(eth_old - eth_new), len(eth_new - eth_old)) == (90, 15)
    assert all(e.old_version_id == v2024.version_id for e in events)
    assert all(e.new_version_id == v2025.version_id for e in events)
    tornado = [e for e in events if e.address == TORNADO_USDC_POOL.lower()]
    assert [(e.change, e.assets) for e in tornado] == [("removed", ("ETH",))]


def test_diff_from_nothing_adds_everything_and_ids_are_stable(v2025):
    events = diff(None, v2025)
    assert len(events) == len(v2025.entries) == 745
    assert {e.change for e in events} == {"added"}
    again = load_xml(XML)
    assert again.version_id == v2025.version_id
    assert [e.event_id for e in diff(None, again)] == [e.event_id for e in events]
    assert diff(v2025, again) == []


def test_xml_and_lists_versions_hold_the_same_entries(v2025, v2025_lists):
    assert v2025.keys == v2025_lists.keys
    assert v2025.pair_count == v2025_lists.pair_count == 758


# ---------------------------------------------------------------- row errors and validation

BTC = "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"


def sdn_row(ent: int, remarks: str) -> str:
    """One legacy sdn.csv row (12 fields), the Remarks quoted."""
    return f'{ent},"NAME {ent}",-0- ,"CYBER2",' + "-0- ," * 7 + f'"{remarks}"'


def test_csv_row_errors_carry_the_line_where_each_row_starts(tmp_path):
    path = tmp_path / "sdn.csv"
    lines = [
        sdn_row(1, f"Digital Currency Address - XBT {BTC}."),  # line 1
        sdn_row(2, "a remark\nover two lines"),  # lines 2-3
        '3,"SHORT",-0- ',  # line 4: 3 fields
        sdn_row(5, "Digital Currency Address - ETH 0xabc,def"),  # line 5: not an address
        sdn_row(6, "alt. Digital Currency Address - XBT ;"),  # line 6: a feature, no address
        'x7,"A",' + "-0- ," * 9 + '"-0-"',  # line 7: ent_num is not a number
        sdn_row(8, 'a "bad" quote'),  # line 8: a stray quote inside a quoted field
    ]
    path.write_text("\r\n".join(lines) + "\r\n")
    errors: list[RowError] = []
    items = parse_sdn_csv(path, errors=errors)
    assert pairs(items) == {("XBT", BTC)}
    assert [e.line for e in errors] == [4, 5, 6, 7, 8]
    assert str(errors[0]) == f"{path}:4: expected 12 fields, got 3"
    assert "not an address" in errors[1].message and "without an address" in errors[2].message
    # not collected: raised, naming file and line
    with pytest.raises(ListParseError, match=f"{path}:4: expected 12 fields"):
        parse_sdn_csv(path)
    with pytest.raises(ListParseError):
        load_csv(path, None, date(2025, 1, 1))


def test_comments_csv_row_errors_name_the_comments_file(tmp_path):
    sdn, comments = tmp_path / "sdn.csv", tmp_path / "sdn_comments.csv"
    sdn.write_text(sdn_row(1, "Digital Currency Address - XBT") + "\n")
    comments.write_text(f'1," {BTC}"\n2\n')  # the Remarks' tail
    errors: list[RowError] = []
    assert pairs(parse_sdn_csv(sdn, comments, errors=errors)) == {("XBT", BTC)}
    assert [str(e) for e in errors] == [f"{comments}:2: expected 2 fields, got 1"]
    # the real excerpts' comments file lacks one cut row's tail: that row is an error
    errors = []
    parse_sdn_csv(SDN_CSV, comments, errors=errors)
    assert [e.line for e in errors if e.file == str(SDN_CSV)] == [33]


def test_the_real_files_have_no_row_errors():
    for comments in (None, COMMENTS):
        errors: list[RowError] = []
        parse_sdn_csv(SDN_CSV, comments, errors=errors)
        assert errors == []
    for directory in (LISTS_2024, LISTS_2025):
        errors = []
        parse_address_lists(directory, errors=errors)
        assert errors == []


def test_xml_parse_error_gives_its_line(tmp_path):
    path = tmp_path / "sdn.xml"
    path.write_text('<?xml version="1.0"?>\n<Sanctions>\n  <DateOfIssue>\n  <oops\n</Sanctions>\n')
    errors: list[RowError] = []
    assert parse_advanced_xml(path, errors=errors) == (None, [])
    assert len(errors) == 1 and errors[0].line == 5
    assert str(errors[0]).startswith(f"{path}:5: XML parse error: ")
    # collected with a date: an empty version and the error; without a date: raised
    errors = []
    assert not load_xml(path, date(2025, 1, 1), errors=errors).entries and len(errors) == 1
    with pytest.raises(ListParseError, match=f"{path}:5: XML parse error"):
        load_xml(path, errors=[])


def test_address_list_lines_that_are_not_addresses_are_row_errors(tmp_path):
    (tmp_path / "sanctioned_addresses_XBT.txt").write_text(f"{BTC}\n\n<html>\n{BTC} extra\n")
    errors: list[RowError] = []
    assert pairs(parse_address_lists(tmp_path, errors=errors)) == {("XBT", BTC)}
    path = tmp_path / "sanctioned_addresses_XBT.txt"
    assert [(e.file, e.line) for e in errors] == [(str(path), 3), (str(path), 4)]
    with pytest.raises(FileNotFoundError, match="no such lists directory"):
        parse_address_lists(tmp_path / "missing")


def test_validate_version_refuses_an_empty_list_even_with_allow_shrink(v2024):
    empty = build_version([], date(2025, 1, 1), source="lists:empty")
    for previous in (None, v2024):
        (problem,) = validate_version(empty, previous, allow_shrink=True)
        assert problem.startswith("lists:empty: 0 addresses")


def test_validate_version_refuses_a_list_that_lost_half_unless_allowed(v2024):
    keys = sorted(v2024.keys)
    half = build_version(
        [ListedAddress("X", k) for k in keys[::2]], date(2025, 1, 1), source="lists:half"
    )
    (problem,) = validate_version(half, v2024)
    assert f"320 of the {len(keys)} addresses of {v2024.version_id} are gone" in problem
    assert "49.9% > max shrink 20.0%" in problem
    assert validate_version(half, v2024, allow_shrink=True) == []
    assert validate_version(half, v2024, max_shrink=0.5) == []
    assert validate_version(half, None) == []  # a first load has nothing to shrink from
    with pytest.raises(ValueError, match="max_shrink"):
        validate_version(half, v2024, max_shrink=20)


def test_validate_version_accepts_the_real_2025_update(v2024, v2025_lists):
    # 90 of 641 addresses delisted (14 %): under the default 20 %
    assert validate_version(v2025_lists, v2024) == []


def test_validate_version_lists_ten_row_errors_then_the_count(v2025_lists):
    errors = [RowError("sdn.csv", n, "expected 12 fields, got 3") for n in range(1, 26)]
    problems = validate_version(v2025_lists, None, row_errors=errors)
    assert problems[:2] == [
        "sdn.csv:1: expected 12 fields, got 3",
        "sdn.csv:2: expected 12 fields, got 3",
    ]
    assert len(problems) == 11 and problems[-1] == "and 15 more unparsable rows"
