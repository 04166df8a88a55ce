variable "project_id" {
  description = "GCP project of the dev environment."
  type        = string
}

variable "region" {
  description = "Region of the Dataflow job (and default region of the providers)."
  type        = string
  default     = "europe-west1"
}

variable "location" {
  description = "Location of the BigQuery dataset and the buckets; same geography as var.region."
  type        = string
  default     = "europe-west1"
}

variable "container_spec_gcs_path" {
  description = "gs:// path of the flex template spec built from runners/dataflow/job.py (see the README)."
  type        = string
}

variable "pipeline" {
  description = "Which graph the streaming job runs: all, risk, surveillance or compliance."
  type        = string
  default     = "all"
}

variable "sanctions_poll_minutes" {
  description = "Minutes between re-reads of the sanctions store by the streaming job."
  type        = number
  default     = 15
}

variable "max_workers" {
  description = "Autoscaling ceiling of the streaming job."
  type        = number
  default     = 2
}

variable "subnetwork" {
  description = "Subnetwork of the Dataflow workers (private IPs; needs Private Google Access). null: the default network."
  type        = string
  default     = null
}

variable "artifact_registry_repository" {
  description = "Artifact Registry repository of the flex template image, as {location, name}; the worker gets reader on it."
  type = object({
    location = string
    name     = string
  })
  default = null
}

variable "deployers" {
  description = "Members allowed to launch jobs as the worker service account, e.g. the CI service account."
  type        = list(string)
  default     = []
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids for every alert policy."
  type        = list(string)
  default     = []
}

variable "kms_key_name" {
  description = "Cloud KMS key for BigQuery, Pub/Sub, the buckets and the job (CMEK); null: Google-managed keys."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse to destroy BigQuery tables and views from Terraform (prod always has it on)."
  type        = bool
  default     = false
}
