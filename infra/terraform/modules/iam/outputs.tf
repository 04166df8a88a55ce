output "worker_email" {
  description = "Email of the worker service account."
  value       = google_service_account.worker.email
}

output "worker_member" {
  description = "The worker as an IAM member (serviceAccount:...)."
  value       = local.worker
}
