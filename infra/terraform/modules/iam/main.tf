# One worker service account for the Dataflow job (launcher VM and workers), least privilege:
# every grant is on the one resource it needs, except the two roles that exist only at project
# level. No primitive role (owner / editor / viewer) anywhere.

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = var.account_id
  display_name = "DeFi risk Dataflow worker"
  description  = "Runs the defi-risk streaming and backfill jobs (modules/iam)."
}

locals {
  worker = "serviceAccount:${google_service_account.worker.email}"
}

# Project level, because Dataflow work items and jobs are project resources.
resource "google_project_iam_member" "dataflow_worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = local.worker
}

# Project level, because bigquery.jobs.create exists only there: the backfill and FILE_LOADS
# writes run load jobs. Which tables a job may touch is still limited by the dataset grant below.
resource "google_project_iam_member" "bigquery_job_user" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = local.worker
}

resource "google_bigquery_dataset_iam_member" "data_editor" {
  project    = var.project_id
  dataset_id = var.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = local.worker
}

resource "google_pubsub_subscription_iam_member" "subscriber" {
  for_each = var.subscription_ids

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.worker
}

# pubsub.subscriptions.get: the job checks its subscriptions exist before it reads them.
resource "google_pubsub_subscription_iam_member" "subscription_viewer" {
  for_each = var.subscription_ids

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.viewer"
  member       = local.worker
}

resource "google_pubsub_topic_iam_member" "alert_publisher" {
  for_each = var.alert_topic_ids

  project = var.project_id
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = local.worker
}

resource "google_storage_bucket_iam_member" "object_admin" {
  for_each = toset(var.read_write_buckets)

  bucket = each.value
  role   = "roles/storage.objectAdmin"
  member = local.worker
}

resource "google_storage_bucket_iam_member" "object_viewer" {
  for_each = toset(var.read_only_buckets)

  bucket = each.value
  role   = "roles/storage.objectViewer"
  member = local.worker
}

resource "google_artifact_registry_repository_iam_member" "image_reader" {
  count = var.artifact_registry_repository == null ? 0 : 1

  project    = var.project_id
  location   = var.artifact_registry_repository.location
  repository = var.artifact_registry_repository.name
  role       = "roles/artifactregistry.reader"
  member     = local.worker
}

# Launching a job as the worker needs iam.serviceAccounts.actAs on this account only.
resource "google_service_account_iam_member" "deployer" {
  for_each = toset(var.deployers)

  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}
