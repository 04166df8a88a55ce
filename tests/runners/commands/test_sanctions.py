"""defi-risk sanctions load: versions and change events in a store, on the real OFAC lists.

pytest tests/runners/commands/test_sanctions.py
"""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest

from runners.cli import main
from tests.support.paths import DATA
from transforms.compliance.lists import SanctionsIndex, diff, load_lists
from transforms.compliance.store import BUNDLED_DIR, version_from_dict, version_to_dict

OFAC_DATA = DATA / "ofac-addresses"
OLD = BUNDLED_DIR / "0xB10C-lists-2024-09-27"
NEW = BUNDLED_DIR / "brave-intl-lists-2025-11-19"
TORNADO_USDC = "0x4736dcf1b7a3d580672cce6e7c65cd5cc9cfba9d"


def test_two_loads_record_additions_and_removals_and_a_reload_changes_nothing(tmp_path, capsys):
    store = tmp_path / "st"
    args = ["sanctions", "load", "--store", str(store)]
    assert main([*args, "--lists", str(OLD), "--effective-date", "2024-09-27"]) == 0
    assert main([*args, "--lists", str(NEW), "--effective-date", "2025-11-19"]) == 0
    assert main([*args, "--lists", str(NEW), "--effective-date", "2025-11-19"]) == 0
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("  ")]
    assert "641 added, 0 removed" in out[0]
    assert out[1].endswith(f"194 added, 90 removed -> {store}") and out[2] == out[1]
    index = json.loads((store / "index.json").read_text())
    assert [v["effective_date"] for v in index] == ["2024-09-27", "2025-11-19"]
    changes = [
        json.loads(x) for x in (store / "changes" / f"{index[1]['version_id']}.jsonl").open()
    ]
    removed = {c["address"] for c in changes if c["change"] == "removed"}
    assert TORNADO_USDC in removed and len(changes) == 284  # delisting is a change event


def test_stored_versions_round_trip_and_match_as_loaded(tmp_path):
    version = load_lists(NEW, date(2025, 11, 19))
    again = version_from_dict(json.loads(json.dumps(version_to_dict(version))))
    assert again == version and again.version_id == version.version_id
    old = load_lists(OLD, date(2024, 9, 27))
    assert SanctionsIndex(old).lookup("eip155:1", TORNADO_USDC.upper().replace("0X", "0x"))
    assert SanctionsIndex(again).lookup("eip155:1", TORNADO_USDC) is None


def test_xml_load_takes_its_date_of_issue_and_csv_needs_a_date(tmp_path, capsys):
    xml = OFAC_DATA / "sdn-format-excerpts" / "sdn_advanced_digital_currency_excerpt.xml.gz"
    assert main(["sanctions", "load", "--xml", str(xml), "--store", str(tmp_path)]) == 0
    assert "758 (asset, address) pairs" in capsys.readouterr().out
    sdn = OFAC_DATA / "sdn-format-excerpts" / "sdn_csv_digital_currency_excerpt_2024-05-03.csv.gz"
    assert main(["sanctions", "load", "--csv", str(sdn), "--store", str(tmp_path)]) == 2
    assert "--effective-date is required" in capsys.readouterr().err


