"""The list store as the pipeline reads it: no version, or a version of 0 addresses, stops the
pipeline when it is built instead of screening every transfer clear.

.venv/bin/pytest tests/transforms/compliance/test_store.py -q
"""

from __future__ import annotations

import json
from datetime import date

import apache_beam as beam
import pytest

from runners.commands.sanctions import save_version
from runners.direct import local_pipeline_options
from transforms.compliance.lists import build_version
from transforms.compliance.store import SanctionsStoreError, bundled_versions, check_versions
from transforms.compliance.transform import ReadSanctionsVersions, read_store

VERSIONS = bundled_versions()
# An empty version as a store written before the load refused them would hold it.
EMPTY = build_version([], date(2025, 12, 1), source="lists:empty")


def test_check_versions_passes_real_versions_through():
    assert check_versions(VERSIONS, "st") is VERSIONS


@pytest.mark.parametrize("versions", [[EMPTY], [*VERSIONS, EMPTY], [EMPTY, *VERSIONS]])
def test_check_versions_refuses_any_empty_version(versions):
    with pytest.raises(SanctionsStoreError) as err:
        check_versions(versions, "st")
    message = str(err.value)
    assert "\n" not in message
    assert f"version {EMPTY.version_id} (effective 2025-12-01) holds 0 addresses" in message


def test_check_versions_refuses_no_version():
    with pytest.raises(SanctionsStoreError, match="holds no version"):
        check_versions([], "st")


@pytest.fixture
def empty_current(tmp_path):
    root = tmp_path / "store"
    for v in (*VERSIONS, EMPTY):
        save_version(root, v)
    return root


def test_read_store_raises_on_an_empty_current_version(empty_current):
    index = json.loads((empty_current / "index.json").read_text())
    assert index[-1]["version_id"] == EMPTY.version_id and index[-1]["entries"] == 0
    with pytest.raises(SanctionsStoreError, match="holds 0 addresses"):
        read_store(str(empty_current))


def test_the_pipeline_refuses_to_build_on_an_empty_current_version(empty_current):
    p = beam.Pipeline(options=local_pipeline_options())
    with pytest.raises(SanctionsStoreError, match=EMPTY.version_id):
        _ = p | ReadSanctionsVersions(str(empty_current))


def test_the_pipeline_refuses_to_build_on_a_store_with_no_version(tmp_path):
    (tmp_path / "index.json").write_text("[]\n")
    p = beam.Pipeline(options=local_pipeline_options())
    with pytest.raises(SanctionsStoreError, match="holds no version"):
        _ = p | ReadSanctionsVersions(str(tmp_path))
