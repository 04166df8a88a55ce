resource "google_dataflow_flex_template_job" "streaming" {
  provider = google-beta

  project                 = var.project_id
  region                  = var.region
  name                    = var.job_name
  container_spec_gcs_path = var.container_spec_gcs_path
  service_account_email   = var.service_account_email
  temp_location           = var.temp_location
  staging_location        = var.staging_location
  machine_type            = var.machine_type
  max_workers             = var.max_workers
  subnetwork              = var.subnetwork
  ip_configuration        = "WORKER_IP_PRIVATE"
  kms_key_name            = var.kms_key_name
  enable_streaming_engine = true
  labels                  = var.labels

  # `terraform destroy` (or a replacement) drains: in-flight windows are finished and written.
  on_delete = "drain"
  # Do not block the apply for the minutes a drain takes; the job name is reused only after.
  skip_wait_on_job_termination = true

  # Options of runners.dataflow.job (ProductionOptions) and pipelines.options (RiskPipelineOptions).
  parameters = merge(
    {
      pipeline               = var.pipeline
      pubsub_project         = var.project_id
      bq_project             = var.project_id
      bq_dataset             = var.bigquery_dataset
      payload_format         = "avro" # the topics' schema_settings: Avro, BINARY encoding
      sanctions_store        = var.sanctions_store
      sanctions_poll_minutes = tostring(var.sanctions_poll_minutes)
    },
    var.extra_parameters,
  )

  lifecycle {
    precondition {
      condition = alltrue([
        for topic, subscription in var.subscriptions :
        endswith(subscription, "projects/${var.project_id}/subscriptions/${topic}.sub")
      ])
      error_message = "The job reads projects/<project>/subscriptions/<topic>.sub (schemas.topics.subscription_path); var.subscriptions does not match."
    }
  }
}