# ---------------------------------------------------------------- refusals


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file of the store (temp files included), byte for byte."""
    if not store.exists():
        return {}
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path, capsys):
    """A store holding the 2024 list (641 addresses)."""
    root = tmp_path / "st"
    assert main(["sanctions", "load", "--store", str(root), "--lists", str(OLD)] + DATE_2024) == 0
    capsys.readouterr()
    return root


DATE_2024 = ["--effective-date", "2024-09-27"]
DATE_2025 = ["--effective-date", "2025-11-19"]


def load(store: Path, *args: str) -> int:
    return main(["sanctions", "load", "--store", str(store), *args])


def half_of(src: Path, dst: Path) -> Path:
    """The per-asset lists of ``src`` with every other address dropped."""
    dst.mkdir()
    for path in src.glob("sanctioned_addresses_*.txt"):
        lines = [x for x in path.read_text().splitlines() if x.strip()]
        (dst / path.name).write_text("\n".join(lines[::2]) + "\n")
    return dst


def test_the_diff_is_printed_on_success(store, capsys):
    assert load(store, "--lists", str(NEW), *DATE_2025) == 0
    out = capsys.readouterr().out.splitlines()
    old, new = load_lists(OLD, date(2024, 9, 27)), load_lists(NEW, date(2025, 11, 19))
    events = diff(old, new)
    added = [e.address for e in events if e.change == "added"]
    removed = [e.address for e in events if e.change == "removed"]
    assert out[0].startswith(f"{new.version_id}: ") and f"vs {old.version_id}" in out[0]
    assert out[1] == f"  added: {', '.join(added[:5])} and {len(added) - 5} more"
    assert out[2] == f"  removed: {', '.join(removed[:5])} and {len(removed) - 5} more"


def test_an_empty_lists_directory_is_refused_and_nothing_is_written(tmp_path, store, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(store)
    assert load(store, "--lists", str(empty), *DATE_2025) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "lists:empty: 0 addresses; an empty list would screen every transfer clear"
    ]
    assert "641 removed -> refused, nothing written" in out
    assert snapshot(store) == before
    # into a fresh store: not even the directory is created
    fresh = tmp_path / "fresh"
    assert load(fresh, "--lists", str(empty), *DATE_2025) == 2
    assert not fresh.exists()


def test_a_malformed_csv_row_is_refused_with_its_line(tmp_path, store, capsys):
    sdn = OFAC_DATA / "sdn-format-excerpts" / "sdn_csv_digital_currency_excerpt_2024-05-03.csv.gz"
    lines = gzip.decompress(sdn.read_bytes()).decode().split("\r\n")
    lines[16] = lines[16].split(",", 3)[0] + ',"TRUNCATED'  # line 17: 2 fields, open quote
    broken = tmp_path / "sdn.csv"
    broken.write_text("\r\n".join(lines))
    before = snapshot(store)
    assert load(store, "--csv", str(broken), *DATE_2025) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{broken}:17: ")
    assert snapshot(store) == before


def test_more_than_ten_bad_rows_are_listed_ten_then_counted(tmp_path, store, capsys):
    lists = tmp_path / "lists"
    lists.mkdir()
    bad = lists / "sanctioned_addresses_ETH.txt"
    bad.write_text("".join(f"0x{n:040x}, oops\n" for n in range(14)))
    assert load(store, "--lists", str(lists), *DATE_2025) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [
        f"{bad}:1: '0x{0:040x}, oops' is not an address",
        f"{bad}:2: '0x{1:040x}, oops' is not an address",
    ]
    assert err[10] == "and 4 more unparsable rows"
    assert err[11].startswith("lists:lists: 0 addresses")


def test_a_broken_xml_is_refused_with_its_line(tmp_path, store, capsys):
    xml = tmp_path / "sdn_advanced.xml"
    xml.write_text('<?xml version="1.0"?>\n<Sanctions>\n<Broken attr=>\n</Sanctions>\n')
    before = snapshot(store)
    for dated in ([], DATE_2025):
        assert load(store, "--xml", str(xml), *dated) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith(f"{xml}:3: XML parse error: ")
    assert snapshot(store) == before


def test_a_list_that_lost_half_is_refused_unless_allowed(tmp_path, store, capsys):
    half = half_of(OLD, tmp_path / "half")
    before = snapshot(store)
    assert load(store, "--lists", str(half), *DATE_2025) == 2
    out, err = capsys.readouterr()
    (problem,) = err.splitlines()
    assert "of the 641 addresses of" in problem and "> max shrink 20.0%" in problem
    assert "--allow-shrink" in problem and "-> refused, nothing written" in out
    assert snapshot(store) == before
    # a larger --max-shrink or --allow-shrink accepts it
    assert load(store, "--lists", str(half), *DATE_2025, "--max-shrink", "0.6") == 0
    assert load(store, "--lists", str(half), *DATE_2025, "--allow-shrink") == 0
    index = json.loads((store / "index.json").read_text())
    assert [v["effective_date"] for v in index] == ["2024-09-27", "2025-11-19"]
    assert not [p for p in store.rglob("*.tmp")]  # the atomic writes leave no temp file


def test_bad_options_and_inputs_exit_2_without_a_traceback(tmp_path, store, capsys):
    with pytest.raises(SystemExit) as exit_:
        load(store, "--lists", str(NEW), *DATE_2025, "--max-shrink", "20")
    assert exit_.value.code == 2
    assert "not a fraction between 0 and 1" in capsys.readouterr().err
    assert load(store, "--lists", str(tmp_path / "missing"), *DATE_2025) == 2
    assert "no such lists directory" in capsys.readouterr().err
    assert load(store, "--csv", str(tmp_path / "missing.csv"), *DATE_2025) == 2
    assert "No such file" in capsys.readouterr().err
    assert load(store, "--lists", str(NEW), "--effective-date", "19-11-2025") == 2
    assert "not a YYYY-MM-DD date" in capsys.readouterr().err
