"""defi-risk sanctions load: versions and change events in a store, on the real OFAC lists.

pytest tests/runners/commands/test_sanctions.py
"""

from __future__ import annotations

import json
from datetime import date

from runners.cli import main
from tests.support.paths import DATA
from transforms.compliance.lists import SanctionsIndex, load_lists
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
    out = capsys.readouterr().out.splitlines()
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
