-- Generated from schemas/ (DeadLetterRow) by `defi-risk schemas generate`; do not edit.
CREATE TABLE IF NOT EXISTS risk.dead_letter (
  dead_letter_id STRING NOT NULL OPTIONS(description="Deterministic id: hash of source, stage and payload."),
  source STRING NOT NULL OPTIONS(description="Topic or file the record came from."),
  stage STRING NOT NULL OPTIONS(description="Pipeline step that rejected it, e.g. ParsePrices."),
  error_reason STRING NOT NULL OPTIONS(description="Short reason code, counted by a Beam counter."),
  error STRING NOT NULL OPTIONS(description="The error message."),
  raw_payload STRING NOT NULL OPTIONS(description="The payload as received (UTF-8 text, or base64 when binary)."),
  payload_encoding STRING NOT NULL OPTIONS(description="How raw_payload is encoded."),
  event_time TIMESTAMP OPTIONS(description="Event time, when it could be read."),
  processing_time TIMESTAMP NOT NULL OPTIONS(description="Wall-clock time of the rejection (not event time).")
)
PARTITION BY DATE(processing_time)
CLUSTER BY source, stage, error_reason
OPTIONS(
  description="Every record that failed to parse or validate, with the reason.",
  partition_expiration_days=90
);
