-- risk.dead_letters_by_reason: rejected records counted per source, pipeline stage and reason,
-- with the first and last processing time of a rejection.
-- Answers "what is failing, where, since when, and is it still happening?" for the on-call
-- engineer and the owners of upstream feeds.
CREATE OR REPLACE VIEW risk.dead_letters_by_reason AS
SELECT
  source,
  stage,
  error_reason,
  COUNT(*) AS n_dead_letters,
  MIN(processing_time) AS first_processing_time,
  MAX(processing_time) AS last_processing_time
FROM risk.dead_letter
GROUP BY source, stage, error_reason
