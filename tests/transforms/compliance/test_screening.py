"""SanctionsJoin: transfers screened against the list version in force, with versions fed as a
stream (TestStream here; a watched store on Dataflow), so a delisting takes effect on its date.

    pytest tests/transforms/compliance/test_screening.py
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from pydantic import ValidationError

from runners.direct import local_pipeline_options
from schemas.events import Transfer
from tests.support.factories import tron_address
from transforms.common.dead_letter import ALERTS_TAG, DEAD_LETTER_TAG, MAIN_TAG
from transforms.compliance.lists import SanctionsIndex, load_lists
from transforms.compliance.screening import effective_us, screen_transfer
from transforms.compliance.store import BUNDLED_DIR
from transforms.compliance.transform import SanctionsJoin

OLD = load_lists(BUNDLED_DIR / "0xB10C-lists-2024-09-27", date(2024, 9, 27))
NEW = load_lists(BUNDLED_DIR / "brave-intl-lists-2025-11-19", date(2025, 11, 19))
TORNADO_USDC = "0x4736dCf1b7A3d580672CcE6E7c65cd5cc9cFBa9D"  # EIP-55 spelling
ALICE = "0x" + "1" * 40


def transfer(
    i: int, when: datetime, to: str = TORNADO_USDC, chain: str = "eip155:1", frm: str = ALICE
) -> Transfer:
    return Transfer(
        event_id=f"t{i}", chain_id=chain, tx_hash=f"0xtx{i}", block_number=i, log_index=0,
        from_address=frm, to_address=to, asset="USDC", amount_raw="1000000", decimals=6,
        event_time=when,
    )  # fmt: skip


def test_screen_transfer_blocks_the_listed_side_and_clears_the_other():
    rows, alerts = screen_transfer(
        SanctionsIndex(OLD), transfer(1, datetime(2025, 1, 1, tzinfo=UTC))
    )
    assert [(r.screening_result, r.risk_score) for r in rows] == [
        ("clear", 0.0),
        ("blocked", 100.0),
    ]
    assert rows[1].address == TORNADO_USDC.lower() and rows[1].list_version == OLD.version_id
    assert [a.screening_id for a in alerts] == [rows[1].screening_id]
    again, _ = screen_transfer(SanctionsIndex(OLD), transfer(1, datetime(2025, 1, 1, tzinfo=UTC)))
    assert [r.screening_id for r in again] == [r.screening_id for r in rows]  # deterministic


def test_the_list_in_force_applies_and_a_delisting_takes_effect_on_its_date():
    before_new = datetime(2025, 11, 18, 12, tzinfo=UTC)  # the 2024-09 list is in force
    after_new = datetime(2025, 11, 19, 0, 1, tzinfo=UTC)  # the 2025-11 list: delisted
    too_early = datetime(2024, 9, 1, tzinfo=UTC)  # no list in force yet
    V, T = "versions", "transfers"
    stream = TestStream(output_tags={V, T})
    for tag in (V, T):
        stream.advance_watermark_to(datetime(2024, 8, 1, tzinfo=UTC).timestamp(), tag=tag)
    stream.add_elements([TimestampedValue(OLD, Timestamp(micros=effective_us(OLD)))], tag=V)
    stream.add_elements(
        [TimestampedValue(transfer(0, too_early), Timestamp.from_utc_datetime(too_early))], tag=T
    )
    stream.add_elements(
        [TimestampedValue(transfer(1, before_new), Timestamp.from_utc_datetime(before_new))], tag=T
    )
    for tag in (V, T):  # the first list is screened against before the refresh arrives
        stream.advance_watermark_to((before_new + timedelta(hours=1)).timestamp(), tag=tag)
    stream.add_elements([TimestampedValue(NEW, Timestamp(micros=effective_us(NEW)))], tag=V)
    stream.add_elements(
        [TimestampedValue(transfer(2, after_new), Timestamp.from_utc_datetime(after_new))], tag=T
    )
    for tag in (V, T):
        stream.advance_watermark_to((after_new + timedelta(hours=1)).timestamp(), tag=tag)
        stream.advance_watermark_to_infinity(tag=tag)
    with beam.Pipeline(options=local_pipeline_options(streaming=True)) as p:
        src = p | stream
        out = (src[T], src[V]) | SanctionsJoin(shards=2, streaming=True)
        assert_that(
            out[MAIN_TAG]
            | beam.Filter(lambda r: r.address != ALICE)
            | beam.Map(lambda r: (r.tx_hash, r.screening_result, r.list_version)),
            equal_to([("0xtx1", "blocked", OLD.version_id), ("0xtx2", "clear", NEW.version_id)]),
        )
        assert_that(
            out[ALERTS_TAG] | beam.Map(lambda a: a.tx_hash), equal_to(["0xtx1"]), label="Alerts"
        )
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.error_reason, d.event_time)),
            equal_to([("no_sanctions_list", too_early)]),
            label="Dead",
        )


def test_batch_screens_every_address_and_tron_case_matters():
    tron = sorted(e.key for e in OLD.entries if e.key.startswith("T") and e.kind != "evm")[0]
    when = datetime(2025, 1, 1, tzinfo=UTC)
    sender = tron_address(1)
    # Tron is case-sensitive: a case-folded address fails its checksum and never parses
    with pytest.raises(ValidationError, match="Tron address"):
        transfer(2, when, to=tron.lower(), chain="tron:mainnet", frm=sender)
    ts = [transfer(1, when, to=tron, chain="tron:mainnet", frm=sender)]
    with beam.Pipeline(options=local_pipeline_options()) as p:
        out = (
            p
            | "T"
            >> beam.Create([TimestampedValue(t, Timestamp.from_utc_datetime(when)) for t in ts]),
            p | "V" >> beam.Create([OLD]),
        ) | SanctionsJoin(shards=3)
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.tx_hash, r.address == sender, r.screening_result)),
            equal_to([("0xtx1", True, "clear"), ("0xtx1", False, "blocked")]),
        )  # fmt: skip
