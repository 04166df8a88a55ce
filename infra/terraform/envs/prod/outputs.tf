output "dataset_id" {
  description = "BigQuery dataset of the risk tables."
  value       = module.bigquery.dataset_id
}

output "worker_service_account" {
  description = "Email of the Dataflow worker service account."
  value       = module.iam.worker_email
}

output "dataflow_job_id" {
  description = "Id of the streaming job."
  value       = module.dataflow.job_id
}

output "buckets" {
  description = "Bucket names by role."
  value = {
    hot       = module.storage.hot_bucket
    backfill  = module.storage.backfill_bucket
    dataflow  = module.storage.dataflow_bucket
    reference = module.storage.reference_bucket
  }
}

output "sanctions_store" {
  description = "Where `defi-risk sanctions load --store` writes for this environment."
  value       = module.storage.sanctions_store
}
