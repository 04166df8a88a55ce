output "job_id" {
  description = "Dataflow job id."
  value       = google_dataflow_flex_template_job.streaming.job_id
}

output "job_name" {
  description = "Dataflow job name (the monitoring filters use it)."
  value       = google_dataflow_flex_template_job.streaming.name
}
