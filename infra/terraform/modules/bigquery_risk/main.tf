locals {
  # The generated schemas (`defi-risk schemas generate`): read in place, never copied.
  schema_dir = "${path.module}/../../../../schemas/bigquery"

  # One entry per schemas.registry.TABLES model: partitioned by DATE of `event_time_field`,
  # clustered by `key_fields[:4]`, as in sql/ddl/<table>.sql. Only dead_letter expires partitions
  # (schemas.codegen.PARTITION_EXPIRATION_DAYS). tests/infra/test_terraform.py fails when this drifts.
  tables = {
    prices = {
      description               = "Composite price per asset and window: the median of the valid sources."
      partition_field           = "event_time"
      clustering                = ["asset"]
      partition_expiration_days = null
    }
    portfolio_var = {
      description               = "Value at risk and expected shortfall of one account's portfolio."
      partition_field           = "as_of"
      clustering                = ["account_id", "method"]
      partition_expiration_days = null
    }
    var_backtests = {
      description               = "Backtest of a VaR model against realised returns."
      partition_field           = "as_of"
      clustering                = ["subject", "method"]
      partition_expiration_days = null
    }
    margin_health = {
      description               = "Margin health of one account after its settlements of one instant, a zone change or a periodic snapshot."
      partition_field           = "event_ts"
      clustering                = ["account_id"]
      partition_expiration_days = null
    }
    margin_events = {
      description               = "Every margin zone transition detected (alerts are throttled; this table is not)."
      partition_field           = "event_ts"
      clustering                = ["account_id", "event_type"]
      partition_expiration_days = null
    }
    suspicious_activities = {
      description               = "A market-abuse finding with its evidence (product spec DDL)."
      partition_field           = "detected_at"
      clustering                = ["activity_type", "chain_id"]
      partition_expiration_days = null
    }
    compliance_screenings = {
      description               = "One screened address of one transfer against sanctions lists, AML rules and policy (product spec DDL)."
      partition_field           = "screened_at"
      clustering                = ["address", "chain_id"]
      partition_expiration_days = null
    }
    protocol_risk_assessments = {
      description               = "Daily risk assessment of a DeFi protocol (product spec DDL)."
      partition_field           = "assessed_at"
      clustering                = ["protocol_name", "chain_id"]
      partition_expiration_days = null
    }
    smart_contract_vulnerabilities = {
      description               = "A known or detected smart-contract vulnerability (product spec DDL)."
      partition_field           = "detected_at"
      clustering                = ["contract_address", "chain_id"]
      partition_expiration_days = null
    }
    dead_letter = {
      description               = "Every record that failed to parse or validate, with the reason."
      partition_field           = "processing_time"
      clustering                = ["source", "stage", "error_reason"]
      partition_expiration_days = 90
    }
  }
}

resource "google_bigquery_dataset" "risk" {
  #checkov:skip=CKV_GCP_81:CMEK is opt-in through var.kms_key_name (dynamic block below); the default is Google-managed encryption.
  project     = var.project_id
  dataset_id  = var.dataset_id
  location    = var.location
  description = "DeFi risk pipelines: prices, VaR, margin, surveillance, compliance and dead letters."
  labels      = var.labels

  # Access is granted with google_bigquery_dataset_iam_member (modules/iam); no `access` blocks
  # here, or the two would fight over the dataset's ACL.
  delete_contents_on_destroy = false

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }
}

resource "google_bigquery_table" "table" {
  #checkov:skip=CKV_GCP_121:deletion_protection is var.deletion_protection: true by default and always true in envs/prod; only envs/dev may turn it off to be torn down.
  #checkov:skip=CKV_GCP_80:Tables inherit the dataset's default encryption, which is CMEK when var.kms_key_name is set.
  for_each = local.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.risk.dataset_id
  table_id            = each.key
  description         = each.value.description
  schema              = file("${local.schema_dir}/${each.key}.json")
  clustering          = each.value.clustering
  deletion_protection = var.deletion_protection
  labels              = var.labels

  time_partitioning {
    type          = "DAY"
    field         = each.value.partition_field
    expiration_ms = each.value.partition_expiration_days == null ? null : each.value.partition_expiration_days * 24 * 60 * 60 * 1000
  }
}
