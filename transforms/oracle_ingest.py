"""DecodeOracleUpdates: raw Chainlink rounds or Pyth Hermes updates (JSON lines) -> PriceEvents.

The poller decodes before it publishes; this composite does the same inside a pipeline, for
archives of raw oracle reads (``raw/chainlink_rounds.jsonl``, ``raw/pyth_updates.jsonl``).
Every payload becomes a timestamped PriceEvent or a dead letter with the decoder's reason.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.dead_letter import DEAD_LETTER_TAG, make_dead_letter
from transforms.oracles import (
    OracleDecodeError,
    decode_chainlink_round,
    decode_pyth_update,
    load_registry,
)

DECODERS = {"chainlink": decode_chainlink_round, "pyth": decode_pyth_update}


class DecodeOracleFn(beam.DoFn):
    def __init__(self, kind: str, registry_path: str | None):
        self.kind, self.registry_path = kind, registry_path
        self.stage = f"Decode{kind.capitalize()}"
        self.decoded = Metrics.counter("oracle", f"{self.stage}.out")

    def setup(self):
        self.registry = load_registry(self.registry_path)
        self.decode = DECODERS[self.kind]

    def process(self, raw: bytes):
        try:
            event = self.decode(json.loads(raw), self.registry)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            # OracleDecodeError is a ValueError; json errors are too.
            reason = err.reason if isinstance(err, OracleDecodeError) else "invalid_json"
            Metrics.counter("dead_letter", f"{self.stage}.{reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                make_dead_letter(
                    source=f"oracle.{self.kind}",
                    stage=self.stage,
                    reason=reason,
                    error=str(err)[:2000],
                    raw=raw,
                ),
            )
            return
        self.decoded.inc()
        yield TimestampedValue(event, Timestamp.from_utc_datetime(event.publish_time))


class DecodeOracleUpdates(beam.PTransform):
    """kind: ``chainlink`` or ``pyth``. Outputs ``prices`` and ``dead_letter``."""

    def __init__(self, kind: str, registry_path: str | None = None):
        super().__init__()
        if kind not in DECODERS:
            raise ValueError(f"kind must be one of {sorted(DECODERS)}, got {kind!r}")
        self.kind, self.registry_path = kind, registry_path

    def expand(self, payloads):
        return payloads | "Decode" >> beam.ParDo(
            DecodeOracleFn(self.kind, self.registry_path)
        ).with_outputs(DEAD_LETTER_TAG, main="prices")
