locals {
  environment = "prod"
  name_prefix = "${var.project_id}-defi-risk"
  labels = {
    app         = "defi-risk"
    environment = local.environment
    managed-by  = "terraform"
  }
}

module "bigquery" {
  source = "../../modules/bigquery_risk"

  project_id          = var.project_id
  location            = var.location
  deletion_protection = true
  kms_key_name        = var.kms_key_name
  labels              = local.labels
}

module "pubsub" {
  source = "../../modules/pubsub"

  project_id   = var.project_id
  kms_key_name = var.kms_key_name
  labels       = local.labels
}

module "storage" {
  source = "../../modules/storage"

  project_id    = var.project_id
  location      = var.location
  name_prefix   = local.name_prefix
  force_destroy = false
  kms_key_name  = var.kms_key_name
  labels        = local.labels
}

module "iam" {
  source = "../../modules/iam"

  project_id       = var.project_id
  dataset_id       = module.bigquery.dataset_id
  subscription_ids = module.pubsub.input_subscription_ids
  alert_topic_ids  = module.pubsub.alert_topic_ids
  read_write_buckets = [
    module.storage.dataflow_bucket,
    module.storage.backfill_bucket,
  ]
  read_only_buckets = [
    module.storage.hot_bucket,
    module.storage.reference_bucket,
  ]
  artifact_registry_repository = var.artifact_registry_repository
  deployers                    = var.deployers
}

module "dataflow" {
  source = "../../modules/dataflow"

  project_id              = var.project_id
  region                  = var.region
  container_spec_gcs_path = var.container_spec_gcs_path
  service_account_email   = module.iam.worker_email
  temp_location           = module.storage.temp_location
  staging_location        = module.storage.staging_location
  pipeline                = var.pipeline
  subscriptions           = module.pubsub.input_subscription_ids
  bigquery_dataset        = module.bigquery.dataset_id
  sanctions_store         = module.storage.sanctions_store
  sanctions_poll_minutes  = var.sanctions_poll_minutes
  max_workers             = var.max_workers
  subnetwork              = var.subnetwork
  kms_key_name            = var.kms_key_name
  labels                  = local.labels

  # The job writes with CREATE_NEVER and needs its grants before the first worker starts.
  depends_on = [module.iam, module.bigquery]
}

module "monitoring" {
  source = "../../modules/monitoring"

  project_id                = var.project_id
  job_name                  = module.dataflow.job_name
  input_subscriptions       = values(module.pubsub.input_subscription_names)
  dead_letter_subscriptions = values(module.pubsub.dead_letter_subscription_names)
  notification_channels     = var.notification_channels
}
