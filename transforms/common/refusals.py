"""The Beam side of a refusal: count its reason, tag its dead-letter row (``dead_letter.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.common.dead_letter import DEAD_LETTER_TAG, make_dead_letter


def refuse(
    *, source: str, stage: str, reason: str, error: str, raw: Any, event_time: datetime | None
) -> beam.pvalue.TaggedOutput:
    """A dead letter for the ``DEAD_LETTER_TAG`` output, counted as ``dead_letter``
    ``<stage>.<reason>`` (what the run report's books read)."""
    Metrics.counter("dead_letter", f"{stage}.{reason}").inc()
    return beam.pvalue.TaggedOutput(
        DEAD_LETTER_TAG,
        make_dead_letter(
            source=source, stage=stage, reason=reason, error=error, raw=raw, event_time=event_time
        ),
    )
