locals {
  # sql/views/risk/recent_portfolio_exposures_mv.sql is BigQuery DDL, the one definition of the view:
  #   -- comments
  #   CREATE MATERIALIZED VIEW risk.recent_portfolio_exposures_mv
  #   [PARTITION BY DATE(col)] [CLUSTER BY a, b] [OPTIONS (...)]
  #   AS SELECT ...
  # The table resource takes the query, the partitioning and the clustering apart. So: drop the
  # `--` comments (replace with a /regex/), keep what follows the `AS` that opens the SELECT (or
  # WITH) after CREATE ... MATERIALIZED VIEW, drop a trailing `;`, and read PARTITION BY DATE(col)
  # and CLUSTER BY from the header (null when the DDL has none).
  recent_portfolio_exposures_ddl = replace(
    file("${path.module}/../../../../sql/views/risk/recent_portfolio_exposures_mv.sql"),
    "/--.*/",
    "",
  )
  recent_portfolio_exposures_header = regex(
    "(?is)CREATE\\s+(?:OR\\s+REPLACE\\s+)?MATERIALIZED\\s+VIEW\\s+(.*?)\\bAS\\s+(?:WITH|SELECT)\\b",
    local.recent_portfolio_exposures_ddl,
  )[0]
  recent_portfolio_exposures_query = trimsuffix(
    trimspace(regex(
      "(?is)CREATE\\s+(?:OR\\s+REPLACE\\s+)?MATERIALIZED\\s+VIEW\\s+.*?\\bAS\\s+((?:WITH|SELECT)\\b.*)$",
      local.recent_portfolio_exposures_ddl,
    )[0]),
    ";",
  )
  recent_portfolio_exposures_partition = try(
    regex("(?i)PARTITION\\s+BY\\s+DATE\\s*\\(\\s*(\\w+)\\s*\\)", local.recent_portfolio_exposures_header)[0],
    null,
  )
  recent_portfolio_exposures_clustering = try(
    [for column in split(",", regex("(?i)CLUSTER\\s+BY\\s+([\\w\\s,]+?)\\s*(?:OPTIONS\\b|$)", local.recent_portfolio_exposures_header)[0]) : trimspace(column)],
    null,
  )
}

resource "google_bigquery_table" "recent_portfolio_exposures_mv" {
  #checkov:skip=CKV_GCP_121:deletion_protection is var.deletion_protection: true by default and always true in envs/prod; only envs/dev may turn it off to be torn down.
  #checkov:skip=CKV_GCP_80:The view inherits the dataset's default encryption, which is CMEK when var.kms_key_name is set.
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.risk.dataset_id
  table_id            = "recent_portfolio_exposures_mv"
  description         = "Per account and UTC hour: margin_health updates, collateral and borrow in USD (sql/views/risk/recent_portfolio_exposures_mv.sql)."
  clustering          = local.recent_portfolio_exposures_clustering
  deletion_protection = var.deletion_protection
  labels              = var.labels

  dynamic "time_partitioning" {
    for_each = local.recent_portfolio_exposures_partition == null ? [] : [local.recent_portfolio_exposures_partition]
    content {
      type  = "DAY"
      field = time_partitioning.value
    }
  }

  materialized_view {
    query               = local.recent_portfolio_exposures_query
    enable_refresh      = true
    refresh_interval_ms = 60000
  }

  # The view reads the base tables: create them first, drop it first.
  depends_on = [google_bigquery_table.table]
}
