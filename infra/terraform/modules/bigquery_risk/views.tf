locals {
  # The analysts' plain views: every sql/views/<domain>/<name>.sql that is not a materialized view
  # (those are in materialized_views.tf). Each file is BigQuery DDL, the one definition of its view:
  #   -- comments
  #   CREATE OR REPLACE VIEW risk.<name> AS
  #   SELECT ... (or WITH ...)
  # google_bigquery_table wants the query alone. So: drop the `--` comments (replace with a
  # /regex/; before anything else, so a comment that mentions a materialized view or a `risk.x`
  # counts for nothing), leave out the files whose statement is CREATE ... MATERIALIZED VIEW, and
  # keep the name after VIEW and what follows the `AS` that opens the SELECT (or WITH), without a
  # trailing `;`. The key is the file stem; a precondition checks that the DDL creates
  # <dataset>.<stem> (runners/local/warehouse.py refuses any other name too). tests/infra/test_terraform.py
  # re-evaluates this selection and these regexes in Python and parses every query with sqlglot.
  views_dir = "${path.module}/../../../../sql/views"

  view_sql = {
    for f in fileset(local.views_dir, "**/*.sql") :
    f => replace(file("${local.views_dir}/${f}"), "/--.*/", "")
  }

  views = {
    for f, sql in local.view_sql :
    trimsuffix(basename(f), ".sql") => {
      path = f
      name = regex("(?is)CREATE\\s+(?:OR\\s+REPLACE\\s+)?VIEW\\s+([\\w.]+)\\s+AS\\s+((?:WITH|SELECT)\\b.*)$", sql)[0]
      query = trimspace(trimsuffix(trimspace(
        regex("(?is)CREATE\\s+(?:OR\\s+REPLACE\\s+)?VIEW\\s+([\\w.]+)\\s+AS\\s+((?:WITH|SELECT)\\b.*)$", sql)[1]
      ), ";"))
    }
    if length(regexall("(?is)CREATE\\s+(?:OR\\s+REPLACE\\s+)?MATERIALIZED\\s+VIEW\\b", sql)) == 0
  }

  # BigQuery checks a view's query when the view is created, so a view that reads another plain
  # view (open_margin_calls reads latest_margin_health) must be created after it: such views are
  # google_bigquery_table.view_on_view, created after google_bigquery_table.view. A view on a
  # view on a view would need a third resource; the precondition of view_on_view says so.
  view_reads = {
    for name, view in local.views :
    name => toset([for ref in regexall("(?i)\\brisk\\.(\\w+)", view.query) : ref[0]])
  }
  views_on_views = toset([
    for name, reads in local.view_reads : name
    if length(setintersection(reads, toset(keys(local.views)))) > 0
  ])
}

resource "google_bigquery_table" "view" {
  #checkov:skip=CKV_GCP_121:deletion_protection is var.deletion_protection: true by default and always true in envs/prod; only envs/dev may turn it off to be torn down.
  #checkov:skip=CKV_GCP_80:The view inherits the dataset's default encryption, which is CMEK when var.kms_key_name is set.
  for_each = { for name, view in local.views : name => view if !contains(local.views_on_views, name) }

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.risk.dataset_id
  table_id            = each.key
  description         = "Analysts' view ${each.value.name}, defined in sql/views/${each.value.path}."
  deletion_protection = var.deletion_protection
  labels              = var.labels

  view {
    query          = each.value.query
    use_legacy_sql = false
  }

  lifecycle {
    precondition {
      condition     = each.value.name == "${var.dataset_id}.${each.key}"
      error_message = "sql/views/${each.value.path} creates ${each.value.name}; it must create ${var.dataset_id}.${each.key} (view name = file name)."
    }
  }

  # The views read the tables and the materialized view (recent_portfolio_exposures reads
  # recent_portfolio_exposures_mv): create those first, drop the views first.
  depends_on = [google_bigquery_table.table, google_bigquery_table.recent_portfolio_exposures_mv]
}

resource "google_bigquery_table" "view_on_view" {
  #checkov:skip=CKV_GCP_121:deletion_protection is var.deletion_protection: true by default and always true in envs/prod; only envs/dev may turn it off to be torn down.
  #checkov:skip=CKV_GCP_80:The view inherits the dataset's default encryption, which is CMEK when var.kms_key_name is set.
  for_each = { for name, view in local.views : name => view if contains(local.views_on_views, name) }

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.risk.dataset_id
  table_id            = each.key
  description         = "Analysts' view ${each.value.name}, defined in sql/views/${each.value.path}."
  deletion_protection = var.deletion_protection
  labels              = var.labels

  view {
    query          = each.value.query
    use_legacy_sql = false
  }

  lifecycle {
    precondition {
      condition     = each.value.name == "${var.dataset_id}.${each.key}"
      error_message = "sql/views/${each.value.path} creates ${each.value.name}; it must create ${var.dataset_id}.${each.key} (view name = file name)."
    }
    precondition {
      condition     = length(setintersection(local.view_reads[each.key], local.views_on_views)) == 0
      error_message = "sql/views/${each.value.path} reads a view that itself reads a view; views.tf creates only two levels of views."
    }
  }

  # After the views it reads (and, through them, the tables and the materialized view).
  depends_on = [
    google_bigquery_table.table,
    google_bigquery_table.recent_portfolio_exposures_mv,
    google_bigquery_table.view,
  ]
}
