output "hot_bucket" {
  description = "Name of the hot-tier bucket (raw archive; cold after 90 days, deleted after 7 years)."
  value       = google_storage_bucket.hot.name
}

output "backfill_bucket" {
  description = "Name of the backfill bucket."
  value       = google_storage_bucket.backfill.name
}

output "dataflow_bucket" {
  description = "Name of the Dataflow temp / staging / templates bucket."
  value       = google_storage_bucket.dataflow.name
}

output "reference_bucket" {
  description = "Name of the bucket of the sanctions list store."
  value       = google_storage_bucket.reference.name
}

output "temp_location" {
  description = "Dataflow temp location."
  value       = "gs://${google_storage_bucket.dataflow.name}/temp"
}

output "staging_location" {
  description = "Dataflow staging location."
  value       = "gs://${google_storage_bucket.dataflow.name}/staging"
}

output "sanctions_store" {
  description = "The sanctions store the streaming job reads (--sanctions_store)."
  value       = "gs://${google_storage_bucket.reference.name}/sanctions"
}
