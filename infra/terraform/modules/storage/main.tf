# Four buckets, so that IAM can be granted per bucket (modules/iam) and lifecycles do not mix:
#   hot        raw event archive and exports; COLDLINE/ARCHIVE after 90 days, deleted after 7 years
#   backfill   Parquet/Avro inputs and outputs of backfill runs; short-lived
#   dataflow   Dataflow temp/ and staging/, and the flex template specs under templates/
#   reference  the sanctions list store (`defi-risk sanctions load --store gs://...`), read by the
#              streaming job every few minutes: kept STANDARD, never auto-deleted

resource "google_storage_bucket" "hot" {
  #checkov:skip=CKV_GCP_62:Object access is recorded by Cloud Audit Logs (google_project_iam_audit_config below), Google's recommended replacement for usage logs.
  project                     = var.project_id
  name                        = "${var.name_prefix}-hot"
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age                   = var.cold_after_days # 90 days
      matches_storage_class = ["STANDARD"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = var.cold_storage_class
    }
  }

  lifecycle_rule {
    condition {
      age = var.retention_days # 2555 days = 7 years
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

resource "google_storage_bucket" "backfill" {
  #checkov:skip=CKV_GCP_62:Object access is recorded by Cloud Audit Logs (google_project_iam_audit_config below), Google's recommended replacement for usage logs.
  project                     = var.project_id
  name                        = "${var.name_prefix}-backfill"
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = var.backfill_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

resource "google_storage_bucket" "dataflow" {
  #checkov:skip=CKV_GCP_62:Object access is recorded by Cloud Audit Logs (google_project_iam_audit_config below), Google's recommended replacement for usage logs.
  project                     = var.project_id
  name                        = "${var.name_prefix}-dataflow"
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age            = var.temp_retention_days
      matches_prefix = ["temp/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

resource "google_storage_bucket" "reference" {
  #checkov:skip=CKV_GCP_62:Object access is recorded by Cloud Audit Logs (google_project_iam_audit_config below), Google's recommended replacement for usage logs.
  project                     = var.project_id
  name                        = "${var.name_prefix}-reference"
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  # Every sanctions list version is evidence for a past screening: keep them all, and keep
  # replaced objects for var.noncurrent_retention_days.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

# Who read or wrote which object: Data Access audit logs for Cloud Storage in this project.
# Authoritative for storage.googleapis.com: turn it off where the organisation manages audit logs.
resource "google_project_iam_audit_config" "storage" {
  count = var.enable_data_access_audit_logs ? 1 : 0

  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }

  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
