"""DropDuplicates: each message once, every further copy a ``duplicate`` dead letter, in batch and
under a TestStream; in = out + dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from runners.direct import local_pipeline_options
from schemas.events import AccountProfile, Transfer
from transforms.common.dead_letter import DEAD_LETTER_TAG, MAIN_TAG
from transforms.common.dedup import DropDuplicates

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def transfer(event_id: str, usd: str = "10", minutes: int = 0) -> Transfer:
    return Transfer(
        event_id=event_id, tx_hash="0xt", block_number=1, log_index=0,
        from_address="0x" + "a1" * 20, to_address="0x" + "b2" * 20, asset="USDC",
        amount_raw="10", decimals=6, amount_usd=Decimal(usd),
        event_time=T0 + timedelta(minutes=minutes),
    )  # fmt: skip


def stamped(records):
    return [TimestampedValue(r, Timestamp.from_utc_datetime(r.event_timestamp())) for r in records]


def test_batch_keeps_one_copy_and_dead_letters_the_rest():
    records = [transfer("a"), transfer("a"), transfer("a"), transfer("b"), transfer("c", "5")]
    with beam.Pipeline(options=local_pipeline_options()) as p:
        out = p | beam.Create(stamped(records)) | DropDuplicates("transfers.v1")
        assert_that(out[MAIN_TAG] | beam.Map(lambda r: r.event_id), equal_to(["a", "b", "c"]))
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.error_reason, d.stage, d.source)),
            equal_to([("duplicate", "DropDuplicates", "transfers.v1")] * 2),
            label="Dead",
        )


def test_batch_choice_between_disagreeing_copies_does_not_depend_on_order():
    for order in ([transfer("a", "10"), transfer("a", "99")], [transfer("a", "99"), transfer("a", "10")]):  # fmt: skip
        with beam.Pipeline(options=local_pipeline_options()) as p:
            out = p | beam.Create(stamped(order)) | DropDuplicates("transfers.v1")
            assert_that(out[MAIN_TAG] | beam.Map(lambda r: r.amount_usd), equal_to([Decimal("10")]))


def test_profiles_are_duplicates_by_account_and_version_time():
    p1 = AccountProfile(
        account_id="c1", wallets=["0x" + "a1" * 20], tier="t1", country="SG",
        kyc_status="verified", updated_at=T0,
    )  # fmt: skip
    p2 = p1.model_copy(update={"updated_at": T0 + timedelta(days=1)})
    with beam.Pipeline(options=local_pipeline_options()) as p:
        out = p | beam.Create(stamped([p1, p1, p2])) | DropDuplicates("accounts.profiles.v1")
        assert_that(out[MAIN_TAG] | beam.Map(lambda r: r.updated_at), equal_to([T0, p2.updated_at]))


def test_streaming_first_copy_wins_until_the_ttl_expires():
    a, b = transfer("a"), transfer("b", minutes=1)
    late_a = transfer("a", minutes=200)  # same id, after the TTL of 60 minutes
    stream = (
        TestStream()
        .advance_watermark_to(Timestamp.from_utc_datetime(T0))
        .add_elements(stamped([a, a, b]))
        .advance_watermark_to(Timestamp.from_utc_datetime(T0 + timedelta(minutes=30)))
        .add_elements(stamped([b]))
        .advance_watermark_to(Timestamp.from_utc_datetime(T0 + timedelta(minutes=190)))
        .add_elements(stamped([late_a]))
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(options=local_pipeline_options(streaming=True)) as p:
        out = p | stream | DropDuplicates("transfers.v1", streaming=True, ttl_s=3600)
        assert_that(
            out[MAIN_TAG] | beam.Map(lambda r: (r.event_id, r.event_time)),
            equal_to([("a", a.event_time), ("b", b.event_time), ("a", late_a.event_time)]),
        )
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda d: d.error_reason),
            equal_to(["duplicate", "duplicate"]),
            label="Dead",
        )


def test_a_ttl_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        DropDuplicates("transfers.v1", ttl_s=0)
